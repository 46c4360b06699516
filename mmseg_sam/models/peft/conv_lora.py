"""Conv-LoRA (Zhong et al., ICLR 2024): LoRA with a mixture of multi-scale convolution experts."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import is_fake
from torch.distributions.normal import Normal

from .aux_losses import report_aux_loss
from .base import (
    PEFT_METHODS,
    BlockPlaceMethod,
    check_blocks,
    check_positive_int,
    check_targets,
)
from .low_rank import LINEAR_TARGETS, LoRALinear, check_linear_place

__all__ = [
    'ConvLoRA',
    'ConvLoRALinear',
    'ConvExpert',
    'NoisyTopKGate',
    'conv_lora_layers',
    'cv_squared',
    'is_tracing',
    'has_values',
    'pop_expert_usage',
]


def is_tracing() -> bool:
    """Whether the current forward is being traced or exported, not run.

    True under ``torch.onnx.export`` (TorchScript- or dynamo-based), ``torch.export``
    and ``torch.jit.trace``: Conv-LoRA then dispatches densely, without the
    data-dependent Python loop over the selected experts.
    """
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def has_values(x: Tensor) -> bool:
    """Whether ``x`` holds data: False for meta and fake tensors (shape-only runs, e.g. a memory estimate)."""
    return not (x.is_meta or is_fake(x))


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation, ``var(x) / (mean(x)^2 + 1e-10)`` (unbiased var; 0 for one value)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + 1e-10)


class ConvExpert(nn.Module):
    """Resample the low-rank map by ``scale``, 3x3 conv + GELU, resample back (bicubic).

    Args:
        rank: channels of the low-rank map.
        scale: upsampling factor; 1 means no resampling.
    """

    def __init__(self, rank: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(rank, rank, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.bias)
        self.act = nn.GELU()

    def forward(self, z: Tensor) -> Tensor:
        """(N, r, H, W) -> (N, r, H, W)."""
        if self.scale == 1:
            return self.act(self.conv(z))
        h, w = z.shape[-2:]
        y = F.interpolate(z, scale_factor=self.scale, mode='bicubic', align_corners=False)
        y = self.act(self.conv(y))
        return F.interpolate(y, size=(h, w), mode='bicubic', align_corners=False)

    def extra_repr(self) -> str:
        return f'scale={self.scale}'


def _top_first(logits: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` largest logits per row, ties to the lower index.

    ``torch.topk`` orders ties arbitrarily (on CPU, all-equal rows come back from the
    highest index down) and ONNX ``TopK`` puts the lower index first, so neither is
    used: ``n`` rounds of argmax, whose tie rule (first maximum) PyTorch documents
    and ONNX ``ArgMax`` shares. Differentiable in the values, like ``topk``.

    Args:
        logits: (N, M).
        n: how many to take, <= M.

    Returns:
        tuple[Tensor, Tensor]: values (N, n), descending, and their indices (N, n).
    """
    values, indices = [], []
    remaining = logits
    for _ in range(n):
        index = remaining.argmax(dim=1, keepdim=True)  # (N, 1): the first maximum
        values.append(logits.gather(1, index))
        indices.append(index)
        remaining = remaining.scatter(1, index, float('-inf'))
    return torch.cat(values, dim=1), torch.cat(indices, dim=1)


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating (Shazeer et al., 2017) on a pooled low-rank map.

    ``clean = g @ w_gate``; in training ``noisy = clean + N(0, 1) * (softplus(g @ w_noise) + 0.01)``
    and the top-k of the noisy logits route; in eval the top-k of the clean logits.
    Ties go to the lower expert index (``torch.topk`` breaks ties in an unspecified
    order, and the zero-initialised gate ties everywhere; see :func:`_top_first`), so an
    exported model routes like PyTorch.
    Both matrices start at zero. Always computed in fp32.

    Args:
        rank: width of the gate input.
        num_experts: number of experts M.
        k: experts per sample.
        gate_grad: False (the reference): gates are the softmax over the k selected
            logits, so with k = 1 the gate value is exactly 1 and the task loss never
            reaches the gate (only the load-balancing loss trains it). True: gates
            are the softmax over all M logits, taken at the selected experts, so the
            task loss trains the gate too.
    """

    def __init__(self, rank: int, num_experts: int, k: int = 1, gate_grad: bool = False) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.k = k
        self.gate_grad = gate_grad
        self.w_gate = nn.Parameter(torch.zeros(rank, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(rank, num_experts))

    def forward(self, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Route samples.

        Args:
            g: (N, r) pooled low-rank map.

        Returns:
            tuple[Tensor, Tensor, Tensor]: gates (N, M) (zero for unselected experts),
            selected experts (N, k), and the per-expert load (M,) used by the
            balancing loss.
        """
        with torch.autocast(device_type=g.device.type, enabled=False):
            g = g.float()
            clean = g @ self.w_gate.float()  # (N, M)
            noisy_training = self.training and self.k < self.num_experts
            if noisy_training:
                noise_std = F.softplus(g @ self.w_noise.float()) + 0.01
                logits = clean + torch.randn_like(clean) * noise_std
            else:
                logits = clean
            top_logits, top_index = _top_first(logits, min(self.k + 1, self.num_experts))
            index = top_index[:, : self.k]
            if self.gate_grad:
                top_gates = logits.softmax(dim=1).gather(1, index)
            else:
                top_gates = top_logits[:, : self.k].softmax(dim=1)
            gates = torch.zeros_like(logits).scatter(1, index, top_gates)
            if noisy_training:
                load = self._prob_in_top_k(clean, logits, noise_std, top_logits).sum(0)
            else:
                load = (gates > 0).float().sum(0)
        return gates, index, load

    def _prob_in_top_k(self, clean: Tensor, noisy: Tensor, noise_std: Tensor, top_logits: Tensor) -> Tensor:
        """Differentiable probability that each expert is in the top-k under fresh noise (Shazeer)."""
        # Threshold to beat: the k-th largest noisy logit for experts already in, the
        # (k+1)-th for experts outside (for M = k there is no (k+1)-th: gated above).
        threshold_in = top_logits[:, self.k : self.k + 1]  # (N, 1)
        threshold_out = top_logits[:, self.k - 1 : self.k]
        is_in = noisy > threshold_in
        # No argument validation: it reads values, which a shape-only run (fake tensors) has not.
        normal = Normal(
            torch.zeros((), device=clean.device), torch.ones((), device=clean.device), validate_args=False
        )
        prob_in = normal.cdf((clean - threshold_in) / noise_std)
        prob_out = normal.cdf((clean - threshold_out) / noise_std)
        return torch.where(is_in, prob_in, prob_out)


