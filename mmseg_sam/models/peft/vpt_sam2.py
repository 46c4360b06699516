"""VPT on SAM 2.1's Hiera: the prompted version of sam2's ``MultiScaleAttention``."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sam2_modeling import sam2_modeling
from .base import PEFTLayerMixin
from .vpt import add_prompt_tokens, register_prompted_attention

__all__ = ['PromptedMultiScaleAttention']


@register_prompted_attention('sam2.modeling.backbones.hieradet.MultiScaleAttention')
class PromptedMultiScaleAttention(nn.Module, PEFTLayerMixin):
    """SAM 2's Hiera attention (sam2's ``MultiScaleAttention``) with P learnable prompt keys and values.

    It computes what sam2's ``MultiScaleAttention`` computes, with the prompts. It takes over the wrapped attention's ``qkv`` and ``proj`` (and its query pooling),
    so the base state-dict keys do not change; the only new parameter is
    ``prompt_tokens`` (P, C_in). The prompts are projected by the frozen ``qkv`` into P
    extra keys and values, shared by every window and image; the (pooled) queries are
    only the grid tokens, so the output keeps its shape. Hiera has no relative-position
    bias, so one fused attention over the h*w + P keys computes it.

    Args:
        base: the attention to prompt.
        num_tokens: number of prompt tokens P (> 0).
        init_bound: prompts start uniform in ``[-init_bound, init_bound]``.
        dropout: dropout probability on the prompt tokens.
    """

    adds_tokens = True  # its qkv sees the P prompt tokens with the spatial ones (PEFTLayerMixin)

    def __init__(self, base: nn.Module, num_tokens: int, init_bound: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim, self.dim_out, self.num_heads = base.dim, base.dim_out, base.num_heads
        self.q_pool = base.q_pool
        self.qkv, self.proj = base.qkv, base.proj
        add_prompt_tokens(self, base.qkv, num_tokens, init_bound, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C_in) windows or images -> (N, H', W', C_out) (H' = H / q_stride where queries pool)."""
        n, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(n, h * w, 3, self.num_heads, -1)  # (N, H*W, 3, nHead, c)
        q, k, v = torch.unbind(qkv, 2)  # each (N, H*W, nHead, c)
        if self.q_pool:
            q = sam2_modeling().do_pool(
                q.reshape(n, h, w, -1), self.q_pool
            )  # (N, H, W, C_out) -> (N, H', W', C_out)
            h, w = q.shape[1:3]
            q = q.reshape(n, h * w, self.num_heads, -1)
        prompts = self.prompt_dropout(self.prompt_tokens)
        num_tokens = prompts.shape[0]
        # (P, C_in) -> (P, 3, nHead, c); the same prompts for every element of N
        prompt_qkv = self.qkv(prompts).reshape(num_tokens, 3, self.num_heads, -1)
        k = torch.cat([k, prompt_qkv[None, :, 1].expand(n, -1, -1, -1)], dim=1)  # (N, H*W + P, nHead, c)
        v = torch.cat([v, prompt_qkv[None, :, 2].expand(n, -1, -1, -1)], dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(n, h, w, -1)  # (N, nHead, H'*W', c) -> (N, H', W', C_out)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f'num_tokens={self.prompt_tokens.shape[0]}, q_pool={self.q_pool is not None}'
