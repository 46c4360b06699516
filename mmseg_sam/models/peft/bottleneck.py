"""The bottleneck branch that adapter-style methods share: ``up(act(down(x)))``."""

import math

import torch
from torch import nn

from .base import PEFTLayerMixin, check_positive_int

__all__ = ['BottleneckAdapter', 'check_bottleneck_options']

ACTS: dict[str, type[nn.Module]] = {'gelu': nn.GELU, 'relu': nn.ReLU}


class BottleneckAdapter(nn.Module, PEFTLayerMixin):
    """``scale * up(dropout(act(slot(down(norm(x))))))``: a bottleneck's output, no residual.

    The module a method attaches decides where the output is added (Adapter: to a
    sub-layer's output, AdaptFormer: in parallel to the MLP). ``down`` is
    kaiming-uniform (a=sqrt(5)) with zero bias and ``up`` is zero, so the output is
    exactly zero at init and the adapted model equals the base model.

    Args:
        dims: channels of the input and the output.
        bottleneck: width of the bottleneck (> 0).
        act: ``'gelu'`` or ``'relu'``.
        dropout: dropout probability after the activation, in [0, 1).
        scale: multiplier of the output.
        norm: apply a LayerNorm (affine, its own parameters) to the input first.
    """

    method = 'a bottleneck adapter'  # named in errors; subclasses say which method

    def __init__(
        self,
        dims: int,
        bottleneck: int,
        act: str = 'gelu',
        dropout: float = 0.0,
        scale: float = 1.0,
        norm: bool = False,
    ) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        self.scale = scale
        self.act_name = act
        self.norm = nn.LayerNorm(dims) if norm else nn.Identity()
        self.down = nn.Linear(dims, bottleneck)
        self.act = ACTS[act]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(bottleneck, dims)
        # Bottleneck slots (see PEFTLayerMixin): a transform of down's output.
        self.slot_transforms = nn.ModuleDict()
        self.reset_adapter_parameters()

    def reset_adapter_parameters(self) -> None:
        """down kaiming-uniform (a=sqrt(5)), zero biases, up zero (zero output)."""
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def bottleneck_slots(self) -> dict[str, int]:
        """One slot, ``'adapter'``, of width ``bottleneck``."""
        return {'adapter': self.bottleneck}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.down(self.norm(x))  # (..., C) -> (..., r)
        if 'adapter' in self.slot_transforms:
            z = self.slot_transforms['adapter'](z)
        return self.up(self.dropout(self.act(z))) * self.scale  # (..., r) -> (..., C)

    def merge(self) -> None:
        """Always raises: the activation makes the adapter non-linear in its input.

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError(
            f'{self.method} is not linear in its input ({self.act_name} between down and up) '
            'and cannot be merged into the frozen weights'
        )

    def unmerge(self) -> None:
        """Nothing to undo: an adapter is never merged."""

    def extra_repr(self) -> str:
        return f'bottleneck={self.bottleneck}, scale={self.scale:g}'


def check_bottleneck_options(method: str, bottleneck: int, dropout: float = 0.0) -> None:
    """Validate the bottleneck width and dropout of a method built on :class:`BottleneckAdapter`."""
    check_positive_int(method, 'bottleneck', bottleneck)
    if not 0 <= dropout < 1:
        raise ValueError(f'{method} dropout must be in [0, 1), got {dropout!r}')