class ConvLoRALinear(LoRALinear):
    """LoRA on a fused projection with a mixture of convolution experts in the bottleneck.

    For an input x of shape (N, H, W, C) (a batch of windows or of whole images, as
    SAM's attention feeds ``qkv``): ``z = W_e x`` (N, H, W, r), then
    ``h = W0 x + scaling * W_d(z + E_{e(n)}(z))`` with one expert e(n) per element n
    of the batch. Bottleneck slot transforms (COBOT) apply to z before the experts.
    Under ``self.training`` the layer reports its load-balancing loss
    ``balance_weight * (cv2(importance) + cv2(load))`` as ``loss_moe``
    (:func:`~mmseg_sam.models.peft.aux_losses.report_aux_loss`).

    Dispatch: by default each selected expert runs once on the samples routed to it
    (a Python loop over the experts present in the batch: data-dependent, so it
    cannot be traced). With ``dense_dispatch = True``, and always while the model is
    traced or exported (:func:`is_tracing`), every expert runs on every sample and
    the outputs are combined with ``where(selected, gate * expert(z), 0)``, accumulated
    in ascending expert order as the loop does: the same arithmetic per sample (bit
    for bit on one sample; on a batch, conv kernels picked by batch size may round
    differently in the last bits), at M times the expert compute. It is also valid
    in training (same gradients; unselected experts then get zero gradients instead
    of none).

    Args:
        base: the frozen linear layer.
        rank: low-rank width r.
        alpha: ``scaling = alpha / rank``.
        scales: one expert per entry, upsampling factor of its resampling.
        k: experts per sample.
        balance_weight: weight of the load-balancing loss (0.01 in the reference).
        gate_grad: let the gate value carry task gradient (see :class:`NoisyTopKGate`).
    """

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float,
        scales: Sequence[float],
        k: int = 1,
        balance_weight: float = 0.01,
        gate_grad: bool = False,
    ) -> None:
        super().__init__(base, {'qkv': slice(0, base.out_features)}, rank, alpha, dropout=0.0, init='kaiming')
        self.experts = nn.ModuleList(ConvExpert(rank, s) for s in scales)
        self.gate = NoisyTopKGate(rank, len(self.experts), k=k, gate_grad=gate_grad)
        self.balance_weight = balance_weight
        self.dense_dispatch = False  # run every expert on every sample (see the class docstring)
        self.needs_spatial_tokens = True  # the experts convolve the (N, H, W, r) map
        self.last_routing: Tensor | None = None  # (N, k) experts chosen in the last (untraced) forward

    def conditional_parameters(self) -> list[str]:
        """The experts (a sample runs only its top-k) and the gate (noise weights unused when k = M)."""
        return [
            f'{part}.{name}'
            for part in ('experts', 'gate')
            for name, param in getattr(self, part).named_parameters()
            if param.requires_grad
        ]

    def moe(self, z: Tensor) -> Tensor:
        """Route each batch element to its expert(s) and return the weighted expert outputs.

        Args:
            z: (N, H, W, r) low-rank map.

        Returns:
            Tensor: (N, H, W, r).
        """
        zc = z.permute(0, 3, 1, 2)  # (N, H, W, r) -> (N, r, H, W)
        gates, index, load = self.gate(zc.mean(dim=(2, 3)))  # pooled: (N, r)
        tracing = is_tracing()
        if not tracing:  # a traced index is symbolic: keeping it would leak it out of the trace
            self.last_routing = index.detach()
        if self.training:
            loss = self.balance_weight * (cv_squared(gates.sum(0)) + cv_squared(load))
            report_aux_loss('loss_moe', loss)
        out = torch.zeros_like(zc)
        if self.dense_dispatch or tracing:
            # Every expert on every sample; rows not routed to e add an exact zero.
            for e, expert in enumerate(self.experts):
                selected = (index == e).any(dim=1)[:, None, None, None]  # (N, 1, 1, 1)
                y = expert(zc)
                out = out + torch.where(selected, y * gates[:, e].to(y.dtype)[:, None, None, None], 0.0)
        else:
            # Each selected expert runs once on the samples routed to it.
            for e, rows in self._routes(index):
                y = self.experts[e](zc[rows])
                out = out.index_add(0, rows, y * gates[rows, e].to(y.dtype)[:, None, None, None])
        return out.permute(0, 2, 3, 1)  # (N, r, H, W) -> (N, H, W, r)

    def _routes(self, index: Tensor) -> list[tuple[int, Tensor]]:
        """(expert, rows routed to it) for each selected expert, from the (N, k) selection.

        A shape-only run (meta or fake tensors: :func:`has_values` is False) has no routing
        to read: every row goes to the ``k`` experts of the largest scales, the routing
        that keeps the most memory.
        """
        if not has_values(index):
            by_scale = sorted(range(len(self.experts)), key=lambda e: self.experts[e].scale)
            rows = torch.arange(index.shape[0], device=index.device)
            return [(e, rows) for e in by_scale[-index.shape[1] :]]
        return [(e, (index == e).any(dim=1).nonzero(as_tuple=True)[0]) for e in index.unique().tolist()]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(
                f'Conv-LoRA needs (N, H, W, C) inputs (the spatial map of a SAM block), got shape {tuple(x.shape)}'
            )
        out = F.linear(x, self.weight, self.bias)  # (N, H, W, C) -> (N, H, W, 3C)
        z = self._bottleneck('qkv', self.lora_A['qkv'](x))  # (N, H, W, r)
        z = z + self.moe(z)  # residual inside the bottleneck
        return out + self.lora_B['qkv'](z) * self.scaling

    def merge(self) -> None:
        raise NotImplementedError(
            'Conv-LoRA cannot be merged into the linear weight: its experts are convolutions with '
            'input-dependent routing'
        )

    unmerge = merge

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, experts={len(self.experts)}, k={self.gate.k}'


