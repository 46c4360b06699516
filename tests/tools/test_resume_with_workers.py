"""Prompted training with dataloader workers: a run killed with SIGKILL and resumed, and a run with
another number of workers, end with bitwise the parameters of an uninterrupted run.

Two loops, each as a shipped prompted config runs it, on the tiny SAM: the COBOT LoRA config
(epochs, ``SeededDefaultSampler``) and the prompted demo (iterations, ``SeededInfiniteSampler``;
and with MMEngine's ``InfiniteSampler`` for contrast),
with 2 persistent workers (the configs' 4 scaled down) and every random draw of prompted
training: RandomFlip before GenerateInstances (which keeps a random ``max_instances``), shifted
boxes, points, box or point first (``box_prob=0.5``) and a correction round.
"""

from pathlib import Path

import pytest
import torch

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import REPO, TINY_ARCH, TINY_PROMPTED_HEAD
from tests.tools.test_resume import MAX_ITERS, _train, _train_and_kill

SHIPPED = REPO / 'configs/prompted/sam-vit-b_lora-qv-r4_box-20e_mmseg-layout-1024x1024.py'
DEMO = REPO / 'configs/demo/sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py'
EPOCHS = 3
# per loop: the config, its schedule scaled down, the final checkpoint
LOOPS = {
    'epochs': dict(
        base=SHIPPED,
        schedule=f"""train_cfg = dict(max_epochs={EPOCHS}, val_interval=1)
param_scheduler = [dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0, end={EPOCHS},
                        convert_to_iter_based=True)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2))""",
        final=f'epoch_{EPOCHS}.pth',
    ),
    'iterations': dict(
        base=DEMO,
        schedule=f"""train_cfg = dict(max_iters={MAX_ITERS}, val_interval=4)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end={MAX_ITERS}, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=2))""",
        final=f'iter_{MAX_ITERS}.pth',
    ),
}
# (MMEngine's own samplers, whose draws depend on the workers: tests/datasets/test_seeded_samples.py)
HEAD = dict(
    TINY_PROMPTED_HEAD,
    train_prompting=dict(box_prob=0.5, correction_rounds=1),
    test_prompting=dict(box=True, clicks=1),
)


def write_config(path: Path, loop: str, data_root: Path, checkpoint: Path, num_workers: int) -> Path:
    """The ``loop``'s prompted config on the tiny SAM at 64x64 with ``num_workers`` persistent workers."""
    sampler = LOOPS[loop].get('sampler')
    sampler = f'\n    sampler=dict(type={sampler!r}, shuffle=True),' if sampler else ''
    path.write_text(f"""
_base_ = [{str(LOOPS[loop]['base'])!r}]
data_root = {str(data_root)!r}
randomness = dict(seed=0)
model = dict(
    sam_checkpoint={str(checkpoint)!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict({TINY_ARCH!r}, _delete_=True), img_size=64),
    decode_head={HEAD!r})
size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=size, keep_ratio=False), dict(type='RandomFlip', prob=0.5),
    dict(type='GenerateInstances', min_area=4, max_instances=2, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='shift', max_shift=5, num_pos_points=1),
    dict(type='PackPromptedSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=size, keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='GenerateInstances', min_area=4, on_empty='keep'),
    dict(type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0),
    dict(type='PackPromptedSegInputs')]
metainfo = dict(classes=('background', 'foreground'), palette=[[0, 0, 0], [255, 64, 64]])
train_dataloader = dict(
    batch_size=2, num_workers={num_workers}, persistent_workers={num_workers > 0},{sampler}
    dataset=dict(data_root=data_root, img_suffix='.png', metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, img_suffix='.png', metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
{LOOPS[loop]['schedule']}
""")
    return path


def _final_state(work: Path, loop: str) -> dict[str, torch.Tensor]:
    path = work / LOOPS[loop]['final']
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def _assert_equal(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert set(state) == set(reference) and len(reference) > 10
    different = sorted(k for k in reference if not torch.equal(state[k], reference[k]))
    assert not different, f'{len(different)} of {len(reference)} tensors differ: {different[:5]}'


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('workers_data')
    generate_synthetic_dataset(root, num_train=6, num_val=2, img_size=64, mode='binary')
    return root


@pytest.fixture(scope='module', params=sorted(LOOPS))
def straight_run(request, tmp_path_factory, data, sam_checkpoint) -> tuple[str, Path, dict]:
    """The loop, the 2-worker config and the final state of an uninterrupted run."""
    loop = request.param
    root = tmp_path_factory.mktemp(f'straight_{loop}')
    cfg = write_config(root / 'cfg.py', loop, data, sam_checkpoint, num_workers=2)
    _train(cfg, root / 'work')
    return loop, cfg, _final_state(root / 'work', loop)


@pytest.mark.slow
def test_sigkill_then_resume_with_workers_matches_an_uninterrupted_run(tmp_path, straight_run):
    loop, cfg, reference = straight_run
    work = tmp_path / 'killed'
    # killed once CheckpointHook has written the pointer --resume follows (it writes it after the first file)
    _train_and_kill(cfg, work, after='last_checkpoint')
    assert not (work / LOOPS[loop]['final']).exists(), 'the run finished before it was killed'
    log = _train(cfg, work, '--resume')
    assert 'RNGStateHook: restored the RNG states of iteration' in log
    assert 'start afresh in the resumed epoch' not in log and 'no randomness.seed' not in log
    _assert_equal(_final_state(work, loop), reference)


@pytest.mark.slow
def test_the_number_of_workers_does_not_change_the_parameters(tmp_path, straight_run, data, sam_checkpoint):
    loop, _, reference = straight_run
    cfg = write_config(tmp_path / 'cfg.py', loop, data, sam_checkpoint, num_workers=0)
    _train(cfg, tmp_path / 'work')
    state = _final_state(tmp_path / 'work', loop)
    if LOOPS[loop].get('sampler') == 'InfiniteSampler':  # MMEngine's: each worker's own draws
        assert sum(not torch.equal(state[k], reference[k]) for k in reference) > len(reference) // 2
    else:
        _assert_equal(state, reference)
