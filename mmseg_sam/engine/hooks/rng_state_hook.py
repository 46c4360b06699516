"""Store the random number generators' states in checkpoints and restore them on resume."""

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmseg.registry import HOOKS
from torch.utils.data import DataLoader

__all__ = ['RNGStateHook', 'capture_rng_states', 'restore_rng_states']

_CHECKPOINT_KEY = 'rng_states'

RNGStates = dict[str, Any]


def capture_rng_states() -> RNGStates:
    """The global RNG states of this process: torch (CPU and current CUDA device), numpy, python.

    Every value is a tensor or a plain python value, so checkpoints holding them load
    with ``torch.load(weights_only=True)`` without any allow-listed class.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: RNGStates = {
        'torch': torch.get_rng_state(),
        'numpy': dict(
            bit_generator=str(kind),
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(gauss),
        ),
        'python': random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: RNGStates) -> None:
    """Set the global RNG states from :func:`capture_rng_states`'s output.

    Raises:
        ValueError: ``states`` lacks one of the generators.
    """
    missing = [k for k in ('torch', 'numpy', 'python') if k not in states]
    if missing:
        raise ValueError(f'RNG states lack {missing} (they hold {sorted(states)})')
    torch.set_rng_state(states['torch'])
    np_state = states['numpy']
    np.random.set_state(
        (
            np_state['bit_generator'],
            np_state['keys'].numpy().astype(np.uint32),
            np_state['pos'],
            np_state['has_gauss'],
            np_state['cached_gaussian'],
        )
    )
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'])


class _RestoreAfter:
    """Iterator proxy: after ``count`` items, call ``on_done`` and put the original iterator back."""

    def __init__(self, loop: Any, iterator: Iterator, count: int, on_done: Callable[[], None]) -> None:
        self._loop, self._iterator, self._count, self._on_done = loop, iterator, count, on_done
        self._seen = 0

    def __iter__(self) -> '_RestoreAfter':
        return self

    def __next__(self) -> Any:
        item = next(self._iterator)
        self._seen += 1
        if self._seen == self._count:
            self._loop.dataloader_iterator = self._iterator
            self._on_done()
        return item


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make ``--resume`` continue with the random streams of the interrupted run.

    MMEngine 0.10.7 restores the model, the optimizer (and AMP loss scaler), the
    parameter schedulers and the message hub on resume, and an ``IterBasedTrainLoop``
    replays the dataloader (and so the sampler) up to the resumed iteration. It does
    not restore the global random generators (torch CPU and CUDA, numpy, python):
    after a resume, dropout masks, Conv-LoRA's noisy gate and random data transforms
    (run in the main process with ``num_workers=0``) draw other numbers than an
    uninterrupted run would. This hook

    - stores every rank's generator states in each checkpoint (``'rng_states'``);
    - on resume restores this rank's states right after the loop's dataloader
      replay (which itself draws random numbers in the transforms), before the first
      new batch is fetched; with an ``EpochBasedTrainLoop`` before training starts;
    - keeps validation from consuming the training streams (states are saved before
      and restored after each validation), so that the training's random numbers do
      not depend on when it is validated, and a resumed run, which does not repeat
      the validation that followed the checkpoint, stays in step;
    - gives the training dataloader a generator of its own (seeded from the run's
      seed and the rank) for the base seed that PyTorch draws each time an iterator
      over it is created: otherwise that draw comes from the main process's torch
      stream once per epoch with ``num_workers=0`` or non-persistent workers, once
      per run with persistent ones, and once more in a resumed epoch-based run, so the
      model's random numbers would depend on the worker settings and on the resume.

    These are the main process's streams. Random transforms in dataloader workers
    (``num_workers > 0``) draw from the workers' streams, which no checkpoint holds.
    An ``IterBasedTrainLoop``'s replay loads the trained batches again through the
    workers in the same order, which brings those streams back to where they were. An
    ``EpochBasedTrainLoop`` resumes with fresh workers: their draws follow the run only
    with a sampler that keys each sample's draws (:class:`~mmseg_sam.datasets.SeededDefaultSampler`,
    :class:`~mmseg_sam.datasets.SeededInfiniteSampler`), and the hook warns on such a
    resume with another sampler. The seeded samplers also make the draws independent
    of the number of workers.

    With a fixed ``randomness.seed`` on CPU, a run killed and resumed ends with the
    same parameters as an uninterrupted one (a resume without a fixed seed is warned
    about: MMEngine builds the dataloader with a new seed before it reads the
    checkpoint's). Loading a checkpoint with ``load_from`` (without resume) leaves the
    generators as seeded. A resume with another number of processes keeps the seeded
    states, with a warning.
    """

    priority = 'LOW'  # after_train_iter runs before CheckpointHook's (VERY_LOW)

    def __init__(self) -> None:
        self._pending: dict | None = None  # loaded from a checkpoint, not yet restored
        self._val_snapshot: RNGStates | None = None  # taken before validation
        self._gathered: list[RNGStates] | None = None  # every rank's states (distributed)
        self._gathered_iter: int | None = None  # runner.iter when they were gathered

    # saving -----------------------------------------------------------------

    def _saves_now(self, runner, by_epoch: bool) -> bool:
        """Whether a CheckpointHook of the runner saves at the end of this iteration / epoch."""
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or hook.interval <= 0 or hook.by_epoch != by_epoch:
                continue
            if by_epoch:
                if hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_epoch(runner)
                ):
                    return True
            elif hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_iter(runner)
            ):
                return True
        return False

    def _gather_if_saving(self, runner, by_epoch: bool) -> None:
        # Only rank 0 writes the checkpoint: every rank hands it its states first.
        if get_world_size() > 1 and self._saves_now(runner, by_epoch):
            self._gathered, self._gathered_iter = all_gather_object(capture_rng_states()), runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        self._gather_if_saving(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_saving(runner, by_epoch=True)

    def before_val(self, runner) -> None:
        self._val_snapshot = capture_rng_states()
        if get_world_size() > 1:  # a best checkpoint may be saved during validation
            self._gathered, self._gathered_iter = all_gather_object(self._val_snapshot), runner.iter

    def after_val(self, runner) -> None:
        if self._val_snapshot is not None:
            restore_rng_states(self._val_snapshot)
            self._val_snapshot = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        world_size = get_world_size()
        if world_size > 1:
            states = self._gathered
            if states is None or len(states) != world_size or self._gathered_iter != runner.iter:
                runner.logger.warning(
                    f'RNGStateHook: no RNG states were gathered at iteration {runner.iter} (a checkpoint saved '
                    "outside CheckpointHook's schedule?); this checkpoint holds none"
                )
                return
        else:  # during validation the training streams are the ones before it
            states = [self._val_snapshot if self._val_snapshot is not None else capture_rng_states()]
        checkpoint[_CHECKPOINT_KEY] = dict(world_size=world_size, states=list(states))

    # resuming ---------------------------------------------------------------

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get(_CHECKPOINT_KEY)
        if saved is None:
            self._pending = None
            return
        self._pending = dict(saved, iter=checkpoint.get('meta', {}).get('iter'))

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        loader = getattr(loop, 'dataloader', None)
        if isinstance(loader, DataLoader) and loader.generator is None:
            # the iterators' base seeds: not from the main process's stream (see the class docstring)
            loader.generator = torch.Generator().manual_seed(int(runner.seed) + get_rank())
        pending, self._pending = self._pending, None
        if pending is None or not loop.iter or pending['iter'] != loop.iter:
            return  # not a resume (load_from, or a checkpoint without RNG states)
        world_size = get_world_size()
        if pending['world_size'] != world_size:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds RNG states of {pending["world_size"]} processes, this '
                f'run has {world_size}; the generators keep their seeded states'
            )
            return
        states = pending['states'][get_rank()]
        cfg = getattr(runner, 'cfg', None)
        if cfg is not None and (cfg.get('randomness') or {}).get('seed') is None:
            runner.logger.warning(
                'RNGStateHook: the config sets no randomness.seed: MMEngine built the training dataloader '
                "with this run's new random seed before it read the checkpoint's, so the resumed run "
                "shuffles (and keys the samples' draws) differently from the interrupted one. Set "
                'randomness=dict(seed=...) for a resume equal to an uninterrupted run'
            )

        def restore() -> None:
            restore_rng_states(states)
            runner.logger.info(
                f"RNGStateHook: restored the RNG states of iteration {loop.iter} (the main process's)"
            )

        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop: after its replay of loop.iter batches
            # the replay loads the trained batches again, through the workers in the same order, so the
            # workers' streams too end where the interrupted run's were
            loop.dataloader_iterator = _RestoreAfter(loop, loop.dataloader_iterator, loop.iter, restore)
            return
        restore()
        if isinstance(loader, DataLoader) and loader.num_workers > 0:
            sampler = getattr(loader.batch_sampler, 'sampler', loader.sampler)
            if not getattr(sampler, 'keys_draws', False):
                runner.logger.warning(
                    f'RNGStateHook: the random transforms run in {loader.num_workers} dataloader workers, which '
                    'start afresh in the resumed epoch (no checkpoint holds their streams), and the sampler '
                    f"{type(sampler).__name__} does not key the samples' draws: the resumed run draws other "
                    'flips, crops and prompts than the interrupted one would have. Use SeededDefaultSampler '
                    '(mmseg_sam.datasets) for a resume equal to an uninterrupted run'
                )