def conv_lora_layers(model: nn.Module) -> dict[str, ConvLoRALinear]:
    """The Conv-LoRA layers of ``model`` by qualified name, in module order.

    Raises:
        ValueError: ``model`` has none.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, ConvLoRALinear)}
    if not layers:
        raise ValueError(
            f'{type(model).__name__} has no Conv-LoRA layer (ConvLoRALinear): there is no expert routing '
            "to look at; use a model whose backbone.peft is dict(type='ConvLoRA', ...) or a COBOT on it"
        )
    return layers


def pop_expert_usage(model: nn.Module) -> dict[str, Tensor]:
    """Count the experts chosen in the last forward of each Conv-LoRA layer, then forget that routing.

    One routing decision is made per element of a layer's input batch (per window in
    SAM's windowed attention, per image in global attention and in MLPs), each picking
    ``k`` experts. Popping makes every forward count once.

    Args:
        model: a model with Conv-LoRA layers that has run a forward since the last pop.

    Returns:
        dict[str, Tensor]: layer name -> (M,) int64 counts; each sums to decisions * k.

    Raises:
        ValueError: no Conv-LoRA layer, or a layer that has not run since the last pop.
    """
    counts = {}
    for name, layer in conv_lora_layers(model).items():
        if layer.last_routing is None:
            raise ValueError(
                f'Conv-LoRA layer {name} has no routing to count: it has not run since the last pop'
            )
        routing = layer.last_routing.flatten().cpu()  # (N * k,)
        counts[name] = torch.bincount(routing, minlength=len(layer.experts))
        layer.last_routing = None
    return counts


@PEFT_METHODS.register_module()
class ConvLoRA(BlockPlaceMethod):
    """Conv-LoRA on SAM ViT blocks (defaults: the reference's qkv, r=3, alpha=32, 8 experts).

    Args:
        rank: low-rank width r (> 0).
        alpha: scaling numerator (``alpha / rank``); reference 32.
        num_experts: number of experts when ``scales`` is None: scales 1..num_experts.
        scales: explicit expert scales (each >= 1), overrides ``num_experts``.
        k: experts per sample, 1 <= k <= number of experts.
        balance_weight: weight of the load-balancing loss per block (0.01).
        gate_grad: let the gate value carry task gradient (off in the reference).
        targets: linears to adapt: ``'qkv'`` (the reference) and/or ``'proj'``,
            ``'lin1'``, ``'lin2'``; each gets its own bottleneck and experts.
        blocks: block indices to adapt; all when None.

    Note:
        Experts not selected in a step get no gradient; for multi-GPU training
        ``SAMDistributedDataParallel`` (the default wrapper of tools/train.py) turns on
        ``find_unused_parameters`` for models with Conv-LoRA.
    """

    _TARGETS = ('qkv', 'proj', 'lin1', 'lin2')  # whole linears (LINEAR_TARGETS): experts need every output

    def __init__(
        self,
        rank: int = 3,
        alpha: float = 32,
        num_experts: int = 8,
        scales: Sequence[float] | None = None,
        k: int = 1,
        balance_weight: float = 0.01,
        gate_grad: bool = False,
        targets: Sequence[str] = ('qkv',),
        blocks: Sequence[int] | None = None,
    ) -> None:
        check_positive_int('ConvLoRA', 'rank', rank)
        if alpha <= 0:
            raise ValueError(f'ConvLoRA alpha must be > 0, got {alpha!r}')
        if scales is None:
            if not isinstance(num_experts, int) or num_experts < 1:
                raise ValueError(f'ConvLoRA num_experts must be a positive int, got {num_experts!r}')
            scales = tuple(range(1, num_experts + 1))
        scales = tuple(scales)
        if not scales or any(not isinstance(s, (int, float)) or s < 1 or math.isnan(s) for s in scales):
            raise ValueError(f'ConvLoRA scales must be a non-empty list of numbers >= 1, got {list(scales)}')
        if not isinstance(k, int) or not 1 <= k <= len(scales):
            raise ValueError(f'ConvLoRA k must be in [1, {len(scales)}] (the number of experts), got {k!r}')
        if balance_weight < 0:
            raise ValueError(f'ConvLoRA balance_weight must be >= 0, got {balance_weight!r}')
        self.rank, self.alpha, self.scales, self.k = rank, float(alpha), scales, k
        self.balance_weight, self.gate_grad = balance_weight, gate_grad
        self.targets = check_targets('ConvLoRA', targets, self._TARGETS)
        self.blocks = check_blocks('ConvLoRA', blocks)

    def places(self) -> dict[str, str]:
        return {LINEAR_TARGETS[target][0]: target for target in self.targets}

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        check_linear_place('ConvLoRA', where, current)
        parent = block.get_submodule(place.rpartition('.')[0])
        if getattr(parent, 'adds_tokens', False):  # e.g. VPT's prompted attention
            raise ValueError(
                f'{where} belongs to a {type(parent).__name__} that adds prompt tokens: they are not '
                'a spatial map, so ConvLoRA experts cannot run on them'
            )

    def build(self, place: str, spec: str, current: nn.Module | None, block: nn.Module) -> ConvLoRALinear:
        return ConvLoRALinear(
            current, self.rank, self.alpha, self.scales, self.k, self.balance_weight, self.gate_grad
        )
