"""Serial bottleneck adapters (Houlsby et al., 2019) for SAM's ViT, and the shared bottleneck."""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..sam_modeling import Block
from .base import (
    PEFT_METHODS,
    BasePEFTMethod,
    PEFTLayerMixin,
    block_pattern,
    check_blocks,
    check_blocks_matched,
    check_choices,
    check_positive_int,
    check_targets,
    match_modules,
)

__all__ = ['Adapter', 'AdapterLayer', 'BottleneckAdapter']

_TARGETS = ('attn', 'mlp')
_ACTS: dict[str, type[nn.Module]] = {'gelu': nn.GELU, 'relu': nn.ReLU}


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
        self.act = _ACTS[act]()
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


class AdapterLayer(BottleneckAdapter):
    """A serial adapter on a sub-layer's output: ``f(x) + up(act(down(f(x))))``.

    Attached as ``<sub-layer>.adapter``; :meth:`add_to_output` is registered as the
    sub-layer's forward hook.
    """

    method = 'Adapter'

    def add_to_output(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """Forward hook: add the adapter of ``output`` to ``output`` (any (..., C))."""
        return output + self(output)


def check_bottleneck_options(
    method: str, bottleneck: int, blocks: Sequence[int] | None, dropout: float = 0.0
) -> tuple[int, ...] | None:
    """Validate the options Adapter and AdaptFormer share; return ``blocks`` as a tuple."""
    check_positive_int(method, 'bottleneck', bottleneck)
    if not 0 <= dropout < 1:
        raise ValueError(f'{method} dropout must be in [0, 1), got {dropout!r}')
    return check_blocks(method, blocks)


def select_blocks(model: nn.Module, method: str, blocks: Sequence[int] | None) -> list[tuple[str, nn.Module]]:
    """SAM ``Block``s of ``model`` named ``blocks.<i>`` for the requested indices (all if None).

    Raises:
        ValueError: no block matched, or some requested index matched none.
    """
    pattern = rf'blocks\.{block_pattern(blocks)}'
    matches = list(match_modules(model, pattern, Block))
    if not matches:
        raise ValueError(f'{method} found no SAM Block matching {pattern!r} (blocks={blocks})')
    check_blocks_matched(method, blocks, (name for name, _ in matches), 'SAM Block')
    return matches


@PEFT_METHODS.register_module()
class Adapter(BasePEFTMethod):
    """Serial bottleneck adapters after the attention and/or MLP sub-layers of each block.

    A sub-layer ``f`` (``attn`` or ``mlp``) gets an :class:`AdapterLayer` as child
    ``adapter`` and a forward hook, so ``f``'s output becomes
    ``f(x) + up(act(down(f(x))))`` before the block adds its residual. On windowed
    blocks the attention output is still partitioned (padding included): the adapter
    is per token, so this equals adapting the unpartitioned output. ``up`` starts at
    zero (the model equals the base model at init). Not mergeable.

    Args:
        bottleneck: adapter width (> 0).
        targets: sub-layers to adapt, any of ``'attn'``, ``'mlp'``.
        blocks: block indices to adapt; all blocks when None.
        act: activation between down and up, ``'gelu'`` or ``'relu'``.
    """

    def __init__(
        self,
        bottleneck: int = 64,
        targets: Sequence[str] = _TARGETS,
        blocks: Sequence[int] | None = None,
        act: str = 'gelu',
    ) -> None:
        self.blocks = check_bottleneck_options('Adapter', bottleneck, blocks)
        targets = check_targets('Adapter', targets, _TARGETS)
        check_choices('Adapter act', [act], _ACTS)
        self.bottleneck = bottleneck
        self.targets = targets
        self.act = act

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        # (sub-layer name, sub-layer, block width): attn and mlp both output the block width.
        hosts = [
            (f'{name}.{target}', getattr(block, target), block.attn.proj.out_features)
            for name, block in select_blocks(model, 'Adapter', self.blocks)
            for target in self.targets
        ]
        for name, host, _ in hosts:
            if 'adapter' in host._modules:
                raise ValueError(f'{name} already has an Adapter ({name}.adapter)')
        params: dict[str, nn.Parameter] = {}
        for name, host, dims in hosts:
            layer = AdapterLayer(dims, self.bottleneck, act=self.act)
            host.adapter = layer
            host.register_forward_hook(layer.add_to_output)
            params.update({f'{name}.adapter.{pname}': p for pname, p in layer.named_parameters()})
        return params
