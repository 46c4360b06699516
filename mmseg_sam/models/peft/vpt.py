"""Visual Prompt Tuning (Jia et al., ECCV 2022) for SAM's ViT and SAM 2's Hiera: learnable prefix keys and values.

SAM's blocks attend on a (B, H, W, C) grid, in padded windows or globally, with a
decomposed relative-position bias, so prompts cannot simply be appended to a token
sequence. Here the P prompt tokens of a block act as a prefix of every attention call
of that block: they are projected by the block's frozen ``qkv`` into P extra keys and
values, shared by every window and image; queries are only the grid tokens, so the
attention output keeps its shape, and the relative-position bias applies to grid-grid
pairs only. The prompted attention keeps the implementation of the attention it wraps
(see :class:`~mmseg_sam.models.backbones.sam_attention.SAMAttention`): with ``'sdpa'``
the prompt columns of the bias mask are zero, with ``'folded'`` the prompt keys get
zero position indicators, so prompts are unbiased on every path.

VPT prompts an attention for which a prompted version is registered
(:func:`register_prompted_attention`): SAM's ``Attention`` here, sam2's
``MultiScaleAttention`` in ``vpt_sam2.py`` (:class:`PromptedMultiScaleAttention`: the
prompts join every attention call after the queries are pooled where a stage begins;
Hiera has no relative-position bias). A new backbone family whose blocks use another
attention registers its prompted version in a file of its own in this package.
"""

import importlib
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..backbones.sam_attention import SAMAttention
from ..sam_modeling import Attention
from .base import (
    PEFT_METHODS,
    BlockPlaceMethod,
    PEFTLayerMixin,
    block_prefix,
    check_blocks,
    check_choices,
)

__all__ = [
    'VPT',
    'PromptedAttention',
    'add_prompt_tokens',
    'prompted_attention_class',
    'register_prompted_attention',
]

# segment_anything's decomposed rel-pos bias, from the module that defines Attention
# (imported through ..sam_modeling, which works without torchvision).
add_decomposed_rel_pos = importlib.import_module(Attention.__module__).add_decomposed_rel_pos

_MODES = ('deep', 'shallow')

# ``module.QualName`` of an attention class -> the prompted version VPT puts in its place
_PROMPTED_ATTENTIONS: dict[str, type[nn.Module]] = {}


def add_prompt_tokens(
    attention: nn.Module, qkv: nn.Linear, num_tokens: int, init_bound: float, dropout: float
) -> None:
    """Give a prompted attention its ``prompt_tokens`` (P, qkv input width), uniform in
    ``[-init_bound, init_bound]`` on ``qkv``'s device and dtype, and its ``prompt_dropout``."""
    weight = qkv.weight
    attention.prompt_tokens = nn.Parameter(
        torch.empty(num_tokens, qkv.in_features, device=weight.device, dtype=weight.dtype)
    )
    nn.init.uniform_(attention.prompt_tokens, -init_bound, init_bound)
    attention.prompt_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()


