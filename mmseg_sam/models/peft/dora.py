"""DoRA (Liu et al., ICML 2024): weight-decomposed low-rank adaptation of frozen linear layers."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import PEFT_METHODS
from .low_rank import LoRALinear, LowRankMethod

__all__ = ['DoRA', 'DoRALinear']


class DoRALinear(LoRALinear):
    """A frozen linear whose adapted output rows are re-normalised to a learned magnitude.

    For each adapted slice s with frozen rows ``W0_s`` (n_s, in) and LoRA update
    ``dW_s = scaling * B_s A_s``: ``V_s = W0_s + dW_s`` and the adapted weight is
    ``W'_s = m_s * V_s / ||V_s||`` (L2 norm of each output row, ``m_s`` (n_s,) starts at
    ``||W0_s||``, so the layer starts as the frozen one). The output of the slice is
    ``b_s + (m_s / ||V_s||) * (W0_s x + dW_s dropout(x))``. With ``detach_norm`` (the
    paper's choice, Sec. 4.3) ``||V_s||`` is a constant in backward, which saves memory.
    Mergeable: ``merge()`` writes ``W'_s`` into the frozen rows and keeps the factor
    ``m_s / ||V_s||`` to undo it.

    Args:
        base: the linear layer to adapt.
        slices: adapted output ranges by name.
        rank, alpha, dropout, init: as :class:`LoRALinear`.
        detach_norm: treat ``||V_s||`` as a constant in backward.
    """

    def __init__(
        self,
        base: nn.Linear,
        slices: dict[str, slice],
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        init: str = 'kaiming',
        detach_norm: bool = True,
    ) -> None:
        super().__init__(base, slices, rank, alpha, dropout, init)
        self.detach_norm = detach_norm
        with torch.no_grad():
            self.magnitude = nn.ParameterDict(
                {name: nn.Parameter(self.weight[s].norm(dim=1).clone()) for name, s in self.slices.items()}
            )
        self._merge_factors: dict[str, torch.Tensor] = {}

    def _factor(self, name: str) -> torch.Tensor:
        """``m_s / ||W0_s + dW_s||`` (n_s,)."""
        norm = (self.weight[self.slices[name]] + self.delta_weight(name)).norm(dim=1)
        return self.magnitude[name] / (norm.detach() if self.detach_norm else norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)
        if self.merged:
            return out
        dropped = self.lora_dropout(x)
        adapted = {}
        for name, s in self.slices.items():
            frozen = F.linear(x, self.weight[s])  # W0_s x, (..., n_s)
            delta = self.lora_B[name](self._bottleneck(name, self.lora_A[name](dropped))) * self.scaling
            bias = 0 if self.bias is None else self.bias[s]
            adapted[name] = bias + self._factor(name) * (frozen + delta)
        return self.assemble(out, adapted)

    @torch.no_grad()
    def merge(self) -> None:
        """Write ``W'_s`` into the frozen rows (exact: the layer is linear in its input)."""
        if self.merged:
            return
        for name, s in self.slices.items():
            factor = self._factor(name)
            self.weight[s] = (factor[:, None] * (self.weight[s] + self.delta_weight(name))).to(
                self.weight.dtype
            )
            self._merge_factors[name] = factor
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the frozen rows: ``W0_s = W'_s / factor - dW_s``."""
        if not self.merged:
            return
        for name, s in self.slices.items():
            factor = self._merge_factors.pop(name)
            self.weight[s] = (self.weight[s] / factor[:, None] - self.delta_weight(name)).to(
                self.weight.dtype
            )
        self.merged = False

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, detach_norm={self.detach_norm}'


@PEFT_METHODS.register_module()
class DoRA(LowRankMethod):
    """Weight-decomposed low-rank adaptation of SAM ViT linear layers (mergeable).

    Same targets and options as LoRA, plus a trainable magnitude per adapted output row
    (see :class:`DoRALinear`). Parameters: LoRA's plus ``n_s`` per adapted slice; ViT-B
    with rank 4 on q and v: 147,456 + 18,432.

    Args:
        rank: rank of every update (> 0).
        alpha: ``scaling = alpha / rank``; defaults to ``rank``.
        dropout: dropout on the update's input, in [0, 1).
        targets: ``'qkv'`` or its slices ``'q'``, ``'k'``, ``'v'``, and ``'proj'``,
            ``'lin1'``, ``'lin2'``.
        blocks: block indices to adapt; all blocks when None.
        init: ``'kaiming'`` (B zero) or ``'xavier'``.
        detach_norm: treat the row norms as constants in backward (the paper's choice).
    """

    def __init__(self, *args: Any, detach_norm: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(detach_norm, bool):
            raise ValueError(f'DoRA detach_norm must be a bool, got {detach_norm!r}')
        self.detach_norm = detach_norm

    def make_layer(self, linear: nn.Linear, slices: dict[str, slice]) -> DoRALinear:
        return DoRALinear(linear, slices, self.rank, self.alpha, self.dropout, self.init, self.detach_norm)
