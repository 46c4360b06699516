"""AdaptFormer (Chen et al., 2022) for SAM's ViT: a bottleneck in parallel to each MLP."""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .adapter import BottleneckAdapter, check_bottleneck_options, select_blocks
from .base import PEFT_METHODS, BasePEFTMethod

__all__ = ['AdaptFormer', 'AdaptFormerLayer']


#: Where the branch reads its input: the residual stream before ``norm2`` (the AdaptFormer
#: paper's code), or ``norm2``'s output, the MLP's own input (SAM-COBOT's Adapter wraps
#: ``blk.mlp``, so its branch sees ``norm2(x)``).
BRANCH_INPUTS = ('block', 'mlp')


class AdaptFormerLayer(BottleneckAdapter):
    """The parallel branch ``scale * up(dropout(relu(down(LN_a(x_in)))))`` of one block's MLP.

    Attached as ``mlp.adaptformer``; :meth:`add_to_output` (a forward hook on ``mlp``)
    adds the branch to ``mlp``'s output, so the block computes
    ``x + mlp(norm2(x)) + branch(x_in)``, where ``x_in`` is

    - ``branch_input='block'``: ``x``, the MLP sub-layer's input before ``norm2``;
      :meth:`stash_input` (a forward pre-hook on ``norm2``) keeps it for the duration
      of one sub-layer (a plain attribute: never in the state dict, and ``None``
      between forwards so the module deep-copies);
    - ``branch_input='mlp'``: ``norm2(x)``, what the MLP itself receives.

    Args:
        dims: the block width.
        bottleneck: width of the bottleneck (> 0).
        dropout: dropout after the ReLU, in [0, 1).
        scale: multiplier of the branch.
        branch_input: ``'block'`` or ``'mlp'`` (see above).
    """

    method = 'AdaptFormer'

    def __init__(
        self,
        dims: int,
        bottleneck: int,
        dropout: float = 0.1,
        scale: float = 1.0,
        branch_input: str = 'block',
    ) -> None:
        super().__init__(dims, bottleneck, act='relu', dropout=dropout, scale=scale, norm=True)
        self.branch_input = branch_input
        self._mlp_input: torch.Tensor | None = None

    def stash_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook on ``norm2``: keep its input x, (B, H, W, C)."""
        self._mlp_input = args[0]

    def add_to_output(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        """Forward hook on ``mlp``: ``mlp(norm2(x)) + branch(x_in)``, both (B, H, W, C)."""
        if self.branch_input == 'mlp':
            return output + self(args[0])  # args[0] = norm2(x)
        x, self._mlp_input = self._mlp_input, None
        if x is None:
            raise RuntimeError(
                'AdaptFormer: the MLP ran without its block norm2 running first, so the '
                'MLP sub-layer input (before norm2) is unknown'
            )
        return output + self(x)

    def extra_repr(self) -> str:
        return f'branch_input={self.branch_input!r}'


@PEFT_METHODS.register_module()
class AdaptFormer(BasePEFTMethod):
    """A bottleneck branch in parallel to the MLP of each block (AdaptFormer).

    Each selected block computes ``x + mlp(norm2(x)) + scale * up(dropout(relu(down(LN_a(x_in)))))``
    where ``LN_a`` is the branch's own affine LayerNorm and ``x_in`` is ``x``
    (``branch_input='block'``, the AdaptFormer paper's code) or ``norm2(x)``
    (``branch_input='mlp'``, SAM-COBOT's reference, whose Adapter wraps the MLP; the
    COBOT + AdaptFormer configs use it). Same parameters, different functions.
    Defaults follow the COBOT reference: ``down`` kaiming-uniform (a=sqrt(5)), ``up``
    zero, zero biases (the model equals the base model at init). Parameters per block:
    ``2 C + (C r + r) + (r C + C)``, 322,752 for ViT-B at ``bottleneck=16``. Not mergeable.

    Args:
        bottleneck: width of the branch (> 0).
        scale: multiplier of the branch (a finite number).
        dropout: dropout after the ReLU, in [0, 1).
        blocks: block indices to adapt; all blocks when None.
        branch_input: ``'block'`` (x before ``norm2``) or ``'mlp'`` (``norm2(x)``).
    """

    def __init__(
        self,
        bottleneck: int = 16,
        scale: float = 1.0,
        dropout: float = 0.1,
        blocks: Sequence[int] | None = None,
        branch_input: str = 'block',
    ) -> None:
        if branch_input not in BRANCH_INPUTS:
            raise ValueError(f'AdaptFormer branch_input must be one of {BRANCH_INPUTS}, got {branch_input!r}')
        self.blocks = check_bottleneck_options('AdaptFormer', bottleneck, blocks, dropout)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
            raise ValueError(f'AdaptFormer scale must be a finite number, got {scale!r}')
        self.bottleneck = bottleneck
        self.scale = float(scale)
        self.dropout = dropout
        self.branch_input = branch_input

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        blocks = select_blocks(model, 'AdaptFormer', self.blocks)
        for name, block in blocks:
            if 'adaptformer' in block.mlp._modules:
                raise ValueError(f'{name}.mlp already has an AdaptFormer ({name}.mlp.adaptformer)')
        params: dict[str, nn.Parameter] = {}
        for name, block in blocks:
            layer = AdaptFormerLayer(
                block.attn.proj.out_features, self.bottleneck, self.dropout, self.scale, self.branch_input
            )
            block.mlp.adaptformer = layer
            if self.branch_input == 'block':
                block.norm2.register_forward_pre_hook(layer.stash_input)
            block.mlp.register_forward_hook(layer.add_to_output)
            params.update({f'{name}.mlp.adaptformer.{pname}': p for pname, p in layer.named_parameters()})
        return params
