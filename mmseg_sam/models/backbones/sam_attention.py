"""SAM's attention with decomposed relative positions, computed eagerly or by fused SDPA.

segment_anything's ``Attention`` materialises the (N x N) logits of every head, adds
the decomposed relative-position bias (another N x N tensor) and keeps both for the
backward pass. :class:`SAMAttention` computes the same function three ways:

- ``'eager'``: segment_anything's code, unchanged.
- ``'sdpa'``: ``F.scaled_dot_product_attention`` with the bias as a float
  ``attn_mask``. The (N x N) bias is still built; a fused kernel avoids keeping the
  probabilities (on CPU only when the bias needs no gradient, i.e. in inference).
- ``'folded'``: the bias is folded into the dot product, so nothing of size N x N is
  built. With ``rel_h[t, i'] = q_t . R_h[i_t, i']`` and ``rel_w[t, j'] = q_t . R_w[j_t, j']``
  (t = (i_t, j_t) a query token)::

      q'_t = [scale * q_t, rel_h[t, :], rel_w[t, :]]        (c + H + W)
      k'_s = [k_s, onehot_H(i_s), onehot_W(j_s)]             (c + H + W)
      q'_t . k'_s = scale * q_t . k_s + rel_h[t, i_s] + rel_w[t, j_s]

  which SDPA gets with ``scale=1``. Both are zero-padded to a multiple of 8 columns,
  and ``v`` to the same head dim (fused kernels need equal dims; the padding is sliced
  off the output). VPT's prompt keys get zero indicators, hence no bias. In training,
  backward keeps ``q``, ``k``, ``v`` and the output's ``c`` columns rather than the
  kernel's augmented, padded tensors (4c instead of 4 x (c + H + W) columns per head
  and token), and rebuilds those when it needs them (see
  :func:`_attention_saving_sources`); the gradients are the same bits.

A layer may use a second implementation, ``grad_impl``, whenever the bias needs a
gradient (grad enabled and the queries or the tables require grad: a training step
through an adapted block). SAMViT's ``'auto'`` uses ``'sdpa'`` in windowed blocks for
inference and ``'folded'`` for training: with a mask that needs a gradient the CPU
kernel falls back to plain math attention, which keeps the (N x N) probabilities and
bias of every window and head for backward; the folded form has no mask and runs the
fused kernel in training too.
"""

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sam_modeling import Attention

__all__ = [
    'ATTN_IMPLS',
    'FUSED_IMPLS',
    'SAMAttention',
    'check_attn_impl',
    'decomposed_rel_pos',
    'rel_pos_attention',
]

ATTN_IMPLS = ('eager', 'sdpa', 'folded')
FUSED_IMPLS = ('sdpa', 'folded')  # the implementations that grad_impl may name

# segment_anything's interpolating lookup of a relative-position table.
get_rel_pos = importlib.import_module(Attention.__module__).get_rel_pos


def check_attn_impl(attn_impl: object, allowed: tuple[str, ...] = ATTN_IMPLS) -> str:
    """Return ``attn_impl`` if it is one of ``allowed``, else raise naming it."""
    if not isinstance(attn_impl, str):
        raise TypeError(f'attn_impl must be a str, one of {list(allowed)}, got {type(attn_impl).__name__}')
    if attn_impl not in allowed:
        raise ValueError(f'attn_impl must be one of {list(allowed)}, got {attn_impl!r}')
    return attn_impl


