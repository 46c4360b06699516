"""SAM 2.1's image encoder (Hiera trunk + FPN neck) as an mmseg backbone, built on the ``sam2`` package."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mmseg.registry import MODELS
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

from ...utils.sam2_checkpoint import load_sam2_component
from ..sam2_modeling import sam2_modeling
from .base import SAMBackboneBase, SAMBackboneBlock
from .sam_vit import merge_arch

__all__ = ['SAM2_ARCHS', 'SAM2Hiera', 'SAM2HieraBlock']

# SAM 2.1 encoder sizes (sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml); every other
# setting is sam2's default (Hiera: q_pool 3, q_stride (2, 2), dims and heads x2 per
# stage; FpnNeck: 256 channels, top-down fusion on levels 2 and 3, nearest upsampling).
SAM2_ARCHS: dict[str, dict[str, Any]] = {
    'tiny': dict(
        embed_dims=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    'small': dict(
        embed_dims=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    'base_plus': dict(
        embed_dims=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    'large': dict(
        embed_dims=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    ),
}
# Shared by the official sizes; a custom arch dict may override them.
_ARCH_DEFAULTS: dict[str, Any] = dict(
    window_spec=(8, 4, 14, 7),
    out_channels=256,
    fpn_top_down_levels=(2, 3),
    scalp=1,
)
_ARCH_REQUIRED = (
    'embed_dims',
    'num_heads',
    'stages',
    'global_att_blocks',
    'window_pos_embed_bkg_spatial_size',
)
_PATCH_STRIDE = 4  # sam2's PatchEmbed: kernel 7, stride 4, padding 3
_Q_POOL = 3  # sam2's Hiera default: the first block of stages 2, 3 and 4 halves the resolution


def _resolve_arch(
    arch: str | Mapping[str, Any], zoo: Mapping[str, Mapping[str, Any]] = SAM2_ARCHS
) -> dict[str, Any]:
    cfg = merge_arch(arch, zoo, _ARCH_DEFAULTS, _ARCH_REQUIRED)
    if isinstance(arch, str):
        return cfg
    stages = tuple(cfg['stages'])
    if len(stages) != 4 or not all(isinstance(n, int) and n > 0 for n in stages):
        raise ValueError(f'arch stages must be 4 positive ints (blocks per stage), got {cfg["stages"]!r}')
    if len(tuple(cfg['window_spec'])) != 4:
        raise ValueError(
            f'arch window_spec must give 4 window sizes (one per stage), got {cfg["window_spec"]!r}'
        )
    depth = sum(stages)
    bad = [i for i in cfg['global_att_blocks'] if not 0 <= i < depth]
    if bad:
        raise ValueError(f'arch global_att_blocks {bad} out of range for {depth} blocks')
    if not 0 <= cfg['scalp'] < 4:
        raise ValueError(f'arch scalp must be 0..3 (coarsest FPN levels dropped), got {cfg["scalp"]!r}')
    return cfg


class _LinspaceOnCPU(TorchFunctionMode):
    """Run ``torch.linspace`` on the CPU, whatever the default device.

    sam2's ``Hiera`` turns its drop-path rates into floats with ``.item()``, which fails
    under ``with torch.device('meta')`` (shape-only builds: parameter counts, memory
    estimates); every other tensor still goes to the default device.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs['device'] = 'cpu'
        return func(*args, **kwargs)


