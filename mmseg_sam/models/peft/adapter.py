"""Serial bottleneck adapters (Houlsby et al., 2019) for SAM's ViT."""

from collections.abc import Sequence

import torch
from torch import nn

from .base import (
    PEFT_METHODS,
    BlockPlaceMethod,
    check_blocks,
    check_choices,
    check_targets,
)
from .bottleneck import ACTS, BottleneckAdapter, check_bottleneck_options

__all__ = ['Adapter', 'AdapterLayer']

# target -> the block's place on that sub-layer's output
_PLACES = {'attn': 'attn_adapter', 'mlp': 'mlp_adapter'}


class AdapterLayer(BottleneckAdapter):
    """A serial adapter on a sub-layer's output: ``f + up(act(down(f)))`` for f (..., C).

    Fills a block's ``attn_adapter`` or ``mlp_adapter`` place (see ``SAMBlock``).
    """

    method = 'Adapter'

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + super().forward(f)


@PEFT_METHODS.register_module()
class Adapter(BlockPlaceMethod):
    """Serial bottleneck adapters after the attention and/or MLP sub-layers of each block.

    Fills the blocks' ``attn_adapter`` / ``mlp_adapter`` places with an
    :class:`AdapterLayer`, so a sub-layer's output ``f`` becomes
    ``f + up(act(down(f)))`` before the block adds its residual. ``up`` starts at zero
    (the model equals the base model at init). Not mergeable.

    Args:
        bottleneck: adapter width (> 0).
        targets: sub-layers to adapt, any of ``'attn'``, ``'mlp'``.
        blocks: block indices to adapt; all blocks when None.
        act: activation between down and up, ``'gelu'`` or ``'relu'``.
    """

    def __init__(
        self,
        bottleneck: int = 64,
        targets: Sequence[str] = tuple(_PLACES),
        blocks: Sequence[int] | None = None,
        act: str = 'gelu',
    ) -> None:
        check_bottleneck_options('Adapter', bottleneck)
        self.blocks = check_blocks('Adapter', blocks)
        self.targets = check_targets('Adapter', targets, _PLACES)
        check_choices('Adapter act', [act], ACTS)
        self.bottleneck = bottleneck
        self.act = act

    def places(self) -> dict[str, None]:
        return {_PLACES[target]: None for target in self.targets}

    def build(self, place: str, spec: None, current: nn.Module | None, block: nn.Module) -> AdapterLayer:
        return AdapterLayer(block.attn.proj.out_features, self.bottleneck, act=self.act)
