"""tools/dist_train.sh and tools/dist_test.sh: 2-process torchrun on CPU (gloo), tiny SAM, generated data.

Gradient all-reduce makes 2 processes with batch 2 each equal to 1 process with batch 4
when the union of the per-rank batches is the single-process batch (DefaultSampler,
shuffle off: rank r takes samples r, r + 2, ...), nothing is random (no flip, one seed)
and the loss is a mean over equally many pixels per rank (64x64 images, none ignored).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.dataset import DefaultSampler

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import REPO

DEMO_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
# Both runs sum the same per-sample gradients in a different order (float32); AdamW's
# eps=1e-6 bounds how much that can move a parameter. Measured: ~1e-8 (see the test output).
PARAM_TOL = 1e-5
LAUNCH_TIMEOUT = 600


def tiny_dist_config(
    tmp_path: Path,
    data_root: Path,
    checkpoint: Path,
    batch_size: int,
    max_iters: int,
    peft: str = "dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))",
    name: str = 'tiny_dist.py',
) -> Path:
    """A tiny-SAM config with deterministic data order (no shuffle, no flip) and a fixed seed."""
    cfg = tmp_path / name
    cfg.write_text(f"""
_base_ = [{str(DEMO_CONFIG)!r}]
data_root = {str(data_root)!r}
model = dict(
    sam_checkpoint={str(checkpoint)!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, global_attn_indexes=(1,),
                            window_size=3, out_channels=32), img_size=64, peft={peft}),
    decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64))
pipeline_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=pipeline_size, keep_ratio=False), dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=pipeline_size, keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size={batch_size}, num_workers=0, persistent_workers=False,
                        sampler=dict(_delete_=True, type='DefaultSampler', shuffle=False),
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
randomness = dict(seed=0)
train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end={max_iters}, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={max_iters}))
""")
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    """This interpreter for the launchers, one thread per process, no inherited rank variables."""
    env = {
        k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')
    }
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS='1', **extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{cmd} exited with {proc.returncode}:\n{out[-30000:]}'
    print(f'{Path(cmd[0]).name} {" ".join(cmd[1:2])}...: {time.perf_counter() - start:.1f} s')
    return out


def last_metrics(work_dir: Path) -> dict:
    """The last line of the run's scalars.json (the final validation or test metrics)."""
    [scalars] = list(work_dir.glob('*/vis_data/scalars.json')) or list(work_dir.glob('*/*.json'))
    return json.loads(scalars.read_text().splitlines()[-1])


def trainable_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('dist_data') / 'data'
    generate_synthetic_dataset(root, num_train=8, num_val=2, img_size=64)
    return root


def test_default_sampler_splits_a_batch_between_ranks(monkeypatch, data_root):
    """Without shuffle, the per-rank batches of DefaultSampler partition the 1-process batch."""
    dataset = list(range(8))
    batches = {}
    for rank, world_size, batch in ((0, 1, 4), (0, 2, 2), (1, 2, 2)):
        monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda r=rank, w=world_size: (r, w))
        indices = list(DefaultSampler(dataset, shuffle=False))
        batches[rank, world_size] = [indices[i : i + batch] for i in range(0, len(indices), batch)]
    single, rank0, rank1 = batches[0, 1], batches[0, 2], batches[1, 2]
    assert len(single) == len(rank0) == len(rank1) == 2
    for step, expected in enumerate(single):
        union = sorted(rank0[step] + rank1[step])
        assert union == sorted(expected), f'step {step}: ranks {rank0[step]} + {rank1[step]} != {expected}'
        assert not set(rank0[step]) & set(rank1[step])


