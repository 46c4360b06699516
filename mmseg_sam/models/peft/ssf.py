"""SSF (Lian et al., NeurIPS 2022) for SAM's ViT: scale and shift the features of frozen layers."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    PEFT_METHODS,
    BlockPlaceMethod,
    PEFTLayerMixin,
    check_blocks,
    check_targets,
)

__all__ = ['SSF', 'SSFLayerNorm', 'SSFLinear']

# Target name -> (module path inside a block, the plain type SSF wraps there).
_TARGETS: dict[str, tuple[str, type[nn.Module]]] = {
    'qkv': ('attn.qkv', nn.Linear),
    'proj': ('attn.proj', nn.Linear),
    'lin1': ('mlp.lin1', nn.Linear),
    'lin2': ('mlp.lin2', nn.Linear),
    'norm1': ('norm1', nn.LayerNorm),
    'norm2': ('norm2', nn.LayerNorm),
}


class _SSFMixin(PEFTLayerMixin):
    """Scale and shift of a layer's output channels, foldable into its ``weight``/``bias``.

    The host layer owns ``weight`` (output channels first) and ``bias``; the mixin adds
    ``ssf_scale`` (gamma) and ``ssf_shift`` (beta), both (C,), applied over the last dim
    of the output: ``y = gamma * out + beta``.
    """

    weight: nn.Parameter | None
    bias: nn.Parameter | None
    ssf_scale: nn.Parameter
    ssf_shift: nn.Parameter
    merged: bool

    def _init_ssf(self, channels: int, like: torch.Tensor | None) -> None:
        kwargs = {} if like is None else dict(device=like.device, dtype=like.dtype)
        self.ssf_scale = nn.Parameter(torch.empty(channels, **kwargs))
        self.ssf_shift = nn.Parameter(torch.empty(channels, **kwargs))
        self.merged = False
        self.reset_ssf_parameters()

    def reset_ssf_parameters(self) -> None:
        """The paper's init: gamma ~ N(1, 0.02), beta ~ N(0, 0.02)."""
        nn.init.normal_(self.ssf_scale, mean=1.0, std=0.02)
        nn.init.normal_(self.ssf_shift, mean=0.0, std=0.02)

    def _scale_shift(self, out: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return out
        return out * self.ssf_scale + self.ssf_shift  # (..., C) * (C,) + (C,)

    def _check_mergeable(self) -> None:
        if self.weight is None or self.bias is None:
            missing = 'weight' if self.weight is None else 'bias'
            raise ValueError(
                f'cannot merge SSF into a {type(self).__name__} without a {missing}: '
                'adding one would change its state-dict keys'
            )
        zeros = int((self.ssf_scale == 0).sum())
        if zeros:
            raise ValueError(f'cannot (un)merge SSF: ssf_scale has {zeros} zero entries (not invertible)')

    def _channel_view(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (self.weight.dim() - 1)))  # (C,) -> (C, 1, ...) like weight

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the scale and shift into the layer (exact): W' = gamma W, b' = gamma b + beta.

        Raises:
            ValueError: the layer has no weight or bias, or some gamma is 0 (the fold
                could not be undone).
        """
        if self.merged:
            return
        self._check_mergeable()
        scale, shift = self.ssf_scale.to(self.weight.dtype), self.ssf_shift.to(self.weight.dtype)
        self.weight.mul_(self._channel_view(scale))
        self.bias.mul_(scale).add_(shift)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` by inverting with gamma: W = W' / gamma, b = (b' - beta) / gamma.

        Raises:
            ValueError: some gamma is 0.
        """
        if not self.merged:
            return
        self._check_mergeable()
        scale, shift = self.ssf_scale.to(self.weight.dtype), self.ssf_shift.to(self.weight.dtype)
        self.weight.div_(self._channel_view(scale))
        self.bias.sub_(shift).div_(scale)
        self.merged = False


class SSFLinear(nn.Linear, _SSFMixin):
    """A frozen ``nn.Linear`` followed by SSF's per-channel scale and shift.

    It takes over the wrapped layer's ``weight`` and ``bias`` under the same names, so
    the base state-dict keys do not change; ``ssf_scale`` and ``ssf_shift`` are new.

    Args:
        base: the linear layer to adapt.
    """

    def __init__(self, base: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self._init_ssf(self.out_features, base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)
        return self._scale_shift(out)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, merged={self.merged}'


class SSFLayerNorm(nn.LayerNorm, _SSFMixin):
    """A frozen ``nn.LayerNorm`` (over the last dim) followed by SSF's scale and shift.

    It takes over the wrapped layer's ``weight`` and ``bias`` under the same names.

    Args:
        base: the LayerNorm to adapt; its ``normalized_shape`` must be 1-D.
    """

    def __init__(self, base: nn.LayerNorm) -> None:
        if len(base.normalized_shape) != 1:
            raise ValueError(
                f'SSF supports LayerNorms over the last dim only, got normalized_shape={base.normalized_shape}'
            )
        nn.Module.__init__(self)
        self.normalized_shape = base.normalized_shape
        self.eps = base.eps
        self.elementwise_affine = base.elementwise_affine
        self.weight = base.weight
        self.bias = base.bias
        self._init_ssf(self.normalized_shape[0], base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)  # (..., C)
        return self._scale_shift(out)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, merged={self.merged}'


@PEFT_METHODS.register_module()
class SSF(BlockPlaceMethod):
    """Scaling & Shifting Features: ``y = gamma * op(x) + beta`` after selected ops.

    Each selected ``nn.Linear``/``nn.LayerNorm`` is replaced by :class:`SSFLinear` /
    :class:`SSFLayerNorm`, which keep its weights under the same keys. A layer already
    wrapped (by SSF or another method) is refused, because the wrapper would drop that
    behaviour. Mergeable: see :meth:`SSFLinear.merge`.

    Args:
        targets: ops of each block followed by a scale and shift: any of
            ``'qkv'``, ``'proj'``, ``'lin1'``, ``'lin2'`` (after the linear) and
            ``'norm1'``, ``'norm2'`` (after the LayerNorm). Defaults to all.
        blocks: block indices to adapt; all blocks when None.
    """

    mergeable = True

    def __init__(self, targets: Sequence[str] = tuple(_TARGETS), blocks: Sequence[int] | None = None) -> None:
        self.targets = check_targets('SSF', targets, _TARGETS)
        self.blocks = check_blocks('SSF', blocks)

    def places(self) -> dict[str, type[nn.Module]]:
        return {_TARGETS[target][0]: _TARGETS[target][1] for target in self.targets}

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        layer_type = self.places()[place]
        if not isinstance(current, layer_type):
            raise ValueError(
                f'SSF needs a {layer_type.__name__} at {where}, found a {type(current).__name__}'
            )

    def build(
        self, place: str, spec: type[nn.Module], current: nn.Module | None, block: nn.Module
    ) -> nn.Module:
        return SSFLinear(current) if isinstance(current, nn.Linear) else SSFLayerNorm(current)