def _qualified(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


def register_prompted_attention(attention: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: the decorated module is VPT's prompted version of ``attention`` and its subclasses.

    Args:
        attention: the attention class's ``module.QualName``
            (``'sam2.modeling.backbones.hieradet.MultiScaleAttention'``); a name, so that
            the class's package is not imported to register it. The prompted class is
            built as ``cls(attention_module, num_tokens, init_bound, dropout)``.
    """

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if attention in _PROMPTED_ATTENTIONS:
            raise KeyError(
                f'{attention} already has a prompted version: {_PROMPTED_ATTENTIONS[attention].__name__}'
            )
        _PROMPTED_ATTENTIONS[attention] = cls
        return cls

    return register


def prompted_attention_class(attention: nn.Module | None) -> type[nn.Module] | None:
    """VPT's prompted version of ``attention`` (the first registered class on its MRO), or None."""
    for cls in type(attention).__mro__:
        found = _PROMPTED_ATTENTIONS.get(_qualified(cls))
        if found is not None:
            return found
    return None


@register_prompted_attention(_qualified(Attention))  # segment_anything's, and SAMAttention
class PromptedAttention(SAMAttention, PEFTLayerMixin):
    """SAM's attention with P learnable prompt tokens as extra keys and values.

    It takes over the wrapped attention's ``qkv``, ``proj``, ``rel_pos_h`` and
    ``rel_pos_w`` under the same names, so the base state-dict keys do not change
    (``blocks.0.attn.qkv.weight``); the only new parameter is ``prompt_tokens`` (P, C).
    For an input (N, h, w, C) the attention of every grid query runs over the h*w grid
    keys (with SAM's decomposed relative-position bias) and the P prompt keys (no
    bias), in one softmax. The implementations are the wrapped attention's
    ``attn_impl`` and ``grad_impl`` (``'eager'`` for a plain segment_anything ``Attention``).

    Args:
        base: the attention to prompt.
        num_tokens: number of prompt tokens P (> 0).
        init_bound: prompts start uniform in ``[-init_bound, init_bound]``.
        dropout: dropout probability on the prompt tokens.
    """

    adds_tokens = True  # its qkv sees the P prompt tokens with the spatial ones (PEFTLayerMixin)

    def __init__(self, base: Attention, num_tokens: int, init_bound: float, dropout: float = 0.0) -> None:
        super().__init__(base, getattr(base, 'attn_impl', 'eager'), getattr(base, 'grad_impl', None))
        add_prompt_tokens(self, base.qkv, num_tokens, init_bound, dropout)

    def prompt_keys_values(self) -> tuple[Tensor, Tensor]:
        """Project the prompt tokens with the frozen ``qkv``.

        Returns:
            tuple[Tensor, Tensor]: keys and values, each (nHead, P, C/nHead).
        """
        prompts = self.prompt_dropout(self.prompt_tokens)
        num_tokens, dims = prompts.shape
        # (P, C) -> (P, 3C) -> (P, 3, nHead, C/nHead) -> (3, nHead, P, C/nHead)
        qkv = self.qkv(prompts).reshape(num_tokens, 3, self.num_heads, dims // self.num_heads)
        qkv = qkv.permute(1, 2, 0, 3)
        return qkv[1], qkv[2]

    def forward(self, x: Tensor) -> Tensor:
        """Prompted attention.

        Args:
            x: (N, H, W, C): windows x images (windowed blocks) or images (global).

        Returns:
            Tensor: (N, H, W, C).
        """
        N, H, W, _ = x.shape
        if self.attn_impl != 'eager':
            q, k, v = self.project_qkv(x)  # each (N, nHead, H*W, C/nHead)
            # Same prompts for every element of N: (nHead, P, c) -> (N, nHead, P, c)
            k_p, v_p = (t.expand(N, -1, -1, -1) for t in self.prompt_keys_values())
            return self.project_out(self.attend(q, k, v, (H, W), k_p, v_p), (H, W))
        # (N, H, W, C) -> (N, H*W, 3, nHead, C/nHead) -> (3, N, nHead, H*W, C/nHead)
        qkv = self.qkv(x).reshape(N, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        # (3, N, nHead, H*W, C/nHead) -> 3 x (N*nHead, H*W, C/nHead)
        q, k, v = qkv.reshape(3, N * self.num_heads, H * W, -1).unbind(0)
        k_p, v_p = self.prompt_keys_values()
        _, num_tokens, head_dims = k_p.shape
        # Same prompts for every element of N: (nHead, P, c) -> (N, nHead, P, c) -> (N*nHead, P, c)
        k_p = k_p.expand(N, -1, -1, -1).reshape(N * self.num_heads, num_tokens, head_dims)
        v_p = v_p.expand(N, -1, -1, -1).reshape(N * self.num_heads, num_tokens, head_dims)

        q_scaled = q * self.scale
        attn_grid = q_scaled @ k.transpose(-2, -1)  # (N*nHead, H*W, H*W)
        if self.use_rel_pos:
            attn_grid = add_decomposed_rel_pos(attn_grid, q, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
        attn_prompt = q_scaled @ k_p.transpose(-2, -1)  # (N*nHead, H*W, P)
        attn = torch.cat([attn_grid, attn_prompt], dim=-1).softmax(dim=-1)  # (N*nHead, H*W, H*W+P)

        x = attn @ torch.cat([v, v_p], dim=1)  # (N*nHead, H*W, C/nHead)
        # (N*nHead, H*W, c) -> (N, nHead, H, W, c) -> (N, H, W, nHead, c) -> (N, H, W, C)
        x = x.view(N, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(N, H, W, -1)
        return self.proj(x)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_tokens={self.prompt_tokens.shape[0]}'


@PEFT_METHODS.register_module()
class VPT(BlockPlaceMethod):
    """Visual Prompt Tuning of SAM ViT blocks, as prefix keys and values of their attention.

    Each prompted block's ``attn`` becomes a :class:`PromptedAttention` with its own
    ``prompt_tokens`` (``blocks.N.attn.prompt_tokens``). Prompts start uniform in
    ``[-v, v]``, ``v = sqrt(6 / (3 * patch_size^2 + C))`` (VPT's xavier-uniform-style
    init, with the patch size of the backbone's ``patch_embed``).

    Args:
        num_tokens: prompt tokens per prompted block (> 0).
        mode: ``'deep'``: distinct prompts in every selected block; ``'shallow'``:
            prompts in the first block only (SAM's windowed grid has no token sequence
            that could carry input-level prompts through the later blocks).
        blocks: block indices to prompt in deep mode; all when None. Must be None in
            shallow mode.
        dropout: dropout probability on the prompt tokens, in [0, 1).
    """

    def __init__(
        self,
        num_tokens: int = 10,
        mode: str = 'deep',
        blocks: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens <= 0:
            raise ValueError(f'VPT num_tokens must be a positive int, got {num_tokens!r}')
        check_choices('VPT mode', [mode], _MODES)
        if blocks is not None and mode == 'shallow':
            raise ValueError(
                f'VPT blocks must be None in shallow mode (prompts the first block), got {blocks!r}'
            )
        blocks = check_blocks('VPT', blocks)
        if not 0 <= dropout < 1:
            raise ValueError(f'VPT dropout must be in [0, 1), got {dropout!r}')
        self.num_tokens = num_tokens
        self.mode = mode
        self.blocks = (0,) if mode == 'shallow' else blocks
        self.dropout = dropout

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        where = f'{block_prefix(model)}patch_embed.proj'
        try:
            proj = model.get_submodule(where)
        except AttributeError:
            proj = None
        if not isinstance(proj, nn.Conv2d):
            raise ValueError(
                f'VPT initialises its prompts from the patch embedding {where} (nn.Conv2d), which '
                f'{type(model).__name__} does not have'
            )
        self._bound = math.sqrt(
            6.0 / (3 * math.prod(proj.kernel_size) + proj.out_channels)
        )  # the prompts' init
        return super().inject(model)

    def places(self) -> dict[str, None]:
        return {'attn': None}

    def check_place(self, where: str, place: str, current: nn.Module | None, block: nn.Module) -> None:
        if prompted_attention_class(current) is None:
            known = sorted(name.rsplit('.', 1)[-1] for name in _PROMPTED_ATTENTIONS)
            raise ValueError(
                f'VPT has no prompted version of {where} ({type(current).__name__}); it prompts {known} '
                '(register_prompted_attention adds one)'
            )
        if getattr(current.qkv, 'needs_spatial_tokens', False):
            raise ValueError(
                f'{where}.qkv is a {type(current.qkv).__name__}, which needs the spatial token map: '
                'VPT prompt tokens cannot pass through it'
            )

    def build(self, place: str, spec: None, current: nn.Module | None, block: nn.Module) -> nn.Module:
        return prompted_attention_class(current)(current, self.num_tokens, self._bound, self.dropout)
