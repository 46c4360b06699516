"""Cross-block orchestration (COBOT, Peng et al., CVPR 2024) on top of a host PEFT method."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .base import PEFT_METHODS, BasePEFTMethod, PEFTLayerMixin, build_peft_method, check_choices

__all__ = ['COBOT', 'COBOTShared', 'COBOTSlot', 'QuaternionLinear']

# Signs and component of each (row, column) block of the quaternion weight, row-vector
# convention (y = x W): row r lists the components P_r, P_i, P_j, P_k as they appear.
_QUATERNION_BLOCKS = (
    ((+1, 0), (+1, 1), (+1, 2), (+1, 3)),
    ((-1, 1), (+1, 0), (+1, 3), (-1, 2)),
    ((-1, 2), (-1, 3), (+1, 0), (+1, 1)),
    ((-1, 3), (+1, 2), (-1, 1), (+1, 0)),
)


class QuaternionLinear(nn.Module):
    """Quaternion (PHM, n = 4) linear map V -> V without bias, ``y = x W``.

    ``W = sum_a H_a kron P_a`` with the fixed signed permutations H_a of quaternion
    algebra and four learnable (V/4, V/4) components (V^2/4 parameters). Reference
    init: P_r = 0, P_i, P_j, P_k ~ U[0, 1).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        if width % 4:
            raise ValueError(f'a quaternion head needs a width divisible by 4, got {width}')
        n = width // 4
        components = torch.rand(4, n, n)
        components[0] = 0.0
        self.components = nn.Parameter(components)  # (4, V/4, V/4): r, i, j, k

    def weight(self) -> Tensor:
        """The (V, V) matrix W of ``y = x W``."""
        rows = [
            torch.cat([sign * self.components[c] for sign, c in row], dim=1) for row in _QUATERNION_BLOCKS
        ]
        return torch.cat(rows, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight().to(x.dtype)


class _LinearHead(nn.Module):
    """Plain (V, V) linear head, ``y = x W``, initialised to the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.eye(width))

    def weight(self) -> Tensor:
        return self.w

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.w.to(x.dtype)


class COBOTShared(nn.Module):
    """The parameters shared by all slots: C (V x T, ones) and the relation S (T x T, identity).

    Args:
        width: slot width V.
        num_slots: number of slots T.
        normalize_relation: use a row-softmax of S instead of S (an option the paper
            leaves open; off in the reference).
    """

    def __init__(self, width: int, num_slots: int, normalize_relation: bool = False) -> None:
        super().__init__()
        self.C = nn.Parameter(torch.ones(width, num_slots))
        self.S = nn.Parameter(torch.eye(num_slots))
        self.normalize_relation = normalize_relation

    def coefficients(self) -> Tensor:
        """(V, T) cross-block mixed coefficients ``C @ S``."""
        relation = self.S.softmax(dim=1) if self.normalize_relation else self.S
        return self.C @ relation


class COBOTSlot(nn.Module):
    """COBOT's transform of one slot's bottleneck activations h (..., V).

    ``form='summed'`` (reference): ``h -> head(h * (c_t + gamma_t))``;
    ``form='two_branch'`` (our reading of the paper's Eq. 17, the block-local branch
    bypassing the head): ``h -> head(h * c_t) + h * gamma_t``. Both are linear in h,
    so a mergeable host stays mergeable (:meth:`matrix`).
    """

    def __init__(self, shared: COBOTShared, index: int, width: int, head: str, form: str) -> None:
        super().__init__()
        self._shared = (shared,)  # not a submodule: C and S live once, in COBOTShared
        self.index = index
        self.form = form
        self.gamma = nn.Parameter(torch.ones(width))
        self.cobot_head = QuaternionLinear(width) if head == 'quaternion' else _LinearHead(width)

    def _coefficient(self) -> Tensor:
        return self._shared[0].coefficients()[:, self.index]  # (V,)

    def forward(self, h: Tensor) -> Tensor:
        c = self._coefficient().to(h.dtype)
        gamma = self.gamma.to(h.dtype)
        if self.form == 'summed':
            return self.cobot_head(h * (c + gamma))
        return self.cobot_head(h * c) + h * gamma

    def matrix(self) -> Tensor:
        """M with ``forward(h) == h @ M.T``."""
        w = self.cobot_head.weight()
        c = self._coefficient()
        if self.form == 'summed':
            return (torch.diag(c + self.gamma) @ w).T
        return (torch.diag(c) @ w).T + torch.diag(self.gamma)

    def extra_repr(self) -> str:
        return f'slot={self.index}, form={self.form!r}'


@PEFT_METHODS.register_module()
class COBOT(BasePEFTMethod):
    """Cross-block orchestration of a host method's low-rank slots.

    The host is injected first; every bottleneck slot it creates (LoRA: one per
    adapted q/k/v slice; AdaptFormer: one per block; Conv-LoRA: the qkv bottleneck,
    before the experts) gets a :class:`COBOTSlot`, in block order. The shared C and S
    are stored as the backbone's ``cobot`` module. Extra parameters:
    ``V*T + T^2 + T*V + T*V^2/4`` with the quaternion head.

    Learning rate: the reference trains C, S and the heads at 100x the base rate;
    their parameter names contain ``cobot`` (``backbone.cobot.C``,
    ``...slot_transforms.q.cobot_head.components``), so
    ``paramwise_cfg=dict(custom_keys={'cobot': dict(lr_mult=100.0)})`` does that.

    Args:
        host: the host method's config (``dict(type='LoRA', ...)``, ``'AdaptFormer'``,
            ``'ConvLoRA'`` or any method whose layers expose bottleneck slots).
        head: ``'quaternion'`` (reference) or ``'linear'``.
        form: ``'summed'`` (reference) or ``'two_branch'``.
        normalize_relation: row-softmax of S (off in the reference).
    """

    def __init__(
        self,
        host: Mapping[str, Any],
        head: str = 'quaternion',
        form: str = 'summed',
        normalize_relation: bool = False,
    ) -> None:
        if not isinstance(host, Mapping) or 'type' not in host:
            raise TypeError(f'COBOT host must be a PEFT config dict with a "type", got {host!r}')
        if host['type'] == 'COBOT':
            raise ValueError('COBOT cannot host itself')
        check_choices('COBOT head', [head], ('quaternion', 'linear'))
        check_choices('COBOT form', [form], ('summed', 'two_branch'))
        self.host = dict(host)
        self.head = head
        self.form = form
        self.normalize_relation = normalize_relation

    @property
    def mergeable(self) -> bool:  # type: ignore[override]
        """COBOT's slot transforms are linear: it merges exactly when its host does."""
        host = PEFT_METHODS.get(self.host['type'])
        return bool(host is not None and host.mergeable)

    @property
    def needs_places(self) -> tuple[str, ...]:  # type: ignore[override]
        """The backbone-level places its host needs."""
        host = PEFT_METHODS.get(self.host['type'])
        return tuple(host.needs_places) if host is not None else ()

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        if PEFT_METHODS.get(self.host['type']) is None:
            raise ValueError(
                f'unknown COBOT host type {self.host["type"]!r}; registered: {sorted(PEFT_METHODS.module_dict)}'
            )
        if hasattr(model, 'cobot'):
            raise ValueError('the model already has COBOT injected')
        params = dict(build_peft_method(self.host).inject(model))
        host_param_ids = {id(p) for p in params.values()}
        slots = []
        for name, module in model.named_modules():
            if isinstance(module, PEFTLayerMixin) and any(
                id(p) in host_param_ids for p in module.parameters()
            ):
                slots += [(name, module, slot, width) for slot, width in module.bottleneck_slots().items()]
        if not slots:
            raise ValueError(f'COBOT host {self.host["type"]!r} created no bottleneck slots to orchestrate')
        widths = {width for *_, width in slots}
        if len(widths) != 1:
            raise ValueError(f'COBOT needs slots of one width, the host made widths {sorted(widths)}')
        (width,) = widths
        if self.head == 'quaternion' and width % 4:
            raise ValueError(
                f'COBOT with a quaternion head needs a slot width (rank / bottleneck) divisible by 4, '
                f'got {width} from host {self.host["type"]!r}'
            )
        shared = COBOTShared(width, len(slots), self.normalize_relation)
        model.cobot = shared
        params.update({f'cobot.{n}': p for n, p in shared.named_parameters()})
        for index, (name, module, slot, _) in enumerate(slots):
            transform = COBOTSlot(shared, index, width, self.head, self.form)
            module.slot_transforms[slot] = transform
            for n, p in transform.named_parameters():
                params[f'{name}.slot_transforms.{slot}.{n}'] = p
        return params
