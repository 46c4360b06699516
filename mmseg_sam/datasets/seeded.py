"""Random draws of a training sample keyed by its place in the run, not by the worker that loads it.

MMEngine seeds each dataloader worker once (its ``worker_init_fn``: worker ``i`` of
rank ``r`` with ``seed + num_workers * r + i``), and every random transform then draws
from that worker's global generators. What a sample draws (a flip, a crop, its prompts,
``GenerateInstances``' choice of ``max_instances``, the index MMEngine refetches when the
pipeline returns None) so depends on which worker loads it and on how many samples that
worker loaded before: another ``num_workers`` gives other draws; a run resumed after a
kill restarts the workers with fresh streams; non-persistent workers are reseeded
alike at every epoch and repeat the previous epoch's draws.

Here the sampler hands the dataset each index as a :class:`DrawKeyedIndex`, an ``int``
carrying a draw key ``(sampler seed, pass, position in the pass)``, and the dataset
(:class:`DrawKeyedDatasetMixin`) seeds numpy's, python's and torch's global generators
from that key for the time it loads the sample, then puts the previous states back. A
sample's draws then depend on the seed, the sample and its position in the run only:
the same with 0 or 8 workers, persistent or not, and after a resume.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmseg.registry import DATA_SAMPLERS

__all__ = [
    'DrawKeyedIndex',
    'DrawKeyedDatasetMixin',
    'SeededDefaultSampler',
    'SeededInfiniteSampler',
    'keyed_global_rngs',
]


class DrawKeyedIndex(int):
    """A dataset index (an ``int``) that carries the key of the sample's random draws.

    Args:
        index: the dataset index.
        draw_key: non-negative ints: ``(sampler seed, pass, position in the pass)``.
    """

    draw_key: tuple[int, ...]

    def __new__(cls, index: int, draw_key: tuple[int, ...]) -> DrawKeyedIndex:
        obj = super().__new__(cls, index)
        obj.draw_key = tuple(int(k) for k in draw_key)
        return obj

    def __reduce__(self) -> tuple[type, tuple[int, tuple[int, ...]]]:
        # int's own protocol would rebuild from the value alone; dataloader workers get indices pickled
        return (DrawKeyedIndex, (int(self), self.draw_key))

    def __repr__(self) -> str:
        return f'DrawKeyedIndex({int(self)}, draw_key={self.draw_key})'


@contextmanager
def keyed_global_rngs(draw_key: tuple[int, ...]) -> Iterator[None]:
    """Seed numpy's, python's and torch's (CPU) global generators from ``draw_key``; restore them on exit.

    The three seeds are words of ``np.random.SeedSequence(draw_key)``. Restoring
    keeps the caller's streams as they were: with ``num_workers=0`` the samples load
    in the main process, whose streams the model draws from.
    """
    saved = np.random.get_state(), random.getstate(), torch.get_rng_state()
    words = np.random.SeedSequence(list(draw_key)).generate_state(4, dtype=np.uint64)
    np.random.seed(words[:2].view(np.uint32))
    random.seed(int(words[2]))
    torch.manual_seed(int(words[3]))
    try:
        yield
    finally:
        np.random.set_state(saved[0])
        random.setstate(saved[1])
        torch.set_rng_state(saved[2])


class DrawKeyedDatasetMixin:
    """A dataset whose sample ``idx`` draws from generators seeded by ``idx.draw_key``.

    Put it before MMEngine's ``BaseDataset`` in the bases. When ``__getitem__`` gets
    a :class:`DrawKeyedIndex` (from :class:`SeededDefaultSampler` or
    :class:`SeededInfiniteSampler`), the whole of MMEngine's ``__getitem__`` (the
    pipeline, and in training the refetches of random other indices while the
    pipeline returns None) runs under :func:`keyed_global_rngs`; a plain ``int``
    loads as before. ``uses_draw_keys`` is the capability the samplers check.
    """

    uses_draw_keys: ClassVar[bool] = True

    def __getitem__(self, idx: int) -> Any:
        draw_key = getattr(idx, 'draw_key', None)
        if draw_key is None:
            return super().__getitem__(idx)  # type: ignore[misc]
        with keyed_global_rngs(draw_key):
            return super().__getitem__(int(idx))  # type: ignore[misc]


class _DrawKeySampler:
    """What both seeded samplers share: the capability RNGStateHook reads, the dataset check."""

    keys_draws: ClassVar[bool] = True  # read by RNGStateHook

    def __init__(self, dataset: Sized, **kwargs: Any) -> None:
        if not getattr(dataset, 'uses_draw_keys', False):
            raise ValueError(
                f'{type(self).__name__} keys the random draws of every sample, but the dataset '
                f'{type(dataset).__name__} does not use the keys (it has no DrawKeyedDatasetMixin in its bases; a '
                'dataset wrapper such as ConcatDataset or RepeatDataset passes plain indices on): derive the '
                'dataset from mmseg_sam.datasets.DrawKeyedDatasetMixin (CheckedSegDataset and its subclasses are) '
                "or use MMEngine's sampler"
            )
        super().__init__(dataset, **kwargs)  # type: ignore[call-arg]


@DATA_SAMPLERS.register_module()
class SeededDefaultSampler(_DrawKeySampler, DefaultSampler):
    """MMEngine's ``DefaultSampler`` (the same indices in the same order) yielding :class:`DrawKeyedIndex`.

    The key of the ``k``-th index of rank ``r`` is ``(seed, epoch, r + k * world_size)``:
    the position in the epoch's list of all ranks' indices, so that it does not depend
    on the number of workers, and the epoch that MMEngine's ``DistSamplerSeedHook``
    (epoch loops) or its iteration loop's restart of the dataloader sets.

    Args:
        dataset: a dataset with :class:`DrawKeyedDatasetMixin` in its bases.
        **kwargs: ``shuffle``, ``seed``, ``round_up`` of ``DefaultSampler``.

    Raises:
        ValueError: ``dataset`` does not use draw keys.
    """

    def __iter__(self) -> Iterator[int]:
        seed, epoch, rank, world_size = self.seed, self.epoch, self.rank, self.world_size
        indices = super().__iter__()
        return (DrawKeyedIndex(i, (seed, epoch, rank + k * world_size)) for k, i in enumerate(indices))


@DATA_SAMPLERS.register_module()
class SeededInfiniteSampler(_DrawKeySampler, InfiniteSampler):
    """MMEngine's ``InfiniteSampler`` (the same indices in the same order) yielding :class:`DrawKeyedIndex`.

    The sampler walks one endless sequence of passes over the dataset (each pass a
    permutation with ``shuffle``), dealt out to the ranks in turn. The key of the index
    at place ``g`` of that sequence is ``(seed, g // len(dataset), g % len(dataset))``.
    A resumed ``IterBasedTrainLoop`` replays the sampler from its start, so the keys
    of the resumed iterations are those of the uninterrupted run.

    Args:
        dataset: a dataset with :class:`DrawKeyedDatasetMixin` in its bases.
        **kwargs: ``shuffle``, ``seed`` of ``InfiniteSampler``.

    Raises:
        ValueError: ``dataset`` does not use draw keys.
    """

    def _indices_of_rank(self) -> Iterator[int]:
        places = itertools.islice(enumerate(self._infinite_indices()), self.rank, None, self.world_size)
        for g, i in places:
            yield DrawKeyedIndex(i, (self.seed, g // self.size, g % self.size))