def decomposed_rel_pos(
    q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, hw: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """The two terms of SAM's decomposed relative-position bias (MViTv2), per query.

    Same math as segment_anything's ``add_decomposed_rel_pos`` for equal query and key
    grids: the bias of query t and key s is ``rel_h[t, i_s] + rel_w[t, j_s]``.

    Args:
        q: (..., H*W, c) unscaled queries.
        rel_pos_h: (Lh, c) table, interpolated to 2H - 1 rows if needed.
        rel_pos_w: (Lw, c) table, interpolated to 2W - 1 rows if needed.
        hw: the grid (H, W).

    Returns:
        tuple[Tensor, Tensor]: rel_h (..., H*W, H) and rel_w (..., H*W, W).
    """
    h, w = hw
    table_h = get_rel_pos(h, h, rel_pos_h)  # (H, H, c): [query row, key row]
    table_w = get_rel_pos(w, w, rel_pos_w)  # (W, W, c)
    grid_q = q.unflatten(-2, (h, w))  # (..., H*W, c) -> (..., H, W, c)
    rel_h = torch.einsum('...hwc,hkc->...hwk', grid_q, table_h)  # (..., H, W, H)
    rel_w = torch.einsum('...hwc,wkc->...hwk', grid_q, table_w)  # (..., H, W, W)
    return rel_h.flatten(-3, -2), rel_w.flatten(-3, -2)  # (..., H*W, H), (..., H*W, W)


def _pad_last(x: Tensor, size: int) -> Tensor:
    """Zero-pad the last dim of ``x`` to ``size``."""
    return x if x.shape[-1] == size else F.pad(x, (0, size - x.shape[-1]))


def rel_pos_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    impl: str,
    rel_pos: tuple[Tensor, Tensor] | None = None,
    hw: tuple[int, int] | None = None,
    extra_k: Tensor | None = None,
    extra_v: Tensor | None = None,
) -> Tensor:
    """Softmax attention of grid tokens with SAM's decomposed rel-pos bias, by SDPA.

    Args:
        q: (B, nHead, H*W, c) unscaled queries.
        k: (B, nHead, H*W, c) grid keys.
        v: (B, nHead, H*W, c) grid values.
        scale: the multiplier of ``q . k`` (the bias is not scaled).
        impl: ``'sdpa'`` (bias as a float mask) or ``'folded'`` (bias folded into q, k).
        rel_pos: (rel_pos_h, rel_pos_w) tables, or None for no bias.
        hw: the grid (H, W); required with ``rel_pos``.
        extra_k: (B, nHead, P, c) keys without a position (VPT prompts), appended
            after the grid keys; they get no bias.
        extra_v: (B, nHead, P, c) their values.

    Returns:
        Tensor: (B, nHead, H*W, c).
    """
    assert impl in ('sdpa', 'folded'), impl
    assert (extra_k is None) == (extra_v is None)
    if extra_k is not None:
        num_extra = extra_k.shape[-2]
    if rel_pos is None:
        if extra_k is not None:
            k, v = torch.cat([k, extra_k], dim=-2), torch.cat([v, extra_v], dim=-2)
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    assert hw is not None
    h, w = hw
    if impl == 'sdpa':
        rel_h, rel_w = decomposed_rel_pos(q, *rel_pos, hw)  # (B, nHead, H*W, H), (B, nHead, H*W, W)
        # (B, nHead, H*W, H, 1) + (B, nHead, H*W, 1, W) -> (B, nHead, H*W, H*W)
        bias = (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).flatten(-2)
        if extra_k is not None:
            bias = F.pad(bias, (0, num_extra))  # prompt columns: no bias
            k, v = torch.cat([k, extra_k], dim=-2), torch.cat([v, extra_v], dim=-2)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale)

    head_dims = q.shape[-1]
    # Augmented head dim, rounded up to a multiple of 8 (zero columns add nothing) for fused kernels.
    dims = -(-(head_dims + h + w) // 8) * 8
    pad = dims - (head_dims + h + w)

    def augment_q(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor) -> Tensor:
        rel_h, rel_w = decomposed_rel_pos(q, rel_pos_h, rel_pos_w, hw)  # (B, nHead, H*W, H), (.., W)
        # (B, nHead, H*W, c) + (.., H) + (.., W + pad) -> (B, nHead, H*W, dims)
        return torch.cat([q * scale, rel_h.to(q.dtype), F.pad(rel_w.to(q.dtype), (0, pad))], dim=-1)

    def augment_k(k: Tensor, extra_k: Tensor | None) -> Tensor:
        eye_h = torch.eye(h, device=k.device, dtype=k.dtype)
        eye_w = torch.eye(w, device=k.device, dtype=k.dtype)
        # Token (i, j) -> [onehot_H(i), onehot_W(j), 0]: (H*W, H) + (H*W, W) -> (H*W, dims - c)
        position = F.pad(torch.cat([eye_h.repeat_interleave(w, dim=0), eye_w.repeat(h, 1)], dim=-1), (0, pad))
        k_aug = torch.cat([k, position.expand(*k.shape[:-2], -1, -1)], dim=-1)  # (B, nHead, H*W, dims)
        if extra_k is not None:
            k_aug = torch.cat([k_aug, _pad_last(extra_k, dims)], dim=-2)  # prompts: zero indicators
        return k_aug

    def pad_v(v: Tensor, extra_v: Tensor | None) -> Tensor:
        # Fused kernels need one head dim for q, k and v: zero-pad v, drop its padding from the output.
        return _pad_last(v if extra_v is None else torch.cat([v, extra_v], dim=-2), dims)

    inputs = (
        (augment_q, (q, *rel_pos)),
        (augment_k, (k, extra_k)),
        (pad_v, (v, extra_v)),
    )
    return _attention_saving_sources(inputs, head_dims)


class _Rebuild:
    """A saved tensor kept as the narrower tensors it was built from, rebuilt in backward."""

    def __init__(
        self,
        build: Callable[..., Tensor],
        sources: tuple[Tensor | None, ...],
        autocast: tuple[str, bool, torch.dtype],
    ) -> None:
        self.build = build
        self.sources = sources
        self.versions = [None if t is None else t._version for t in sources]
        self.autocast = autocast  # (device type, enabled, dtype) of the forward

    def unpack(self) -> Tensor:
        for t, version in zip(self.sources, self.versions):
            if t is not None and t._version != version:
                raise RuntimeError(
                    'a tensor that the folded attention rebuilds its saved inputs from was modified '
                    f'in place after the forward (version {version} -> {t._version}, shape {tuple(t.shape)})'
                )
        device_type, enabled, dtype = self.autocast
        # Backward runs outside autocast: the rebuild re-enters the forward's autocast state.
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            return self.build(*self.sources)


class _Keep:
    """A saved tensor kept as is; the attention's output is kept without its zero columns."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor
        self.layout: tuple[torch.Size, tuple[int, ...]] | None = None  # (shape, strides) when narrowed

    def narrow_to(self, head_dims: int) -> Tensor:
        """Keep only the first ``head_dims`` columns (the rest are exactly zero); return them."""
        self.layout = (self.tensor.shape, self.tensor.stride())
        self.tensor = self.tensor[..., :head_dims].contiguous()
        return self.tensor

    def unpack(self) -> Tensor:
        if self.layout is None:
            return self.tensor
        # The output as the kernel made it: same shape and strides, zero columns after head_dims.
        full = self.tensor.new_empty_strided(*self.layout).zero_()
        full[..., : self.tensor.shape[-1]] = self.tensor
        return full


def _attention_saving_sources(
    inputs: tuple[tuple[Callable[..., Tensor], tuple[Tensor | None, ...]], ...], head_dims: int
) -> Tensor:
    """SDPA of the folded inputs, keeping for backward the tensors they are built from.

    The fused kernel saves its augmented inputs and its padded output for backward. Held
    as such, a windowed block of ViT-B keeps 4 x 96 columns per head and token, a global
    one 4 x 192. Kept as ``q``, ``k``, ``v`` (views of one ``qkv`` product, which the
    rel-pos tables turn into ``rel_h`` and ``rel_w`` again) and the output's ``c``
    columns, it is 4 x 64 in both: the rel-pos products (about 1% of a block's
    multiply-adds) and the concatenations are re-run under the forward's autocast state
    when backward asks for them (same operators, same bits), and the output's zero
    columns are padded back. Autograd's saved-tensor hooks do the swap, so the gradient
    is the kernel's own on any device.

    Only where no other saved-tensor hooks are active: inside ``torch.utils.checkpoint``
    (``with_cp``) or ``torch.autograd.graph.save_on_cpu`` the outer hooks decide what is
    kept, and the tensors are saved as they are; under ``torch.compile`` the compiler does.

    Args:
        inputs: ``(build, sources)`` of the query, key and value: ``build(*sources)``.
        head_dims: the columns of the output to return (the rest is v's zero padding).

    Returns:
        Tensor: (B, nHead, H*W, head_dims).
    """
    q_aug, k_aug, v_pad = (build(*sources) for build, sources in inputs)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q_aug, k_aug, v_pad))
    if (
        not needs_grad
        or torch.compiler.is_compiling()  # AOTAutograd decides what a compiled graph keeps
        or torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
    ):
        return F.scaled_dot_product_attention(q_aug, k_aug, v_pad, scale=1.0)[..., :head_dims]
    device_type = q_aug.device.type
    # Read here: inside the kernel's autocast wrapper, where the hooks run, autocast reads as off.
    autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    # Autograd holds the hooks as long as the graph: what they reach is dropped after the call,
    # so that only what a saved tensor was packed into stays.
    recipes = [(tensor, build, sources) for tensor, (build, sources) in zip((q_aug, k_aug, v_pad), inputs)]
    kept: list[_Keep] = []

    def pack(t: Tensor) -> _Rebuild | _Keep:
        for tensor, build, sources in recipes:
            if t is tensor:
                return _Rebuild(build, sources, autocast)
        kept.append(_Keep(t))  # e.g. autocast's casts of the inputs, the log-sum-exp
        return kept[-1]

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved.unpack()):
        out = F.scaled_dot_product_attention(q_aug, k_aug, v_pad, scale=1.0)
    del q_aug, k_aug, v_pad
    recipes.clear()
    saved_out = [saved for saved in kept if saved.tensor is out]
    kept.clear()
    return saved_out[0].narrow_to(head_dims) if saved_out else out[..., :head_dims]


class SAMAttention(Attention):
    """segment_anything's ``Attention`` with a choice of implementation, same parameters.

    It takes over the wrapped attention's ``qkv``, ``proj``, ``rel_pos_h`` and
    ``rel_pos_w`` under the same names, so state-dict keys (``blocks.0.attn.qkv.weight``)
    stay SAM's and official checkpoints load unchanged. All implementations compute
    segment_anything's function (see the module docstring); only speed and memory
    differ.

    Args:
        base: the attention whose parameters to use.
        attn_impl: ``'eager'`` (segment_anything's code), ``'sdpa'`` (fused
            attention, bias as a float mask) or ``'folded'`` (fused attention, bias
            folded into augmented queries and keys: no N x N tensor).
        grad_impl: ``'sdpa'`` or ``'folded'`` to use instead of ``attn_impl`` when the
            bias needs a gradient (see the module docstring); None: always ``attn_impl``.
    """

    def __init__(self, base: Attention, attn_impl: str = 'folded', grad_impl: str | None = None) -> None:
        if not isinstance(base, Attention):
            raise TypeError(f'SAMAttention wraps a segment_anything Attention, got {type(base).__name__}')
        nn.Module.__init__(self)
        self.attn_impl = check_attn_impl(attn_impl)
        if grad_impl is not None:
            check_attn_impl(grad_impl, FUSED_IMPLS)
            if attn_impl == 'eager':
                raise ValueError(
                    f"grad_impl={grad_impl!r} needs a fused attn_impl ('sdpa' or 'folded'), got 'eager'"
                )
        self.grad_impl = grad_impl
        self.num_heads = base.num_heads
        self.scale = base.scale
        self.use_rel_pos = base.use_rel_pos
        self.qkv = base.qkv
        self.proj = base.proj
        if self.use_rel_pos:
            self.rel_pos_h = base.rel_pos_h
            self.rel_pos_w = base.rel_pos_w

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of a token grid.

        Args:
            x: (B, H, W, C).

        Returns:
            tuple[Tensor, Tensor, Tensor]: q, k, v, each (B, nHead, H*W, C/nHead).
        """
        B, H, W, _ = x.shape
        # (B, H, W, C) -> (B, H*W, 3, nHead, c) -> (3, B, nHead, H*W, c)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def project_out(self, out: Tensor, hw: tuple[int, int]) -> Tensor:
        """Merge heads and project: (B, nHead, H*W, c) -> (B, H, W, C)."""
        B = out.shape[0]
        # (B, nHead, H*W, c) -> (B, H*W, nHead, c) -> (B, H, W, C)
        out = out.transpose(1, 2).reshape(B, *hw, -1)
        return self.proj(out)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        hw: tuple[int, int],
        extra_k: Tensor | None = None,
        extra_v: Tensor | None = None,
    ) -> Tensor:
        """Fused attention of the grid (:func:`rel_pos_attention` with this layer's tables)."""
        rel_pos = (self.rel_pos_h, self.rel_pos_w) if self.use_rel_pos else None
        return rel_pos_attention(q, k, v, self.scale, self.impl_for(q), rel_pos, hw, extra_k, extra_v)

    def impl_for(self, q: Tensor) -> str:
        """The implementation for queries ``q``: ``grad_impl`` when the bias needs a gradient."""
        if self.grad_impl is None or not torch.is_grad_enabled():
            return self.attn_impl
        needs_grad = q.requires_grad or (
            self.use_rel_pos and (self.rel_pos_h.requires_grad or self.rel_pos_w.requires_grad)
        )
        return self.grad_impl if needs_grad else self.attn_impl

    def forward(self, x: Tensor) -> Tensor:
        """Attention over a token grid.

        Args:
            x: (B, H, W, C): windows x images (windowed blocks) or images (global).

        Returns:
            Tensor: (B, H, W, C).
        """
        if self.attn_impl == 'eager':
            return super().forward(x)
        hw = (x.shape[1], x.shape[2])
        q, k, v = self.project_qkv(x)
        return self.project_out(self.attend(q, k, v, hw), hw)

    def extra_repr(self) -> str:
        grad = '' if self.grad_impl is None else f', grad_impl={self.grad_impl!r}'
        return f'num_heads={self.num_heads}, attn_impl={self.attn_impl!r}{grad}'