@pytest.mark.slow
def test_dist_train_matches_single_process(tmp_path, data_root, sam_checkpoint):
    """2 processes x batch 2 (tools/dist_train.sh) end where 1 process x batch 4 ends."""
    iters = 3  # 8 images, 4 per step: the third step starts a second epoch
    single_cfg = tiny_dist_config(
        tmp_path, data_root, sam_checkpoint, batch_size=4, max_iters=iters, name='one.py'
    )
    dist_cfg = tiny_dist_config(
        tmp_path, data_root, sam_checkpoint, batch_size=2, max_iters=iters, name='two.py'
    )

    run(
        [sys.executable, str(REPO / 'tools/train.py'), str(single_cfg), '--work-dir', str(tmp_path / 'one')],
        tmp_path,
    )
    log = run(
        [str(REPO / 'tools/dist_train.sh'), str(dist_cfg), '2', '--work-dir', str(tmp_path / 'two')],
        tmp_path,
        env=launch_env(PORT=str(free_port())),
    )
    assert 'no GPU: initialised the gloo process group' in log
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # mmengine's environment report
    assert 'find_unused_parameters=True' not in log  # LoRA uses every trainable parameter

    one = trainable_state(tmp_path / 'one' / f'iter_{iters}.pth')
    two = trainable_state(tmp_path / 'two' / f'iter_{iters}.pth')
    assert one.keys() == two.keys()
    lora_b = [k for k in one if 'lora_B' in k]
    assert lora_b and max(one[k].abs().max().item() for k in lora_b) > 1e-4  # LoRA B starts at 0: it trained
    diffs = {k: (one[k].float() - two[k].float()).abs().max().item() for k in one}
    worst = max(diffs, key=diffs.get)
    print(f'max |1-process - 2-process| over {len(diffs)} trainable tensors: {diffs[worst]:.3g} ({worst})')
    assert diffs[worst] <= PARAM_TOL, f'{worst} differs by {diffs[worst]:.3g} > {PARAM_TOL}'

    # distributed test: each rank evaluates one of the 2 images and the metrics are collected
    out = tmp_path / 'pred'
    log = run(
        [
            str(REPO / 'tools/dist_test.sh'),
            str(dist_cfg),
            str(tmp_path / 'two' / f'iter_{iters}.pth'),
            '2',
            '--work-dir',
            str(tmp_path / 'test'),
            '--out',
            str(out),
        ],
        tmp_path,
        env=launch_env(PORT=str(free_port())),
    )
    assert 'mIoU' in log
    tested = last_metrics(tmp_path / 'test')
    assert {'aAcc', 'mIoU', 'mDice'} <= set(tested)
    assert len(list(out.glob('*.png'))) == 2  # both ranks' images
    # the same parameters evaluated by the single-process run's final validation
    validated = last_metrics(tmp_path / 'one')
    for key in ('aAcc', 'mIoU', 'mDice'):
        assert abs(tested[key] - validated[key]) <= 0.1, (
            f'{key}: 2-process test {tested} vs 1-process {validated}'
        )


@pytest.mark.slow
def test_dist_train_conv_lora_and_vpt(tmp_path, data_root, sam_checkpoint):
    """Conv-LoRA (experts unused in a step) and VPT (prompt tokens) train under 2-process DDP.

    Without find_unused_parameters DDP stops at the second step with "Expected to have
    finished reduction"; the wrapper turns it on because the model has Conv-LoRA.
    """
    peft = "[dict(type='ConvLoRA', rank=2, num_experts=4, blocks=(0,)), dict(type='VPT', num_tokens=2, blocks=(1,))]"
    cfg = tiny_dist_config(tmp_path, data_root, sam_checkpoint, batch_size=2, max_iters=3, peft=peft)
    log = run(
        [str(REPO / 'tools/dist_train.sh'), str(cfg), '2', '--work-dir', str(tmp_path / 'work')],
        tmp_path,
        env=launch_env(PORT=str(free_port())),
    )
    assert 'DDP: find_unused_parameters=True' in log
    assert 'Expected to have finished reduction' not in log
    state = trainable_state(tmp_path / 'work/iter_3.pth')
    assert 'backbone.blocks.0.attn.qkv.experts.0.conv.weight' in state
    assert 'backbone.blocks.1.attn.prompt_tokens' in state
    assert 'loss_moe' in log  # Conv-LoRA's balancing loss reached the logged losses


@pytest.mark.slow
def test_dist_train_prompted_with_cp_and_amp(tmp_path, data_root, sam_checkpoint):
    """A prompted model (box prompts only: the trainable prompt encoder's point embeddings get no gradient)
    trains under 2-process DDP, with selective recomputation in the encoder and bf16 autocast."""
    from tests.tools.test_prompted_tools import prompted_config

    backbone = dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v')), with_cp='selective')
    head = dict(train_prompting=dict(box_prob=1.0, correction_rounds=1))
    cfg = prompted_config(tmp_path / 'prompted_dist.py', data_root, sam_checkpoint, backbone, head)
    log = run(
        [str(REPO / 'tools/dist_train.sh'), str(cfg), '2', '--work-dir', str(tmp_path / 'work'), '--amp'],
        tmp_path,
        env=launch_env(PORT=str(free_port())),
    )
    assert 'DDP: find_unused_parameters=True' in log
    assert 'Expected to have finished reduction' not in log
    state = trainable_state(tmp_path / 'work/iter_1.pth')
    assert 'decode_head.prompt_encoder.point_embeddings.2.weight' in state  # the box corners trained
    assert 'backbone.blocks.0.attn.qkv.lora_A.q.weight' in state
    losses = [
        json.loads(line)
        for line in next((tmp_path / 'work').glob('*/vis_data/scalars.json')).read_text().splitlines()
    ]
    assert all(torch.isfinite(torch.tensor(s['loss'])) for s in losses if 'loss' in s)
