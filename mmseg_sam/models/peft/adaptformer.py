"""AdaptFormer (Chen et al., 2022) for SAM's ViT: a bottleneck in parallel to each MLP."""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .adapter import BottleneckAdapter, check_bottleneck_options, select_blocks
from .base import PEFT_METHODS, BasePEFTMethod

__all__ = ['AdaptFormer', 'AdaptFormerLayer']


class AdaptFormerLayer(BottleneckAdapter):
    """The parallel branch ``scale * up(dropout(relu(down(LN_a(x)))))`` of one block's MLP.

    Attached as ``mlp.adaptformer``. Its ``x`` is the MLP sub-layer's input before
    ``norm2``: :meth:`stash_input` (a forward pre-hook on ``norm2``) keeps it for the
    duration of one sub-layer and :meth:`add_to_output` (a forward hook on ``mlp``)
    adds the branch to ``mlp``'s output and drops it, so the block computes
    ``x + mlp(norm2(x)) + branch(x)``. The stash is a plain attribute: never in the
    state dict, and ``None`` between forwards so the module deep-copies.

    Args:
        dims: the block width.
        bottleneck: width of the bottleneck (> 0).
        dropout: dropout after the ReLU, in [0, 1).
        scale: multiplier of the branch.
    """

    method = 'AdaptFormer'

    def __init__(self, dims: int, bottleneck: int, dropout: float = 0.1, scale: float = 1.0) -> None:
        super().__init__(dims, bottleneck, act='relu', dropout=dropout, scale=scale, norm=True)
        self._mlp_input: torch.Tensor | None = None

    def stash_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook on ``norm2``: keep its input x, (B, H, W, C)."""
        self._mlp_input = args[0]

    def add_to_output(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """Forward hook on ``mlp``: ``mlp(norm2(x)) + branch(x)``, both (B, H, W, C)."""
        x, self._mlp_input = self._mlp_input, None
        if x is None:
            raise RuntimeError(
                'AdaptFormer: the MLP ran without its block norm2 running first, so the '
                'MLP sub-layer input (before norm2) is unknown'
            )
        return output + self(x)


@PEFT_METHODS.register_module()
class AdaptFormer(BasePEFTMethod):
    """A bottleneck branch in parallel to the MLP of each block (AdaptFormer).

    Each selected block computes ``x + mlp(norm2(x)) + scale * up(dropout(relu(down(LN_a(x)))))``
    where ``LN_a`` is the branch's own affine LayerNorm. Defaults follow the COBOT
    reference: ``down`` kaiming-uniform (a=sqrt(5)), ``up`` zero, zero biases (the model
    equals the base model at init). Parameters per block: ``2 C + (C r + r) + (r C + C)``,
    322,752 for ViT-B at ``bottleneck=16``. Not mergeable.

    Args:
        bottleneck: width of the branch (> 0).
        scale: multiplier of the branch (a finite number).
        dropout: dropout after the ReLU, in [0, 1).
        blocks: block indices to adapt; all blocks when None.
    """

    def __init__(
        self,
        bottleneck: int = 16,
        scale: float = 1.0,
        dropout: float = 0.1,
        blocks: Sequence[int] | None = None,
    ) -> None:
        self.blocks = check_bottleneck_options('AdaptFormer', bottleneck, blocks, dropout)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
            raise ValueError(f'AdaptFormer scale must be a finite number, got {scale!r}')
        self.bottleneck = bottleneck
        self.scale = float(scale)
        self.dropout = dropout

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        blocks = select_blocks(model, 'AdaptFormer', self.blocks)
        for name, block in blocks:
            if 'adaptformer' in block.mlp._modules:
                raise ValueError(f'{name}.mlp already has an AdaptFormer ({name}.mlp.adaptformer)')
        params: dict[str, nn.Parameter] = {}
        for name, block in blocks:
            layer = AdaptFormerLayer(block.attn.proj.out_features, self.bottleneck, self.dropout, self.scale)
            block.mlp.adaptformer = layer
            block.norm2.register_forward_pre_hook(layer.stash_input)
            block.mlp.register_forward_hook(layer.add_to_output)
            params.update({f'{name}.mlp.adaptformer.{pname}': p for pname, p in layer.named_parameters()})
        return params
