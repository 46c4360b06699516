"""A run killed with SIGKILL and resumed with --resume ends where an uninterrupted run ends."""

import os
import pickletools
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.utils.safe_globals import MMENGINE_CHECKPOINT_GLOBALS
from tests.conftest import REPO

DEMO_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
MAX_ITERS = 12

# Conv-LoRA's noisy gate draws from torch's RNG in training, LoRA dropout too, and
# RandomFlip from numpy's (num_workers=0: in the main process).
PEFT = [
    dict(type='ConvLoRA', rank=4, alpha=4, num_experts=3),
    dict(type='LoRA', rank=2, targets=('proj',), dropout=0.2),
]


def write_config(tmp_path: Path, data_root: Path, checkpoint: Path) -> Path:
    """A tiny-SAM Conv-LoRA + LoRA-dropout training config on generated data."""
    cfg = tmp_path / 'tiny_cfg.py'
    lines = [
        f'_base_ = [{str(DEMO_CONFIG)!r}]',
        f'data_root = {str(data_root)!r}',
        'randomness = dict(seed=0)',
        f"""model = dict(
    sam_checkpoint={str(checkpoint)!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, global_attn_indexes=(1,),
                            window_size=3, out_channels=32), img_size=64, peft={PEFT!r}),
    decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64))""",
        """train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader""",
        f'train_cfg = dict(max_iters={MAX_ITERS}, val_interval=4)',
        f"param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end={MAX_ITERS}, by_epoch=False)]",
        'default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=2))',
        'optim_wrapper = dict(optimizer=dict(lr=1e-2))',
    ]
    cfg.write_text('\n'.join(lines) + '\n')
    return cfg


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def _train(cfg: Path, work: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools/train.py'), str(cfg), '--work-dir', str(work), *args],
        cwd=cfg.parent,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _train_and_kill(cfg: Path, work: Path, after: str, timeout: float = 120.0) -> None:
    """Start training, SIGKILL it as soon as ``work/after`` exists."""
    log = open(work.parent / f'{work.name}_killed.log', 'w')
    proc = subprocess.Popen(
        [sys.executable, str(REPO / 'tools/train.py'), str(cfg), '--work-dir', str(work)],
        cwd=cfg.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    deadline = time.monotonic() + timeout
    try:
        while not (work / after).exists():
            assert proc.poll() is None, f'training exited ({proc.returncode}) before writing {after}'
            assert time.monotonic() < deadline, f'{after} not written within {timeout} s'
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    final = work / f'iter_{MAX_ITERS}.pth'
    assert not final.exists(), (
        f'the run finished ({final}) before it was killed; the test needs a mid-run kill'
    )


def _final_state(work: Path) -> dict[str, torch.Tensor]:
    return torch.load(work / f'iter_{MAX_ITERS}.pth', map_location='cpu', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('resume_data')
    generate_synthetic_dataset(root, num_train=6, num_val=2, img_size=64, mode='binary')
    return root


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory, data, sam_checkpoint) -> tuple[Path, Path]:
    """The config and the work dir of an uninterrupted run."""
    root = tmp_path_factory.mktemp('straight')
    cfg = write_config(root, data, sam_checkpoint)
    _train(cfg, root / 'work')
    return cfg, root / 'work'


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, straight_run):
    cfg, straight = straight_run
    reference = _final_state(straight)

    work = tmp_path / 'killed'
    _train_and_kill(cfg, work, after='iter_4.pth')
    log = _train(cfg, work, '--resume')
    assert 'RNGStateHook: restored the RNG states of iteration' in log
    resumed = _final_state(work)
    assert not list(work.glob('.*.tmp')), 'a temp file of an interrupted checkpoint write was left behind'

    assert set(resumed) == set(reference)
    assert 'backbone.blocks.0.attn.qkv.gate.w_noise' in resumed  # trainable-only checkpoint
    assert 'backbone.blocks.0.attn.qkv.weight' not in resumed
    diffs = {k: (resumed[k].float() - reference[k].float()).abs().max().item() for k in reference}
    assert max(diffs.values()) <= 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]


def _pickled_globals(path: Path) -> set[str]:
    """Qualified names of the globals a torch checkpoint's pickle refers to."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith('/data.pkl')))
    names = set()
    for op, arg, _ in pickletools.genops(data):
        assert op.name != 'STACK_GLOBAL', 'torch.save is expected to pickle with protocol 2 (GLOBAL)'
        if op.name == 'GLOBAL':
            names.add(arg.replace(' ', '.'))
    return names


@pytest.mark.slow
def test_checkpoints_hold_rng_states_and_only_allow_listed_globals(straight_run):
    path = straight_run[1] / f'iter_{MAX_ITERS}.pth'  # message hub with train and val scalars
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    assert set(checkpoint) >= {
        'meta',
        'state_dict',
        'message_hub',
        'optimizer',
        'param_schedulers',
        'rng_states',
    }
    assert checkpoint['rng_states']['world_size'] == 1
    assert set(checkpoint['rng_states']['states'][0]) == {'torch', 'numpy', 'python'}
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []

    allowed = {
        entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'
        for entry in MMENGINE_CHECKPOINT_GLOBALS
    }
    if 'builtins.getattr' in allowed:  # mapped to history_buffer_getattr; protocol 2 spells it __builtin__
        allowed.add('__builtin__.getattr')
    stored = {n for n in _pickled_globals(path) if not n.startswith(('torch.', 'collections.', '_codecs.'))}
    # the message hub's HistoryBuffers (numpy arrays, their statistics methods) and numpy scalars
    assert stored <= allowed, stored - allowed
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in stored
