"""The low-rank layer LoRA-style methods share: a frozen linear plus updates of slices of its output."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    BlockPlaceMethod,
    PEFTLayerMixin,
    check_blocks,
    check_choices,
    check_positive_int,
    check_targets,
)

__all__ = [
    'LINEAR_TARGETS',
    'LORA_INITS',
    'LoRALinear',
    'LowRankMethod',
    'check_linear_place',
    'check_low_rank_options',
    'linear_places',
    'target_slices',
]

LORA_INITS = ('kaiming', 'xavier')
# Target name -> (linear inside a block, third of the fused qkv's output or None for the whole output).
LINEAR_TARGETS: dict[str, tuple[str, int | None]] = {
    'qkv': ('attn.qkv', None),
    'q': ('attn.qkv', 0),
    'k': ('attn.qkv', 1),
    'v': ('attn.qkv', 2),
    'proj': ('attn.proj', None),
    'lin1': ('mlp.lin1', None),
    'lin2': ('mlp.lin2', None),
}


def check_low_rank_options(
    method: str, rank: int, alpha: float | None, dropout: float, targets: Sequence[str], init: str
) -> tuple[str, ...]:
    """Validate the options LoRA-style methods share; returns the targets as a tuple."""
    check_positive_int(method, 'rank', rank)
    if alpha is not None and not alpha > 0:
        raise ValueError(f'{method} alpha must be > 0, got {alpha!r}')
    if not 0 <= dropout < 1:
        raise ValueError(f'{method} dropout must be in [0, 1), got {dropout!r}')
    targets = check_targets(method, targets, LINEAR_TARGETS)
    if 'qkv' in targets and {'q', 'k', 'v'} & set(targets):
        raise ValueError(f"{method} targets {list(targets)}: 'qkv' already covers 'q', 'k' and 'v'")
    check_choices(f'{method} init', [init], LORA_INITS)
    return targets


def linear_places(targets: Sequence[str]) -> dict[str, list[str]]:
    """The linears to wrap in a block, each with its targets: q, k and v share ``attn.qkv``."""
    by_path: dict[str, list[str]] = {}
    for target in targets:
        by_path.setdefault(LINEAR_TARGETS[target][0], []).append(target)
    return by_path


def check_linear_place(method: str, where: str, current: nn.Module | None) -> None:
    """Refuse a place that does not hold an ``nn.Linear`` (what every low-rank method wraps)."""
    if not isinstance(current, nn.Linear):
        raise ValueError(f'{method} adapts nn.Linear layers; {where} is a {type(current).__name__}')


def target_slices(names: Sequence[str], linear: nn.Linear) -> dict[str, slice]:
    """The output rows of ``linear`` that each target adapts (a third of a fused qkv, or all)."""
    third = linear.out_features // 3
    slices = {}
    for name in names:
        part = LINEAR_TARGETS[name][1]
        slices[name] = (
            slice(0, linear.out_features) if part is None else slice(part * third, (part + 1) * third)
        )
    return slices


class LoRALinear(nn.Linear, PEFTLayerMixin):
    """A frozen ``nn.Linear`` plus low-rank updates of (slices of) its output.

    It takes over the wrapped layer's ``weight`` and ``bias`` tensors under the same
    names, so state-dict keys of the base weights do not change
    (``blocks.0.attn.qkv.weight``) and pretrained checkpoints still load by key. Each
    adapted slice ``s`` (e.g. ``'q'`` and ``'v'`` of a fused qkv) adds
    ``scaling * B_s(A_s(dropout(x)))`` to its part of the output.

    Args:
        base: the linear layer to adapt.
        slices: adapted output ranges by name, e.g. ``{'q': slice(0, C)}``.
        rank: rank of each update.
        alpha: ``scaling = alpha / rank``.
        dropout: dropout on the input of the update.
        init: ``'kaiming'`` (A kaiming-uniform, B zero: the update starts at zero) or
            ``'xavier'`` (A and B xavier-normal, as the COBOT reference).
    """

    def __init__(
        self,
        base: nn.Linear,
        slices: dict[str, slice],
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        init: str = 'kaiming',
    ) -> None:
        nn.Module.__init__(self)
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank = rank
        self.scaling = alpha / rank
        self.slices = dict(slices)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.ModuleDict(
            {name: nn.Linear(self.in_features, rank, bias=False) for name in self.slices}
        )
        self.lora_B = nn.ModuleDict(
            {name: nn.Linear(rank, s.stop - s.start, bias=False) for name, s in self.slices.items()}
        )
        # Bottleneck slots (see PEFTLayerMixin): transforms of A's output, by slice name.
        self.slot_transforms = nn.ModuleDict()
        self.merged = False
        self.reset_lora_parameters(init)

    def reset_lora_parameters(self, init: str = 'kaiming') -> None:
        for name in self.slices:
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            if init == 'kaiming':
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                nn.init.zeros_(b)
            else:
                nn.init.xavier_normal_(a)
                nn.init.xavier_normal_(b)

    def bottleneck_slots(self) -> dict[str, int]:
        """One slot per adapted slice, of width ``rank``."""
        return {name: self.rank for name in self.slices}

    def _bottleneck(self, name: str, z: torch.Tensor) -> torch.Tensor:
        transform = self.slot_transforms[name] if name in self.slot_transforms else None
        return z if transform is None else transform(z)

    def delta_weight(self, name: str) -> torch.Tensor:
        """The update of slice ``name`` as a (slice_out, in) matrix."""
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        if name in self.slot_transforms:
            a = self.slot_transforms[name].matrix() @ a  # linear slot transform z -> M z
        return (b @ a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)
        if self.merged:
            return out
        x = self.lora_dropout(x)
        deltas = {
            name: self.lora_B[name](self._bottleneck(name, self.lora_A[name](x))) * self.scaling
            for name in self.slices
        }
        if len(self.slices) == 1:
            ((name, s),) = self.slices.items()
            if s.start == 0 and s.stop == self.out_features:
                return out + deltas[name]
        return self.assemble(out, {name: out[..., s] + deltas[name] for name, s in self.slices.items()})

    def assemble(self, out: torch.Tensor, adapted: dict[str, torch.Tensor]) -> torch.Tensor:
        """The full output: ``out`` (..., out_features) with each adapted slice replaced by ``adapted[name]``."""
        pieces, cursor = [], 0
        for name, s in sorted(self.slices.items(), key=lambda item: item[1].start):
            if s.start > cursor:
                pieces.append(out[..., cursor : s.start])
            pieces.append(adapted[name])
            cursor = s.stop
        if cursor < self.out_features:
            pieces.append(out[..., cursor:])
        return torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the updates into ``weight`` (exact: LoRA is linear in the input)."""
        if self.merged:
            return
        for name, s in self.slices.items():
            self.weight[s] += self.delta_weight(name).to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the updates from ``weight`` again."""
        if not self.merged:
            return
        for name, s in self.slices.items():
            self.weight[s] -= self.delta_weight(name).to(self.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return (
            f'in_features={self.in_features}, out_features={self.out_features}, '
            f'rank={self.rank}, scaling={self.scaling:g}, slices={list(self.slices)}'
        )


class LowRankMethod(BlockPlaceMethod):
    """What LoRA-style methods share: the options, the linears they wrap and their slices.

    A subclass states only :meth:`make_layer`, the wrapper it puts around one linear.

    Args:
        rank, alpha, dropout, targets, blocks, init: see :class:`~mmseg_sam.models.peft.lora.LoRA`.
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
        method = type(self).__name__
        self.targets = check_low_rank_options(method, rank, alpha, dropout, targets, init)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.dropout = dropout
        self.blocks = check_blocks(method, blocks)
        self.init = init

    def places(self) -> dict[str, list[str]]:
        return linear_places(self.targets)

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        check_linear_place(type(self).__name__, where, current)

    def build(self, place: str, spec: list[str], current: nn.Module | None, block: nn.Module) -> nn.Module:
        return self.make_layer(current, target_slices(spec, current))

    def make_layer(self, linear: nn.Linear, slices: dict[str, slice]) -> LoRALinear:
        """The wrapper of ``linear`` that adapts its output ``slices``."""
        raise NotImplementedError
