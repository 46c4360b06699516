"""Seeded samplers: a training sample's random draws follow its place in the run, not its worker."""

import logging
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mmseg_sam.datasets import (
    BinaryForegroundDataset,
    CheckedSegDataset,
    COCOInstanceSegDataset,
    ConvertedBinaryDataset,
    DrawKeyedDatasetMixin,
    DrawKeyedIndex,
    SeededDefaultSampler,
    SeededInfiniteSampler,
    generate_synthetic_dataset,
)
from mmseg_sam.datasets.seeded import keyed_global_rngs
from mmseg_sam.engine.hooks import RNGStateHook

REPO = Path(__file__).resolve().parents[2]
METAINFO = dict(classes=('background', 'foreground'), palette=[[0, 0, 0], [255, 255, 255]])
# every random step of a prompted training pipeline: flip, the instances kept, jittered boxes, points
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateInstances', min_area=4, max_instances=2, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='shift', max_shift=5, num_pos_points=1),
]


class _Sized:
    uses_draw_keys = True

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _world(monkeypatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda: (rank, world_size))


def test_a_keyed_index_is_its_int_and_pickles_with_its_key():
    index = DrawKeyedIndex(3, (0, 1, 2))
    assert index == 3 and [10, 11, 12, 13][index] == 13 and hash(index) == hash(3)
    copy = pickle.loads(pickle.dumps(index))  # dataloader workers get their indices pickled
    assert type(copy) is DrawKeyedIndex and copy == 3 and copy.draw_key == (0, 1, 2)
    assert 'draw_key=(0, 1, 2)' in repr(index)


def test_default_sampler_keys_position_epoch_and_rank(monkeypatch):
    dataset = _Sized(6)
    sampler = SeededDefaultSampler(dataset, shuffle=True, seed=7)
    plain = DefaultSampler(dataset, shuffle=True, seed=7)
    first = list(sampler)
    assert first == list(plain)  # the same indices in the same order
    assert [i.draw_key for i in first] == [(7, 0, k) for k in range(6)]
    assert [i.draw_key for i in SeededDefaultSampler(dataset, shuffle=True, seed=7)] == [
        i.draw_key for i in first
    ]  # deterministic
    sampler.set_epoch(1)
    plain.set_epoch(1)
    second = list(sampler)
    assert second == list(plain)
    assert [i.draw_key for i in second] == [(7, 1, k) for k in range(6)]

    # two ranks: each index keeps the key it has in the one-process list (its place among all ranks')
    by_rank = {}
    for rank in range(2):
        _world(monkeypatch, rank, 2)
        by_rank[rank] = list(SeededDefaultSampler(dataset, shuffle=True, seed=7))
    assert [i.draw_key[2] for i in by_rank[0]] == [0, 2, 4]
    assert [i.draw_key[2] for i in by_rank[1]] == [1, 3, 5]
    merged = sorted(by_rank[0] + by_rank[1], key=lambda i: i.draw_key)
    assert [(int(i), i.draw_key) for i in merged] == [(int(i), i.draw_key) for i in first]