class SAM2HieraBlock(nn.Module, SAMBackboneBlock):
    """sam2's ``MultiScaleBlock`` with the PEFT places of :class:`~mmseg_sam.models.backbones.SAMBlock`.

    It takes over the wrapped sam2 block's modules (``norm1``, ``attn``, ``pool``, ``proj``,
    ``norm2``, ``mlp``), so state-dict keys stay sam2's. The forward is sam2's, written
    out with the places where PEFT methods act::

        shortcut = pool(proj(norm1(x))) if the width changes else x
        x = shortcut + attn_adapter(unpartition(attn(partition(norm1(x)))))
        h = norm2(x)
        x = x + mlp_adapter(mlp(h)) [+ mlp_parallel(x, h)]

    The first block of stages 2-4 pools its queries (``q_stride``): its output has half
    the resolution and twice the width of its input, so ``attn_adapter`` and the MLP
    places see the block's output width ``dim_out``. sam2's MLP keeps its
    ``mlp.layers.0`` / ``mlp.layers.1``; :attr:`place_paths` maps the protocol's
    ``mlp.lin1`` / ``mlp.lin2`` there. Attention sees (B', h, w, C) windows (or the whole
    map in global blocks), so methods that need the spatial map (Conv-LoRA) apply.

    Args:
        base: the block whose modules to use.
        with_cp: checkpoint the block body in training (recomputed in backward).
    """

    place_paths = {'mlp.lin1': 'mlp.layers.0', 'mlp.lin2': 'mlp.layers.1'}

    def __init__(self, base: nn.Module, with_cp: bool = False) -> None:
        super().__init__()
        self.dim, self.dim_out = base.dim, base.dim_out
        self.norm1 = base.norm1
        self.window_size = base.window_size
        self.pool, self.q_stride = base.pool, base.q_stride
        self.attn = base.attn
        self.attn_adapter: nn.Module = nn.Identity()
        self.drop_path = base.drop_path
        self.norm2 = base.norm2
        self.mlp = base.mlp
        self.mlp_adapter: nn.Module = nn.Identity()
        self.mlp_parallel: nn.Module | None = None
        if base.dim != base.dim_out:
            self.proj = base.proj
        self.with_cp = with_cp

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        sam2 = sam2_modeling()
        shortcut = x  # (B, H, W, C)
        x = self.norm1(x)
        if self.dim != self.dim_out:  # (B, H, W, C) -> (B, H/s, W/s, C_out)
            shortcut = sam2.do_pool(self.proj(x), self.pool)
        window_size = self.window_size
        if window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = sam2.window_partition(x, window_size)  # (B, H, W, C) -> (B*nW, ws, ws, C)
        x = self.attn(x)  # queries pooled where q_stride: (B*nW, ws/s, ws/s, C_out)
        if self.q_stride:
            window_size = self.window_size // self.q_stride[0]
            h, w = shortcut.shape[1:3]
            pad_hw = (
                h + (window_size - h % window_size) % window_size,
                w + (window_size - w % window_size) % window_size,
            )
        if self.window_size > 0:
            x = sam2.window_unpartition(x, window_size, pad_hw, (h, w))  # (B*nW, ws, ws, C) -> (B, H, W, C)
        x = shortcut + self.drop_path(self.attn_adapter(x))
        normed = self.norm2(x)
        y = self.mlp_adapter(self.mlp(normed))
        if self.mlp_parallel is not None:
            y = y + self.mlp_parallel(x, normed)
        return x + self.drop_path(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out)."""
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def extra_repr(self) -> str:
        return (
            f'dim={self.dim}, dim_out={self.dim_out}, window_size={self.window_size}, with_cp={self.with_cp}'
        )


@MODELS.register_module()
class SAM2Hiera(SAMBackboneBase):
    """The image encoder of SAM 2.1: a Hiera trunk and an FPN neck, from the ``sam2`` package.

    Holds sam2's ``Hiera`` trunk and ``FpnNeck`` as sam2's ``ImageEncoder`` does
    (``trunk``, ``neck``, ``scalp``), so module names stay sam2's
    (``trunk.blocks.N.attn.qkv``, ``neck.convs.N.conv``): official
    SAM 2.1 checkpoints load after stripping ``image_encoder.``, and Hugging Face
    ``Sam2Model`` folders after renaming (``mmseg_sam.utils.sam2_checkpoint``). Weights are
    loaded here, at construction, before any PEFT module wraps the originals.

    The trunk's blocks are :class:`SAM2HieraBlock` s (the same parameters and function,
    with PEFT places). The forward is sam2's (patch embedding, windowed position
    embedding, blocks, FPN neck, ``scalp``). The backbone-level places of SAMViT
    (``input_prompts``, ``side_network``) are absent (:attr:`absent_places` says why), so
    SAM-Adapter and LST refuse this backbone.

    Inputs: any (B, 3, H, W) with H and W multiples of :attr:`size_divisor` (32 for the
    official sizes: patch stride 4 times three query-pooling stages, and the first
    stage's window tiling of the position embedding).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base_plus'``, ``'large'`` or a dict with
            ``embed_dims``, ``num_heads``, ``stages`` (4 ints), ``global_att_blocks``,
            ``window_pos_embed_bkg_spatial_size`` and optionally ``window_spec``
            ((8, 4, 14, 7)), ``out_channels`` (256), ``fpn_top_down_levels`` ((2, 3)),
            ``scalp`` (1: the stride-32 level is dropped, as in SAM 2).
        checkpoint: SAM 2.1 checkpoint (official ``{'model': ...}`` ``.pt``, an
            encoder-only state dict, or a Hugging Face ``Sam2Model`` folder / file).
            Loaded strictly.
        peft: PEFT method config (``dict(type='LoRA', ...)``) or a list of them,
            injected after the weights are loaded.
        frozen: freeze every pretrained parameter (PEFT parameters stay trainable).
        drop_path_rate: stochastic depth of the trunk (sam2's linear rule), 0 by default.
        with_cp: gradient checkpointing of every block in training.
    """

    # the family to the tools (SAMBackboneBase)
    family = 'sam2'
    family_title = 'SAM 2.1 Hiera'
    arch_zoo = SAM2_ARCHS
    arch_labels = {'tiny': 'Hiera-T', 'small': 'Hiera-S', 'base_plus': 'Hiera-B+', 'large': 'Hiera-L'}
    report_archs = ('base_plus',)
    decode_head = 'SAM2MaskDecoderHead'
    peft_block_prefix = 'trunk.'  # the PEFT methods find the blocks at trunk.blocks.<i>
    backbone_places = ()
    # Backbone-level PEFT places SAMViT offers and this backbone does not, and why (named
    # in the refusal of the methods that need them).
    absent_places = {
        'input_prompts': (
            'its blocks change resolution and width between stages, so one prompt map of the '
            'patch grid cannot be added to every block input'
        ),
        'side_network': (
            'its FPN neck takes four stage outputs of different widths, not the one last-block '
            'map that a ladder side network joins'
        ),
    }

    def __init__(
        self,
        arch: str | Mapping[str, Any] = 'base_plus',
        checkpoint: str | None = None,
        peft: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        frozen: bool = True,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
    ) -> None:
        sam2 = sam2_modeling()  # imported here, not with mmseg_sam
        cfg = _resolve_arch(arch, self.arch_zoo)  # a subclass may name other sizes
        self.check_with_cp(with_cp)  # before the trunk is built
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        with _LinspaceOnCPU():  # buildable on the meta device too
            trunk = self._build_trunk(cfg, drop_path_rate)
        neck = sam2.FpnNeck(
            position_encoding=sam2.PositionEmbeddingSine(
                num_pos_feats=cfg['out_channels'],
                normalize=True,
                scale=None,
                temperature=10000,
                warmup_cache=False,
            ),
            d_model=cfg['out_channels'],
            backbone_channel_list=trunk.channel_list,
            fpn_top_down_levels=list(cfg['fpn_top_down_levels']),
            fpn_interp_model='nearest',
        )
        super().__init__()
        self.trunk, self.neck, self.scalp = trunk, neck, cfg['scalp']  # sam2's ImageEncoder's names
        trunk.blocks = nn.ModuleList(SAM2HieraBlock(block, with_cp) for block in trunk.blocks)
        self.arch_settings = cfg
        self.with_cp = with_cp  # every block's (SAMBackboneBase.with_cp)
        self.embed_dims = cfg['embed_dims']
        self.out_channels = cfg['out_channels']
        self.channels = tuple(reversed(trunk.channel_list))  # stage widths, finest first
        # Inputs must be multiples of the total stride and tile the first stage's windows.
        self.size_divisor = math.lcm(_PATCH_STRIDE * 2**_Q_POOL, _PATCH_STRIDE * cfg['window_spec'][0])
        self.setup(checkpoint, frozen, peft)  # load, freeze, PEFT

    @staticmethod
    def check_with_cp(with_cp: object) -> bool:
        """Return ``with_cp`` if it is a bool (whole-block checkpointing or none), else raise naming it."""
        if not isinstance(with_cp, bool):
            raise TypeError(f'with_cp must be a bool, got {with_cp!r}')
        return with_cp

    def official_checkpoint(
        self, model: nn.Module, original: Mapping[str, Any], source: str, original_decoder: bool
    ) -> tuple[Any, dict[str, Any]]:
        """SAM 2.1's ``{'model': state_dict}`` (see :func:`mmseg_sam.apis.export_sam2.sam2_official_state`)."""
        from ...apis.export_sam2 import sam2_official_state

        return sam2_official_state(model, original, source, original_decoder)

    def load_pretrained(self, checkpoint: str) -> dict[str, torch.Tensor]:
        """The image encoder of a SAM 2.1 checkpoint (official ``.pt``, encoder-only or Hugging Face ``Sam2Model``)."""
        return load_sam2_component(checkpoint, 'image_encoder')

    @staticmethod
    def _build_trunk(cfg: Mapping[str, Any], drop_path_rate: float) -> nn.Module:
        """sam2's Hiera of a resolved arch."""
        return sam2_modeling().Hiera(
            embed_dim=cfg['embed_dims'],
            num_heads=cfg['num_heads'],
            drop_path_rate=drop_path_rate,
            stages=tuple(cfg['stages']),
            global_att_blocks=tuple(cfg['global_att_blocks']),
            window_pos_embed_bkg_spatial_size=tuple(cfg['window_pos_embed_bkg_spatial_size']),
            window_spec=tuple(cfg['window_spec']),
        )

    @property
    def blocks(self) -> nn.ModuleList:
        """The trunk's blocks (what the PEFT methods adapt)."""
        return self.trunk.blocks

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the returned levels, finest first."""
        return tuple(_PATCH_STRIDE * 2**i for i in range(4 - self.scalp))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encode images.

        Args:
            x: (B, 3, H, W) normalised images, H and W multiples of :attr:`size_divisor`.

        Returns:
            tuple[Tensor, ...]: the FPN levels, finest first, each (B, out_channels,
            H/s, W/s) for s in :attr:`strides` (4, 8, 16 with ``scalp=1``): what SAM 2's
            mask decoder takes (the stride-16 level as the image embedding, the others
            as its high-resolution features).
        """
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f'input size {h}x{w} is not a multiple of {self.size_divisor} (SAM2Hiera size_divisor)'
            )
        trunk = self.trunk
        x = trunk.patch_embed(x)  # (B, 3, H, W) -> (B, H/4, W/4, C)
        x = x + trunk._get_pos_embed(x.shape[1:3])
        stage_outputs = []
        for i, block in enumerate(trunk.blocks):
            x = block(x)
            if i in trunk.stage_ends:
                stage_outputs.append(x.permute(0, 3, 1, 2))  # (B, h, w, C) -> (B, C, h, w)
        features, _ = self.neck(stage_outputs)  # position encodings are for SAM 2's memory, unused here
        if self.scalp > 0:
            features = features[: -self.scalp]
        return tuple(features)
