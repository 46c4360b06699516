"""LoRA (Hu et al., 2021) for SAM's ViT: low-rank updates of frozen linear layers."""

from torch import nn

from .base import PEFT_METHODS
from .low_rank import LoRALinear, LowRankMethod

__all__ = ['LoRA']


@PEFT_METHODS.register_module()
class LoRA(LowRankMethod):
    """Low-rank adaptation of SAM ViT linear layers.

    Args:
        rank: rank of every update (> 0).
        alpha: scaling numerator; the update is multiplied by ``alpha / rank``.
            Defaults to ``rank`` (scaling 1).
        dropout: dropout probability on the update's input, in [0, 1).
        targets: which linears of each block to adapt: ``'qkv'`` (the fused
            projection as one matrix), or any of its slices ``'q'``, ``'k'``, ``'v'``
            (one update each), and optionally ``'proj'``, ``'lin1'``, ``'lin2'``.
        blocks: block indices to adapt; all blocks when None.
        init: ``'kaiming'`` (A kaiming-uniform, B zero) or ``'xavier'`` (both
            xavier-normal, the COBOT reference's init).
    """

    def make_layer(self, linear: nn.Linear, slices: dict[str, slice]) -> LoRALinear:
        return LoRALinear(linear, slices, self.rank, self.alpha, self.dropout, self.init)
