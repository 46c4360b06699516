"""Mixed-precision training (fp16 and bf16 autocast) with Conv-LoRA, on CPU through tools/train.py."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.optim import OptimWrapper
from torch import nn

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.engine import PortableAmpOptimWrapper
from tests.conftest import REPO
from tests.tools.test_resume import write_config


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_cpu_autocast_context_and_loss_scaling(dtype):
    layer = nn.Linear(4, 4)
    wrapper = PortableAmpOptimWrapper(optimizer=torch.optim.SGD(layer.parameters(), lr=0.1), dtype=dtype)
    assert isinstance(wrapper, OptimWrapper)
    with wrapper.optim_context(layer):
        out = layer(torch.full((2, 4), 0.1))  # small: the scaled fp16 gradients stay finite
    assert out.dtype == getattr(torch, dtype)
    # fp16 needs loss scaling, bf16 (fp32's exponent range) does not
    assert wrapper.loss_scaler.is_enabled() == (dtype == 'float16')
    before = layer.weight.detach().clone()
    wrapper.update_params(out.float().pow(2).mean())
    assert not torch.equal(before, layer.weight)


def test_fp16_skips_a_step_with_inf_gradients_and_backs_off():
    layer = nn.Linear(4, 1)
    wrapper = PortableAmpOptimWrapper(optimizer=torch.optim.SGD(layer.parameters(), lr=0.1), dtype='float16')
    scale = wrapper.loss_scaler.get_scale()
    before = layer.weight.detach().clone()
    with wrapper.optim_context(layer):
        loss = layer(torch.full((1, 4), 1e30)).float().sum()  # inf in fp16
    wrapper.update_params(loss)
    assert torch.equal(before, layer.weight)
    assert wrapper.loss_scaler.get_scale() == scale / 2


def test_cpu_dtype_errors():
    params = nn.Linear(2, 2).parameters()
    with pytest.raises(ValueError, match=r"dtype must be one of \['bfloat16', 'float16'\], got 'float64'"):
        PortableAmpOptimWrapper(optimizer=torch.optim.SGD(params, lr=0.1), dtype='float64')


@pytest.mark.parametrize(
    ('capability', 'bf16', 'expected', 'said'),
    [
        (
            (8, 0),
            True,
            torch.bfloat16,
            r'--amp: bf16 on A100 \(compute capability 8\.0 >= 8\.0; no loss scale\)',
        ),
        ((9, 0), True, torch.bfloat16, r'bf16 on A100 \(compute capability 9\.0'),
        (
            (7, 5),
            True,
            torch.float16,
            r'fp16 with a dynamic loss scale on A100 \(compute capability 7\.5 < 8\.0',
        ),
        ((8, 6), False, torch.float16, r'fp16 .*compute capability 8\.6'),
    ],
)
def test_gpu_amp_picks_bf16_from_ampere(monkeypatch, capability, bf16, expected, said):
    """On a CUDA GPU, --amp without a dtype: bf16 where the GPU has it (compute capability >= 8.0), else fp16.
    (CUDA is faked: the choice reads only torch.cuda's capability queries.)"""
    from mmseg_sam.engine.optimizers import portable_amp_optim_wrapper as module

    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *a: capability)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'A100')
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    dtype, why = module.default_cuda_amp_dtype()
    assert dtype == expected
    assert re.search(said, why), why

    seen = {}
    monkeypatch.setattr(module, 'get_device', lambda: 'cuda')
    monkeypatch.setattr(module.AmpOptimWrapper, '__init__', lambda self, **kw: seen.update(kw))
    PortableAmpOptimWrapper(optimizer=None)
    assert seen['dtype'] == expected
    PortableAmpOptimWrapper(optimizer=None, dtype='float16')
    assert seen['dtype'] == 'float16'  # an explicit dtype is kept


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('amp_data')
    generate_synthetic_dataset(root, num_train=4, num_val=1, img_size=64, mode='binary')
    return root


@pytest.mark.slow
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_train_tool_under_autocast_keeps_losses_finite(tmp_path, data, sam_checkpoint, dtype):
    cfg = write_config(tmp_path, data, sam_checkpoint)  # Conv-LoRA (noisy gate) + LoRA with dropout
    work = tmp_path / 'work'
    # --amp is the user's switch (PortableAmpOptimWrapper, bf16 on CPU); fp16 is chosen by config
    amp = ['--amp'] if dtype == 'bfloat16' else []
    options = [
        *([] if amp else ['optim_wrapper.type=PortableAmpOptimWrapper', f'optim_wrapper.dtype={dtype}']),
        'train_cfg.max_iters=6',
        'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=6',
    ]
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools/train.py'),
            str(cfg),
            '--work-dir',
            str(work),
            *amp,
            '--cfg-options',
            *options,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    [scalars] = list(work.glob('*/vis_data/scalars.json'))
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    train = [r for r in records if 'loss' in r]
    assert [r['iter'] for r in train] == list(range(1, 7))
    for record in train:
        for key in ('loss', 'decode.loss_ce', 'loss_moe', 'grad_norm'):
            assert math.isfinite(record[key]), f'{dtype}: {key}={record[key]} at iter {record["iter"]}'

    checkpoint = torch.load(work / 'iter_6.pth', map_location='cpu', weights_only=True)
    scaler = checkpoint['optimizer']['loss_scaler']
    if dtype == 'float16':  # every step taken: the dynamic scale never backed off
        assert scaler['_growth_tracker'] == 6 and scaler['scale'] == 65536.0
    else:
        assert scaler == {}  # bf16: loss scaling disabled
    state = checkpoint['state_dict']
    updated = [k for k in state if 'lora_B' in k]
    assert updated and all(state[k].abs().max() > 0 for k in updated)  # B starts at zero
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
