"""Mixed-precision training that also runs on CPU (MMEngine's AmpOptimWrapper refuses it)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from mmengine.device import get_device
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper
from mmseg.registry import OPTIM_WRAPPERS
from torch import nn

__all__ = ['PortableAmpOptimWrapper', 'default_cuda_amp_dtype']

_CPU_DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}


def default_cuda_amp_dtype() -> tuple[torch.dtype, str]:
    """The autocast dtype for a CUDA GPU left to choose: bf16 from compute capability 8.0, else fp16.

    bf16 has fp32's exponent range, so it needs no loss scale and does not overflow where
    fp16 turns activations or gradients into inf / NaN (micro-sam moved its training to bf16
    for this reason); GPUs before Ampere (compute capability below 8.0) emulate it slowly
    or not at all, so they keep fp16 with its dynamic loss scale.

    Returns:
        The dtype and a sentence saying why, for the log.
    """
    major, minor = torch.cuda.get_device_capability()
    name = torch.cuda.get_device_name()
    if major >= 8 and torch.cuda.is_bf16_supported():
        return (
            torch.bfloat16,
            f'--amp: bf16 on {name} (compute capability {major}.{minor} >= 8.0; no loss scale)',
        )
    return torch.float16, (
        f'--amp: fp16 with a dynamic loss scale on {name} (compute capability {major}.{minor} < 8.0: no fast bf16)'
    )


@OPTIM_WRAPPERS.register_module()
class PortableAmpOptimWrapper(AmpOptimWrapper):
    """MMEngine's ``AmpOptimWrapper`` on accelerators, ``torch.autocast('cpu')`` on CPU.

    MMEngine 0.10.7's ``AmpOptimWrapper`` asserts that a GPU (or NPU/MLU/MUSA) is
    present and its autocast helper allows only bf16 on CPU. On an accelerator this
    class is that wrapper; on a CUDA GPU without a ``dtype`` it picks bf16 from compute
    capability 8.0 and fp16 below (:func:`default_cuda_amp_dtype`), and logs the choice. On a CPU-only machine it trains under
    ``torch.autocast('cpu', dtype)``: ``bfloat16`` (the default; same exponent
    range as fp32, no loss scaling) or ``float16`` (with a CPU ``GradScaler`` that
    scales the loss, skips steps with inf/NaN gradients and adapts the scale, as on
    GPU). The scaler's state is saved and resumed like the GPU one.

    Args:
        loss_scale: ``'dynamic'``, an initial scale (float, kept fixed) or a dict of
            ``GradScaler`` arguments, as for ``AmpOptimWrapper``.
        dtype: ``'float16'``, ``'bfloat16'`` (or the torch dtypes); None: on a CUDA GPU
            bf16 from compute capability 8.0, else fp16; on CPU bf16.
        use_fsdp: as for ``AmpOptimWrapper`` (accelerators only).
        **kwargs: OptimWrapper arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(
        self,
        loss_scale: str | float | dict = 'dynamic',
        dtype: str | torch.dtype | None = None,
        use_fsdp: bool = False,
        **kwargs: Any,
    ) -> None:
        self.device_type = get_device()
        if self.device_type != 'cpu':
            if dtype is None and self.device_type == 'cuda':
                dtype, why = default_cuda_amp_dtype()
                MMLogger.get_current_instance().info(why)
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if use_fsdp:
            raise ValueError('use_fsdp=True needs an accelerator; this machine has none')
        if dtype is None:
            dtype = torch.bfloat16
        if isinstance(dtype, str):
            if dtype not in _CPU_DTYPES:
                raise ValueError(
                    f'CPU mixed precision dtype must be one of {sorted(_CPU_DTYPES)}, got {dtype!r}'
                )
            dtype = _CPU_DTYPES[dtype]
        if dtype not in _CPU_DTYPES.values():
            raise ValueError(f'CPU mixed precision dtype must be one of {sorted(_CPU_DTYPES)}, got {dtype!r}')
        if not hasattr(torch.amp, 'GradScaler'):
            raise RuntimeError(
                f'mixed precision on CPU needs torch >= 2.3 (torch.amp.GradScaler), got {torch.__version__}'
            )
        super(AmpOptimWrapper, self).__init__(**kwargs)  # OptimWrapper: AmpOptimWrapper asserts a GPU
        self.cast_dtype = dtype
        self._scale_update_param = None
        enabled = dtype == torch.float16  # bf16 needs no loss scaling
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu', enabled=enabled)
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=loss_scale, enabled=enabled)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **{'enabled': enabled, **loss_scale})
        else:
            raise TypeError(f'loss_scale must be "dynamic", a float or a dict, got {loss_scale!r}')

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Gradient-accumulation context plus autocast (``torch.autocast('cpu')`` on CPU)."""
        if self.device_type != 'cpu':
            with super().optim_context(model):
                yield
            return
        with super(AmpOptimWrapper, self).optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
