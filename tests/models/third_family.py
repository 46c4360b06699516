"""A third backbone family written against the contract alone: a plain ViT of global-attention blocks.

It stands for a new encoder (a SAM 3 or EfficientViT-SAM image encoder) added as
docs/adding_a_backbone.md says: this one file (its blocks, its sizes, what it tells the
tools), with no change to the PEFT methods, the segmentors or the tools.
``tests/models/test_third_family.py`` registers it for the length of a test and runs it
through the conformance checks, the segmentor and the tools.
"""

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmseg_sam.models.backbones.base import SAMBackboneBase, SAMBackboneBlock
from mmseg_sam.models.sam_modeling import Attention

# segment_anything's MLP (lin1, lin2), importable once sam_modeling has set the package up without torchvision
MLPBlock = importlib.import_module('segment_anything.modeling.common').MLPBlock

PLAIN_ARCHS = {'tiny': dict(embed_dims=32, depth=2, num_heads=2, patch_size=8, out_channels=32)}


class PlainBlock(nn.Module, SAMBackboneBlock):
    """Pre-norm global attention and MLP on (B, H, W, C) maps, with the block places.

    segment_anything's ``Attention`` (no relative positions) and ``MLPBlock`` give the
    protocol's ``attn.qkv``, ``attn.proj``, ``mlp.lin1``, ``mlp.lin2``; VPT prompts the
    attention through its registered prompted version.
    """

    def __init__(self, dim: int, num_heads: int, with_cp: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.attn_adapter: nn.Module = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, 2 * dim)
        self.mlp_adapter: nn.Module = nn.Identity()
        self.mlp_parallel: nn.Module | None = None
        self.window_size = 0  # global attention
        self.with_cp = with_cp

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_adapter(self.attn(self.norm1(x)))
        h = self.norm2(x)
        y = self.mlp_adapter(self.mlp(h))
        if self.mlp_parallel is not None:
            y = y + self.mlp_parallel(x, h)
        return x + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)


class PlainViT(SAMBackboneBase):
    """The third family: patch embedding, global blocks, a 1x1 neck; one map at stride ``patch_size``."""

    family = 'plain'
    family_title = 'Plain ViT'
    arch_zoo = PLAIN_ARCHS
    arch_labels = {'tiny': 'Plain-T'}
    report_archs = ('tiny',)
    decode_head = 'SAMMaskDecoderHead'
    peft_block_prefix = ''
    backbone_places = ()
    absent_places = {
        'input_prompts': 'its forward runs no prompt generator before the blocks',
        'side_network': 'its neck joins no ladder side network',
    }

    def __init__(
        self,
        arch: str | Mapping[str, Any] = 'tiny',
        checkpoint: str | None = None,
        peft: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        frozen: bool = True,
        with_cp: bool = False,
    ) -> None:
        cfg = dict(self.arch_zoo[arch]) if isinstance(arch, str) else dict(arch)
        self.check_with_cp(with_cp)
        super().__init__()
        dim = cfg['embed_dims']
        self.patch_embed = PatchEmbed(dim, cfg['patch_size'])
        self.blocks = nn.ModuleList(PlainBlock(dim, cfg['num_heads'], with_cp) for _ in range(cfg['depth']))
        self.neck = nn.Conv2d(dim, cfg['out_channels'], 1)
        self.embed_dims, self.out_channels = dim, cfg['out_channels']
        self.size_divisor = cfg['patch_size']
        self.strides = (cfg['patch_size'],)
        self.setup(checkpoint, frozen, peft)

    @staticmethod
    def check_with_cp(with_cp: object) -> bool:
        if not isinstance(with_cp, bool):
            raise TypeError(f'with_cp must be a bool, got {with_cp!r}')
        return with_cp

    def load_pretrained(self, checkpoint: str) -> dict[str, torch.Tensor]:
        return torch.load(checkpoint, map_location='cpu', weights_only=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (B, 3, H, W) -> (B, H/p, W/p, C)
        for block in self.blocks:
            x = block(x)
        return (self.neck(x.permute(0, 3, 1, 2)),)
