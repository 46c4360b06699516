"""LoRA (Hu et al., 2021) for SAM's ViT: low-rank updates of frozen linear layers."""

from collections.abc import Sequence

from torch import nn

from .base import (
    PEFT_METHODS,
    BlockPlaceMethod,
    check_blocks,
    check_choices,
    check_positive_int,
    check_targets,
)
from .low_rank import LORA_INITS, LoRALinear

__all__ = ['LoRA']

# Target name -> (module path inside a block, slice of the output features in thirds
# of the fused qkv, or None for the whole output).
_TARGETS: dict[str, tuple[str, int | None]] = {
    'qkv': ('attn.qkv', None),
    'q': ('attn.qkv', 0),
    'k': ('attn.qkv', 1),
    'v': ('attn.qkv', 2),
    'proj': ('attn.proj', None),
    'lin1': ('mlp.lin1', None),
    'lin2': ('mlp.lin2', None),
}


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
        check_positive_int('LoRA', 'rank', rank)
        if alpha is not None and alpha <= 0:
            raise ValueError(f'LoRA alpha must be > 0, got {alpha!r}')
        if not 0 <= dropout < 1:
            raise ValueError(f'LoRA dropout must be in [0, 1), got {dropout!r}')
        targets = check_targets('LoRA', targets, _TARGETS)
        if 'qkv' in targets and {'q', 'k', 'v'} & set(targets):
            raise ValueError(f"LoRA targets {list(targets)}: 'qkv' already covers 'q', 'k' and 'v'")
        check_choices('LoRA init', [init], LORA_INITS)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.dropout = dropout
        self.targets = targets
        self.blocks = check_blocks('LoRA', blocks)
        self.init = init

    def places(self) -> dict[str, list[str]]:
        """The linears to wrap, each with its targets: q, k and v share ``attn.qkv``."""
        by_path: dict[str, list[str]] = {}
        for target in self.targets:
            by_path.setdefault(_TARGETS[target][0], []).append(target)
        return by_path

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        if not isinstance(current, nn.Linear):
            raise ValueError(f'LoRA adapts nn.Linear layers; {where} is a {type(current).__name__}')

    def build(self, place: str, spec: list[str], current: nn.Module | None, block: nn.Module) -> LoRALinear:
        third = current.out_features // 3
        slices = {}
        for name in spec:
            part = _TARGETS[name][1]
            slices[name] = (
                slice(0, current.out_features) if part is None else slice(part * third, (part + 1) * third)
            )
        return LoRALinear(current, slices, self.rank, self.alpha, self.dropout, self.init)