def test_infinite_sampler_keys_pass_and_position(monkeypatch):
    dataset = _Sized(4)
    keyed = iter(SeededInfiniteSampler(dataset, shuffle=True, seed=3))
    plain = iter(InfiniteSampler(dataset, shuffle=True, seed=3))
    drawn = [next(keyed) for _ in range(10)]
    assert drawn == [next(plain) for _ in range(10)]
    assert [i.draw_key for i in drawn] == [(3, g // 4, g % 4) for g in range(10)]
    assert len({i.draw_key for i in drawn}) == 10
    again = iter(SeededInfiniteSampler(dataset, shuffle=True, seed=3))
    assert [next(again).draw_key for _ in range(10)] == [i.draw_key for i in drawn]
    other_seed = iter(SeededInfiniteSampler(dataset, shuffle=True, seed=4))
    assert next(other_seed).draw_key == (4, 0, 0)

    _world(monkeypatch, 1, 2)
    rank1 = iter(SeededInfiniteSampler(dataset, shuffle=True, seed=3))
    assert [(int(i), i.draw_key) for i in (next(rank1) for _ in range(5))] == [
        (int(i), i.draw_key) for i in drawn[1::2]
    ]


@pytest.mark.parametrize('sampler', [SeededDefaultSampler, SeededInfiniteSampler])
def test_samplers_refuse_a_dataset_that_ignores_the_keys(sampler):
    with pytest.raises(
        ValueError, match=r'keys the random draws of every sample, but the dataset list does not'
    ):
        sampler([1, 2, 3])


def _draws() -> tuple:
    return np.random.rand(2).tolist(), random.random(), torch.rand(2).tolist()


def test_keyed_generators_depend_on_the_key_only_and_restore_the_callers():
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    with keyed_global_rngs((0, 1, 2)):
        first = _draws()
    after = _draws()
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    assert _draws() == after  # the caller's streams are as if nothing had drawn
    np.random.seed(5)
    random.seed(5)
    torch.manual_seed(5)
    with keyed_global_rngs((0, 1, 2)):
        assert _draws() == first  # whatever the state before
    with keyed_global_rngs((0, 1, 3)):
        assert _draws() != first


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> CheckedSegDataset:
    root = tmp_path_factory.mktemp('seeded_data')
    generate_synthetic_dataset(root, num_train=6, num_val=1, img_size=48, mode='binary', seed=0)
    return CheckedSegDataset(
        data_root=str(root),
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        img_suffix='.png',
        seg_map_suffix='.png',
        metainfo=METAINFO,
        pipeline=PIPELINE,
    )


def _keep(batch: list) -> list:
    return batch


def _loader(
    dataset, sampler: str, num_workers: int, persistent: bool = False, shuffle: bool = True
) -> DataLoader:
    """A training dataloader as MMEngine's runner builds it (its worker_init_fn, seed 0)."""
    cfg = dict(
        batch_size=2,
        num_workers=num_workers,
        persistent_workers=persistent,
        sampler=dict(type=sampler, shuffle=shuffle),
        dataset=dataset,
        collate_fn=_keep,
    )
    return Runner.build_dataloader(cfg, seed=0)


def _epoch(loader: DataLoader, epoch: int) -> dict[str, tuple]:
    """Every sample's random draws in one epoch, by image."""
    loader.sampler.set_epoch(epoch)  # as DistSamplerSeedHook does
    draws = {}
    for batch in loader:
        for results in batch:
            draws[Path(results['img_path']).name] = (
                bool(results['flip']),
                results['gt_instance_bboxes'].tolist(),
                results['prompt_boxes'].tolist(),
                results['prompt_points'].tolist(),
            )
    return draws


@pytest.mark.slow  # starts dataloader worker processes
def test_each_epoch_draws_anew_with_non_persistent_workers(dataset):
    keyed = _loader(dataset, 'SeededDefaultSampler', num_workers=2, shuffle=False)
    first, second = _epoch(keyed, 0), _epoch(keyed, 1)
    assert first.keys() == second.keys() and len(first) == 6
    assert all(first[name] != second[name] for name in first)
    # MMEngine's sampler: its worker_init_fn reseeds the new workers alike at every epoch
    plain = _loader(dataset, 'DefaultSampler', num_workers=2, shuffle=False)
    assert _epoch(plain, 0) == _epoch(plain, 1)


@pytest.mark.slow  # starts dataloader worker processes
@pytest.mark.filterwarnings('ignore:This DataLoader will create 3 worker processes')
def test_draws_do_not_depend_on_the_workers(dataset):
    reference = [_epoch(_loader(dataset, 'SeededDefaultSampler', num_workers=0), e) for e in range(2)]
    persistent = _loader(dataset, 'SeededDefaultSampler', num_workers=2, persistent=True)
    assert [_epoch(persistent, e) for e in range(2)] == reference
    assert [_epoch(_loader(dataset, 'SeededDefaultSampler', num_workers=3), e) for e in range(2)] == reference
    # MMEngine's sampler: what a sample draws depends on the worker that loads it
    plain = [_epoch(_loader(dataset, 'DefaultSampler', num_workers=n), 0) for n in (0, 2)]
    assert plain[0] != plain[1]


def test_the_refetched_index_follows_the_key(dataset, monkeypatch):
    """MMEngine loads a random other index while the pipeline returns None: drawn under the key too."""
    original = type(dataset).prepare_data
    monkeypatch.setattr(
        type(dataset), 'prepare_data', lambda self, idx: None if idx == 0 else original(self, idx)
    )
    loaded = []
    for state in range(4):
        np.random.seed(state)  # the loading process's own stream
        loaded.append(Path(dataset[DrawKeyedIndex(0, (0, 0, 0))]['img_path']).name)
    assert len(set(loaded)) == 1
    plain = []
    for state in range(4):
        np.random.seed(state)
        plain.append(Path(dataset[0]['img_path']).name)
    assert len(set(plain)) > 1  # without a key the refetch depends on the process's stream


def _hook_runner(
    loader: DataLoader, iter_: int, replays: bool = False, seed: int | None = 0
) -> SimpleNamespace:
    """A runner with an epoch-based loop, or an iteration-based one (``replays``: it has a dataloader_iterator)."""
    loop = SimpleNamespace(iter=iter_, dataloader=loader)
    if replays:
        loop.dataloader_iterator = iter(range(100))
    cfg = Config(dict(randomness=dict(seed=seed)))
    return SimpleNamespace(train_loop=loop, logger=logging.getLogger('test_seeded_samples'), seed=0, cfg=cfg)


def _resume_log(caplog, loader: DataLoader, **runner) -> str:
    hook = RNGStateHook()
    checkpoint = {'meta': {'iter': 3}}
    hook.before_save_checkpoint(_hook_runner(loader, 0), checkpoint)
    hook.after_load_checkpoint(None, checkpoint)
    resumed = _hook_runner(loader, 3, **runner)
    with caplog.at_level(logging.INFO, logger='test_seeded_samples'):
        hook.before_train(resumed)
        for _ in range(3):  # an iteration-based loop's replay
            next(getattr(resumed.train_loop, 'dataloader_iterator', iter(range(3))))
    return caplog.text


@pytest.mark.parametrize(
    'sampler, replays, warns',
    [
        ('DefaultSampler', False, True),
        ('SeededDefaultSampler', False, False),
        ('DefaultSampler', True, False),
    ],
)
def test_rng_state_hook_warns_when_resumed_workers_draw_other_numbers(
    dataset, caplog, sampler, replays, warns
):
    """An epoch-based resume starts fresh workers; an iteration-based one replays the batches through them."""
    log = _resume_log(caplog, _loader(dataset, sampler, num_workers=2), replays=replays)
    assert "restored the RNG states of iteration 3 (the main process's)" in log
    assert ('start afresh in the resumed epoch' in log) == warns
    assert 'no randomness.seed' not in log


def test_rng_state_hook_warns_when_resumed_without_a_fixed_seed(dataset, caplog):
    log = _resume_log(caplog, _loader(dataset, 'SeededDefaultSampler', num_workers=0), seed=None)
    assert 'the config sets no randomness.seed' in log


def test_dataloader_iterators_do_not_draw_from_the_main_stream(dataset):
    """PyTorch draws a base seed per iterator; after RNGStateHook.before_train from the loader's own generator."""
    loader = _loader(dataset, 'SeededDefaultSampler', num_workers=0)
    RNGStateHook().before_train(_hook_runner(loader, 0))
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    iter(loader)  # num_workers=0: a new iterator (and base seed) at every epoch
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize(
    'dataset_type',
    [CheckedSegDataset, COCOInstanceSegDataset, BinaryForegroundDataset, ConvertedBinaryDataset],
)
def test_the_projects_datasets_use_draw_keys(dataset_type):
    assert issubclass(dataset_type, DrawKeyedDatasetMixin) and dataset_type.uses_draw_keys


PROMPTED_CONFIGS = sorted((REPO / 'configs/prompted').glob('*.py')) + sorted(
    (REPO / 'configs/demo').glob('*prompted*.py')
)


@pytest.mark.parametrize('path', PROMPTED_CONFIGS, ids=lambda p: p.name)
def test_prompted_configs_train_with_seeded_samplers_and_persistent_workers(path):
    loader = Config.fromfile(path).train_dataloader
    seeded = 'SeededInfiniteSampler' if 'demo' in path.parts else 'SeededDefaultSampler'
    assert loader.sampler.type == seeded
    assert loader.num_workers >= 2 and loader.persistent_workers
