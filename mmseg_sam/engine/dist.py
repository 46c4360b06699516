"""Distributed training and testing with or without GPUs: process group and DDP wrapper.

MMEngine 0.10.7 cannot run distributed on a host without an accelerator: its
``pytorch`` and ``slurm`` launchers call ``torch.cuda.set_device`` unconditionally, and
``Runner.wrap_model`` gives DDP ``device_ids=[LOCAL_RANK]``, which CPU modules reject.
It also leaves ``find_unused_parameters`` to the user, so a model whose trainable
parameters are not all used in every step (Conv-LoRA's experts) stops with DDP's
"Expected to have finished reduction in the prior iteration" error.

:func:`setup_distributed` (called by ``tools/train.py`` and ``tools/test.py``) uses the
two extension points MMEngine has: it initialises the process group itself with gloo
when no accelerator is present (the Runner skips its own ``init_dist`` when a group
exists), and it selects :class:`SAMDistributedDataParallel` through
``model_wrapper_cfg``. With CUDA the launch is MMEngine's own (nccl by default).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import MMLogger
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..models.decode_heads import SAMPromptedHead
from ..models.peft import PEFTLayerMixin

__all__ = [
    'SAMDistributedDataParallel',
    'conditionally_used_parameters',
    'first_slurm_host',
    'init_cpu_process_group',
    'setup_distributed',
    'teardown_distributed',
]

_DEFAULT_PORT = 29500
_CPU_LAUNCHERS = ('pytorch', 'slurm')


def first_slurm_host(nodelist: str) -> str:
    """The first host name of a Slurm node list, without calling ``scontrol``.

    Handles what Slurm prints in ``SLURM_NODELIST``: ``'vm'``, ``'a,b'``,
    ``'node[01-04,7]'`` -> ``'node01'``, ``'gpu[3-4]-ib'`` -> ``'gpu3-ib'``.

    Raises:
        ValueError: ``nodelist`` is empty, its brackets do not parse, or its first host has
            more than one bracket range (``scontrol`` handles those).
    """
    nodelist = nodelist.strip()
    match = re.match(r'([^,\[]*)(?:\[([^\]]*)\])?([^,\[]*)', nodelist)
    prefix, ranges, suffix = match.groups()
    first = re.split('[,-]', ranges)[0] if ranges is not None else ''
    host = prefix + first + suffix
    rest = nodelist[match.end() :]
    if not host or (ranges is not None and not first) or (rest and not rest.startswith(',')):
        raise ValueError(f'cannot read a host name from SLURM_NODELIST={nodelist!r}')
    return host


def _slurm_master_addr(nodelist: str) -> str:
    """The first host of the allocation: ``scontrol show hostnames`` when available."""
    scontrol = shutil.which('scontrol')
    if scontrol is not None:
        proc = subprocess.run([scontrol, 'show', 'hostnames', nodelist], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.split()[0]
    return first_slurm_host(nodelist)


def _require_env(names: tuple[str, ...], launcher: str) -> dict[str, str]:
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise RuntimeError(
            f'launcher {launcher!r} needs the environment variables {list(names)}, but {missing} are not set '
            f'(start the job with {"torchrun / tools/dist_train.sh" if launcher == "pytorch" else "srun"})'
        )
    return {n: os.environ[n] for n in names}


def init_cpu_process_group(
    launcher: str, backend: str = 'gloo', port: int | None = None, timeout: float | None = None, **kwargs: Any
) -> None:
    """Initialise the default process group from a launcher's environment, without CUDA.

    Sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
    as MMEngine's launchers do, minus their ``torch.cuda.set_device`` call.

    Args:
        launcher: ``'pytorch'`` (torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
            ``MASTER_ADDR``/``MASTER_PORT``) or ``'slurm'`` (``SLURM_PROCID``,
            ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODELIST``; the master is the
            first node, the port ``port``, else ``MASTER_PORT``, else 29500).
        backend: a backend that runs on CPU tensors (``'gloo'``).
        port: master port for ``'slurm'`` (MMEngine's ``dist_cfg.port``).
        timeout: collective timeout in seconds.
        **kwargs: passed to ``torch.distributed.init_process_group``.

    Raises:
        ValueError: an unsupported launcher or backend.
        RuntimeError: a variable the launcher sets is missing, or a group already exists.
    """
    if launcher not in _CPU_LAUNCHERS:
        raise ValueError(
            f'launcher {launcher!r} is not supported without CUDA; use one of {list(_CPU_LAUNCHERS)}'
        )
    if backend != 'gloo':
        raise ValueError(f"backend {backend!r} is not supported without CUDA; use 'gloo'")
    if torch_dist.is_initialized():
        raise RuntimeError('a default process group already exists')
    if launcher == 'slurm':
        env = _require_env(('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'), launcher)
        os.environ['RANK'] = env['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = env['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', str(_DEFAULT_PORT))
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = _slurm_master_addr(env['SLURM_NODELIST'])
    else:
        _require_env(('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'), launcher)
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend=backend, rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']), **kwargs
    )


def conditionally_used_parameters(model: nn.Module) -> list[str]:
    """Names of trainable parameters that a training step may leave without a gradient.

    Every PEFT layer declares its own (``PEFTLayerMixin.conditional_parameters``):
    Conv-LoRA's experts (each sample runs only its top-k experts) and its gate (the
    noise weights go unused when every expert is selected). So does the prompted head
    (``SAMPromptedHead.conditional_parameters``): a trainable prompt encoder's point,
    box and mask embeddings, each used only by the prompts of its kind. DDP must look for
    unused parameters (``find_unused_parameters=True``) when this is not empty.
    """
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, (PEFTLayerMixin, SAMPromptedHead)):
            names += [
                f'{module_name}.{name}' if module_name else name for name in module.conditional_parameters()
            ]
    return names


# In MMEngine's root registry: Runner.wrap_model looks the type up there, unscoped.
@MODEL_WRAPPERS.register_module()
class SAMDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine's DDP wrapper that also runs on CPU and sets ``find_unused_parameters`` itself.

    Frozen parameters (``requires_grad=False``) are not registered for gradient
    all-reduce by DDP itself; only the trainable PEFT and head parameters are.

    Args:
        module: the model, already on its device.
        device_ids: CUDA device of this process; dropped for a CPU module (DDP on CPU
            takes none).
        find_unused_parameters: None (default) turns it on exactly when the model has
            conditionally used parameters (:func:`conditionally_used_parameters`) and
            logs which; True forces it on.
        **kwargs: passed to :class:`MMDistributedDataParallel` (DDP's defaults otherwise:
            buffers are synchronised from rank 0 at every forward).

    Raises:
        ValueError: ``find_unused_parameters=False`` for a model that has conditionally
            used parameters (DDP would stop at the second step), naming some of them.
    """

    def __init__(
        self,
        module: nn.Module,
        device_ids: list[int] | None = None,
        find_unused_parameters: bool | None = None,
        **kwargs: Any,
    ) -> None:
        logger = MMLogger.get_current_instance()
        conditional = conditionally_used_parameters(module)
        if find_unused_parameters is None:
            find_unused_parameters = bool(conditional)
            if conditional:
                logger.info(
                    f'DDP: find_unused_parameters=True, since {len(conditional)} trainable parameters may get '
                    f'no gradient in a step (Conv-LoRA experts and gates, e.g. {conditional[0]})'
                )
        elif not find_unused_parameters and conditional:
            raise ValueError(
                f'find_unused_parameters=False, but {len(conditional)} trainable parameters may get no gradient '
                f'in a step (e.g. {conditional[:3]}): DDP would fail; leave it unset (None) or set it True'
            )
        param = next(module.parameters(), None)
        if param is not None and param.device.type == 'cpu' and device_ids is not None:
            device_ids = None  # DDP on CPU modules takes no device ids
        super().__init__(
            module=module,
            device_ids=device_ids,
            find_unused_parameters=find_unused_parameters,
            **kwargs,
        )


