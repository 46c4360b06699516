"""AdaptFormer (Chen et al., 2022) for SAM's ViT: a bottleneck in parallel to each MLP."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import PEFT_METHODS, BlockPlaceMethod, check_blocks
from .bottleneck import BottleneckAdapter, check_bottleneck_options

__all__ = ['AdaptFormer', 'AdaptFormerLayer']


#: Where the branch reads its input: the residual stream before ``norm2`` (the AdaptFormer
#: paper's code), or ``norm2``'s output, the MLP's own input (SAM-COBOT's Adapter wraps
#: ``blk.mlp``, so its branch sees ``norm2(x)``).
BRANCH_INPUTS = ('block', 'mlp')


class AdaptFormerLayer(BottleneckAdapter):
    """The parallel branch ``scale * up(dropout(relu(down(LN_a(x_in)))))`` beside a block's MLP.

    Fills the block's ``mlp_parallel`` place (see ``SAMBlock``), which calls it with the
    MLP sub-layer's input ``x`` and ``norm2(x)``; the block computes
    ``x + mlp(norm2(x)) + branch(x_in)`` where ``x_in`` is

    - ``branch_input='block'``: ``x``, the MLP sub-layer's input before ``norm2``;
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

    def forward(self, x: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        """The branch of the MLP sub-layer with input ``x`` and ``normed = norm2(x)``, both (B, H, W, C)."""
        return super().forward(normed if self.branch_input == 'mlp' else x)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, branch_input={self.branch_input!r}'


@PEFT_METHODS.register_module()
class AdaptFormer(BlockPlaceMethod):
    """A bottleneck branch in parallel to the MLP of each block (AdaptFormer).

    Fills each selected block's ``mlp_parallel`` place, so the block computes
    ``x + mlp(norm2(x)) + scale * up(dropout(relu(down(LN_a(x_in)))))``
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
        check_bottleneck_options('AdaptFormer', bottleneck, dropout)
        self.blocks = check_blocks('AdaptFormer', blocks)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
            raise ValueError(f'AdaptFormer scale must be a finite number, got {scale!r}')
        self.bottleneck = bottleneck
        self.scale = float(scale)
        self.dropout = dropout
        self.branch_input = branch_input

    def places(self) -> dict[str, None]:
        return {'mlp_parallel': None}

    def build(self, place: str, spec: None, current: nn.Module | None, block: nn.Module) -> AdaptFormerLayer:
        dims = block.attn.proj.out_features
        return AdaptFormerLayer(dims, self.bottleneck, self.dropout, self.scale, self.branch_input)
