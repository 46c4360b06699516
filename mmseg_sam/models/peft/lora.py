"""LoRA (Hu et al., 2021) for SAM's ViT: low-rank updates of frozen linear layers."""

from collections.abc import Sequence

from torch import nn

from .base import (
    PEFT_METHODS,
    BlockPlaceMethod,
    check_blocks,
)
from .low_rank import LoRALinear, check_low_rank_options, linear_places, target_slices

__all__ = ['LoRA']


@PEFT_METHODS.register_module()
class LoRA(BlockPlaceMethod):
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

    mergeable = True

    def __init__(
        self,
        rank: int = 4,
        alpha: float | None = None,
        dropout: float = 0.0,
        targets: Sequence[str] = ('q', 'v'),
        blocks: Sequence[int] | None = None,
        init: str = 'kaiming',
    ) -> None:
        targets = check_low_rank_options('LoRA', rank, alpha, dropout, targets, init)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.dropout = dropout
        self.targets = targets
        self.blocks = check_blocks('LoRA', blocks)
        self.init = init

    def places(self) -> dict[str, list[str]]:
        return linear_places(self.targets)

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        if not isinstance(current, nn.Linear):
            raise ValueError(f'LoRA adapts nn.Linear layers; {where} is a {type(current).__name__}')

    def build(self, place: str, spec: list[str], current: nn.Module | None, block: nn.Module) -> LoRALinear:
        return LoRALinear(
            current, target_slices(spec, current), self.rank, self.alpha, self.dropout, self.init
        )