def teardown_distributed() -> None:
    """Destroy the default process group, if any, once every rank got here (end of a tool's run).

    Left to the interpreter's exit, a gloo process group's threads may still be running
    when the process ends, which aborts a rank after training finished ("terminate called
    without an active exception", exit code -6 under torchrun).
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def setup_distributed(cfg: Config) -> None:
    """Prepare a config (and, without an accelerator, the process group) for ``cfg.launcher``.

    For ``launcher='none'`` nothing changes. Otherwise:

    - without CUDA (or another accelerator MMEngine knows), the default process group
      is initialised here with gloo (:func:`init_cpu_process_group`) and
      ``env_cfg.dist_cfg.backend`` records it; the Runner then skips its ``init_dist``;
    - ``model_wrapper_cfg`` defaults to :class:`SAMDistributedDataParallel`, with a
      top-level ``find_unused_parameters`` (MMEngine's setting) passed on when given.
      A user's own DDP-type wrapper gets ``device_ids=None`` on CPU.

    Args:
        cfg: the full config, after command-line overrides; changed in place.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return
    on_cpu = get_device() == 'cpu'
    if on_cpu and not torch_dist.is_initialized():
        env_cfg = cfg.setdefault('env_cfg', {})
        dist_cfg = dict(env_cfg.get('dist_cfg') or {})
        backend = dist_cfg.pop('backend', 'nccl')
        init_backend = dist_cfg.pop('init_backend', 'torch')
        if init_backend != 'torch':
            raise ValueError(
                f"dist_cfg.init_backend={init_backend!r} needs CUDA; without it only 'torch' runs"
            )
        if backend == 'nccl':
            backend = 'gloo'  # nccl needs CUDA
        init_cpu_process_group(launcher, backend=backend, **dist_cfg)
        env_cfg['dist_cfg'] = dict(env_cfg.get('dist_cfg') or {}, backend=backend)
        MMLogger.get_current_instance().info(
            f'no GPU: initialised the {backend} process group for the {launcher!r} launcher '
            f'(rank {torch_dist.get_rank()} of {torch_dist.get_world_size()})'
        )
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        wrapper = dict(type='SAMDistributedDataParallel')
        if cfg.get('find_unused_parameters') is not None:
            wrapper['find_unused_parameters'] = bool(cfg.find_unused_parameters)
        cfg.model_wrapper_cfg = wrapper
    elif on_cpu and isinstance(wrapper, Mapping):
        wrapper_type = wrapper.get('type', 'MMDistributedDataParallel')
        wrapper_cls = MODEL_WRAPPERS.get(wrapper_type) if isinstance(wrapper_type, str) else wrapper_type
        if isinstance(wrapper_cls, type) and issubclass(wrapper_cls, DistributedDataParallel):
            wrapper.setdefault('device_ids', None)
