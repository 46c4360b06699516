"""mmseg_sam.engine.dist: CPU process groups from launcher variables, and the DDP wrapper.

DDP's reducer checks run in a 1-process gloo group as in many: "Expected to have
finished reduction" appears there too when a trainable parameter gets no gradient.
"""

import os
import socket

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

from mmseg_sam.engine.dist import (
    SAMDistributedDataParallel,
    conditionally_used_parameters,
    first_slurm_host,
    init_cpu_process_group,
    setup_distributed,
)
from mmseg_sam.models.peft import ConvLoRALinear
from mmseg_sam.models.peft.presets import PRESETS, method_types
from tests.conftest import tiny_batch, tiny_segmentor
from tests.peft_tiny import tiny

METHODS = {item.key: tiny(item) for item in PRESETS}  # each preset at the tiny SAM's widths

_LAUNCH_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables from the surroundings; any group made by the test is destroyed."""
    for name in [*_LAUNCH_VARS, *(k for k in os.environ if k.startswith('SLURM_'))]:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@pytest.fixture
def one_process_group(clean_env):
    for name, value in (
        ('RANK', '0'),
        ('WORLD_SIZE', '1'),
        ('LOCAL_RANK', '0'),
        ('MASTER_ADDR', '127.0.0.1'),
    ):
        clean_env.setenv(name, value)
    clean_env.setenv('MASTER_PORT', str(_free_port()))
    init_cpu_process_group('pytorch')
    return clean_env


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_segmentor(**METHODS[name]).train()


def _step(model: torch.nn.Module) -> None:
    losses = model(*tiny_batch(), mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()


@pytest.mark.parametrize(
    'nodelist, host',
    [('vm', 'vm'), ('a,b', 'a'), ('node[01-04,7]', 'node01'), ('gpu[3-4]-ib', 'gpu3-ib'), ('a,b[1-2]', 'a')],
)
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


@pytest.mark.parametrize('nodelist', ['', ' ', 'node[1-2', 'n[]', 'g[1-2]x[3-4]', ',a'])
def test_first_slurm_host_rejects(nodelist):
    with pytest.raises(ValueError, match='cannot read a host name from SLURM_NODELIST'):
        first_slurm_host(nodelist)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(launcher='mpi'), ValueError, "launcher 'mpi' is not supported without CUDA"),
        (
            dict(launcher='pytorch', backend='nccl'),
            ValueError,
            "backend 'nccl' is not supported without CUDA",
        ),
        (dict(launcher='pytorch'), RuntimeError, r"needs the environment variables .*'RANK'"),
        (
            dict(launcher='slurm'),
            RuntimeError,
            r"\['SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'\] are not set",
        ),
    ],
)
def test_init_cpu_process_group_rejects(clean_env, kwargs, error, match):
    with pytest.raises(error, match=match):
        init_cpu_process_group(**kwargs)
    assert not torch_dist.is_initialized()


def test_init_cpu_process_group_from_slurm_variables(clean_env, tmp_path):
    port = _free_port()
    for name, value in (('SLURM_PROCID', '0'), ('SLURM_NTASKS', '1'), ('SLURM_LOCALID', '0')):
        clean_env.setenv(name, value)
    clean_env.setenv('SLURM_NODELIST', 'localhost')
    clean_env.setenv('PATH', str(tmp_path))  # no scontrol: the node list is parsed here
    init_cpu_process_group('slurm', port=port, timeout=30)
    assert torch_dist.get_backend() == 'gloo' and torch_dist.get_world_size() == 1
    assert {k: os.environ[k] for k in _LAUNCH_VARS} == dict(
        RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='localhost', MASTER_PORT=str(port)
    )
    with pytest.raises(RuntimeError, match='already exists'):
        init_cpu_process_group('slurm')


def test_setup_distributed_without_launcher_changes_nothing(clean_env):
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_distributed(cfg)
    assert 'model_wrapper_cfg' not in cfg and cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert not torch_dist.is_initialized()


def test_setup_distributed_on_cpu(one_process_group):
    torch_dist.destroy_process_group()  # setup_distributed makes its own
    cfg = Config(
        dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl')), find_unused_parameters=True)
    )
    setup_distributed(cfg)
    assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='SAMDistributedDataParallel', find_unused_parameters=True)
    # a user's own DDP wrapper keeps its type and loses the CUDA device ids
    cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=dict(type='MMDistributedDataParallel')))
    setup_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None)


def test_wrapper_is_found_as_the_runner_looks_it_up():
    wrapper = MODEL_WRAPPERS.get('SAMDistributedDataParallel')
    assert wrapper is SAMDistributedDataParallel and issubclass(wrapper, DistributedDataParallel)


@pytest.mark.parametrize('name', list(METHODS))
def test_conditionally_used_parameters_cover_every_unused_one(name):
    """Every trainable parameter a step leaves without gradient is reported; nothing else is needed."""
    model = _model(name)
    _step(model)
    unused = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    reported = set(conditionally_used_parameters(model))
    assert unused <= reported, sorted(unused - reported)
    assert bool(reported) == ('ConvLoRA' in method_types(METHODS[name].get('peft')))  # none needless
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert reported <= trainable


def test_wrapper_with_frozen_weights(one_process_group):
    """LoRA: no unused-parameter search; the frozen SAM weights get no gradient and never change."""
    model = _model('lora-qv-r4')
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen
    ddp = SAMDistributedDataParallel(model, device_ids=[0])  # the Runner passes LOCAL_RANK; CPU drops it
    assert ddp.find_unused_parameters is False and ddp.device_ids is None
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # a frozen parameter registered for all-reduce would fail the second step
        optimizer.zero_grad()
        _step(ddp)
        optimizer.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.grad is None and torch.equal(p, frozen[n]), n


def test_wrapper_finds_unused_conv_lora_experts(one_process_group):
    model = _model('conv-lora-r3')
    ddp = SAMDistributedDataParallel(model)
    assert ddp.find_unused_parameters is True
    for _ in range(3):
        _step(ddp)
    # block 1 attends globally: 2 samples, k=1, 3 experts, so some expert idled in every step
    layers = [m for m in model.modules() if isinstance(m, ConvLoRALinear)]
    assert any(len(set(m.last_routing.flatten().tolist())) < len(m.experts) for m in layers)


def test_plain_ddp_fails_on_conv_lora(one_process_group):
    """What the automatic setting prevents: DDP without unused-parameter search stops."""
    ddp = DistributedDataParallel(_model('conv-lora-r3'), find_unused_parameters=False)
    _step(ddp)
    with pytest.raises(RuntimeError, match='Expected to have finished reduction'):
        _step(ddp)


def test_wrapper_refuses_find_unused_false_with_conv_lora(one_process_group):
    with pytest.raises(ValueError, match=r'find_unused_parameters=False, but \d+ trainable parameters'):
        SAMDistributedDataParallel(_model('conv-lora-r3'), find_unused_parameters=False)


def test_setup_distributed_refuses_other_init_backends_on_cpu(clean_env):
    cfg = Config(
        dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl', init_backend='deepspeed')))
    )
    with pytest.raises(ValueError, match="dist_cfg.init_backend='deepspeed' needs CUDA"):
        setup_distributed(cfg)
    assert not torch_dist.is_initialized()


def test_teardown_destroys_the_process_group(tmp_path):
    """The tools end a distributed run by destroying the group (gloo's threads could abort a rank at exit)."""
    import torch.distributed as torch_dist

    from mmseg_sam.engine import teardown_distributed

    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    assert torch_dist.is_initialized()
    teardown_distributed()
    assert not torch_dist.is_initialized()
    teardown_distributed()  # no group: nothing to do
