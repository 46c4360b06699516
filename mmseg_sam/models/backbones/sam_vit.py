"""SAM's ViT image encoder as an mmseg backbone."""

import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ...utils.checkpoint import load_sam_component, upgrade_peft_key
from ..sam_modeling import Block, ImageEncoderViT, window_partition, window_unpartition
from .base import SAMBackboneBase, SAMBackboneBlock
from .sam_attention import ATTN_IMPLS, SAMAttention, check_attn_impl

__all__ = ['SAMBlock', 'SAMViT', 'SAM_ARCHS', 'WITH_CP_LEVELS', 'check_with_cp', 'image_encoder_kwargs']

# Official SAM encoder sizes (segment_anything/build_sam.py).
SAM_ARCHS: dict[str, dict[str, Any]] = {
    'vit_b': dict(embed_dims=768, num_layers=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    'vit_l': dict(embed_dims=1024, num_layers=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    'vit_h': dict(embed_dims=1280, num_layers=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
# Settings shared by every official size; a custom arch dict may override them.
_ARCH_DEFAULTS: dict[str, Any] = dict(
    patch_size=16, window_size=14, mlp_ratio=4.0, out_channels=256, in_channels=3, qkv_bias=True
)
_ARCH_REQUIRED = ('embed_dims', 'num_layers', 'num_heads')
# attn_impl choices of SAMViT. 'auto' picks per block what measured best on CPU (ViT-B,
# 512 px, 2 threads): SDPA with a bias mask in windowed blocks (196 tokens: the fastest
# path, folded is slower there), the folded bias in global blocks (no N x N tensor; one
# global attention at 1024 px peaks at ~0.4 GiB in forward+backward instead of ~2.3).
# Encoder at 512 px vs eager: forward -18% CPU time and -50% peak activation memory,
# forward+backward the same time and -22% memory. When the bias needs a gradient
# (training an adapted block) windowed blocks use the folded form too: SDPA with a
# mask that needs a gradient is plain math attention on CPU (see sam_attention.py).
_ATTN_IMPLS = ('auto', *ATTN_IMPLS)
_AUTO_ATTN_IMPL = {'windowed': ('sdpa', 'folded'), 'global': ('folded', None)}

# segment_anything's MLPBlock.forward (lin2(act(lin1(x)))), which SAMBlock writes out.
_MLP_BLOCK_FORWARD = importlib.import_module(Block.__module__).MLPBlock.forward
# with_cp levels, from keeping everything to recomputing whole blocks.
WITH_CP_LEVELS = (False, 'selective', True)


def _aten_ops(*names: str) -> frozenset:
    return frozenset(getattr(torch.ops.aten, name) for name in names if hasattr(torch.ops.aten, name))


# with_cp='selective' keeps the outputs of the fused attention kernels (the quadratic part)
# and of the matrix products inside SAMBlock's ``_keeping_products()`` (the MLP's first
# linear: its 4C-wide output is GELU's input, and redoing it would cost a third of the
# block's linear arithmetic). Everything else is recomputed in backward: norms, GELU,
# casts, the folded attention's augmented queries and keys, and the qkv / proj / lin2
# products (the first two are redone, lin2 is never needed again).
_ATTENTION_OPS = _aten_ops(
    '_scaled_dot_product_flash_attention_for_cpu',
    '_scaled_dot_product_flash_attention',
    '_scaled_dot_product_efficient_attention',
    '_scaled_dot_product_cudnn_attention',
)
_PRODUCT_OPS = _aten_ops('mm', 'addmm')
_KEEP_PRODUCTS: ContextVar[bool] = ContextVar('mmseg_sam_keep_products', default=False)


def _selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective recomputation: which operator outputs a checkpointed block keeps (see above)."""
    packet = getattr(op, 'overloadpacket', op)
    if packet in _ATTENTION_OPS or (packet in _PRODUCT_OPS and _KEEP_PRODUCTS.get()):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


@contextmanager
def _keeping_products() -> Iterator[None]:
    """Matrix products run inside are kept by ``with_cp='selective'`` (no effect otherwise)."""
    token = _KEEP_PRODUCTS.set(True)
    try:
        yield
    finally:
        _KEEP_PRODUCTS.reset(token)


def check_with_cp(with_cp: object) -> bool | str:
    """Return ``with_cp`` if it is one of :data:`WITH_CP_LEVELS`, else raise naming it."""
    if isinstance(with_cp, bool) or with_cp == 'selective':
        return with_cp
    allowed = ', '.join(repr(v) for v in WITH_CP_LEVELS)
    error = ValueError if isinstance(with_cp, str) else TypeError
    raise error(f'with_cp must be one of {allowed}, got {with_cp!r}')


def merge_arch(
    arch: str | Mapping[str, Any],
    known: Mapping[str, Mapping[str, Any]],
    defaults: Mapping[str, Any],
    required: Sequence[str],
) -> dict[str, Any]:
    """An encoder's ``arch`` argument as settings: a known size, or a dict over ``defaults``.

    The one rule both backbone families follow (SAMViT, SAM2Hiera); each then checks
    what its own settings must satisfy.

    Args:
        arch: a name of ``known`` or a dict of settings.
        known: the official sizes by name.
        defaults: settings a dict may leave out (every other allowed key is ``required``).
        required: settings a dict must give.

    Raises:
        ValueError: an unknown name, unknown keys or missing required keys (named).
        TypeError: ``arch`` is neither a str nor a dict.
    """
    if isinstance(arch, str):
        if arch not in known:
            raise ValueError(f'arch must be one of {sorted(known)} or a dict, got {arch!r}')
        return {**defaults, **known[arch]}
    if not isinstance(arch, Mapping):
        raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
    allowed = set(required) | set(defaults)
    unknown = set(arch) - allowed
    if unknown:
        raise ValueError(f'unknown arch keys {sorted(unknown)}; allowed: {sorted(allowed)}')
    missing = [k for k in required if k not in arch]
    if missing:
        raise ValueError(f'custom arch is missing {missing} (required: {list(required)})')
    return {**defaults, **arch}


def _resolve_arch(
    arch: str | Mapping[str, Any], zoo: Mapping[str, Mapping[str, Any]] = SAM_ARCHS
) -> dict[str, Any]:
    # a custom arch has no global blocks unless it names them
    cfg = merge_arch(arch, zoo, {**_ARCH_DEFAULTS, 'global_attn_indexes': ()}, _ARCH_REQUIRED)
    if isinstance(arch, str):
        return cfg
    if cfg['embed_dims'] % cfg['num_heads']:
        raise ValueError(
            f'arch embed_dims={cfg["embed_dims"]} is not divisible by num_heads={cfg["num_heads"]}'
        )
    bad = [i for i in cfg['global_attn_indexes'] if not 0 <= i < cfg['num_layers']]
    if bad:
        raise ValueError(f'arch global_attn_indexes {bad} out of range for num_layers={cfg["num_layers"]}')
    return cfg


def image_encoder_kwargs(arch_settings: Mapping[str, Any], img_size: int) -> dict[str, Any]:
    """segment_anything ``ImageEncoderViT`` arguments for resolved arch settings (SAM's fixed choices).

    Args:
        arch_settings: a resolved arch (``SAMViT.arch_settings``: embed_dims, num_layers, ...).
        img_size: input size the position tables are built for.

    Returns:
        dict: keyword arguments of ``ImageEncoderViT``.
    """
    cfg = arch_settings
    return dict(
        img_size=img_size,
        patch_size=cfg['patch_size'],
        in_chans=cfg['in_channels'],
        embed_dim=cfg['embed_dims'],
        depth=cfg['num_layers'],
        num_heads=cfg['num_heads'],
        mlp_ratio=cfg['mlp_ratio'],
        out_chans=cfg['out_channels'],
        qkv_bias=cfg['qkv_bias'],
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.GELU,
        use_abs_pos=True,
        use_rel_pos=True,
        rel_pos_zero_init=True,
        window_size=cfg['window_size'],
        global_attn_indexes=tuple(cfg['global_attn_indexes']),
    )


def _block_attn_impl(attn_impl: str, window_size: int) -> tuple[str, str | None]:
    """The attention implementations of one block, (attn_impl, grad_impl); ``'auto'`` resolved by its kind."""
    if attn_impl != 'auto':
        return attn_impl, None
    return _AUTO_ATTN_IMPL['windowed' if window_size else 'global']


class SAMBlock(Block, SAMBackboneBlock):
    """segment_anything's ``Block`` with :class:`SAMAttention`, checkpointing and PEFT places.

    It takes over the wrapped block's ``norm1``, ``norm2`` and ``mlp``, and its ``attn``
    becomes a :class:`SAMAttention` with the same parameters, so state-dict keys stay
    SAM's. The forward is segment_anything's, written out with the places where PEFT
    methods act (empty places change nothing and hold no parameters)::

        x = x + attn_adapter(unpartition(attn(partition(norm1(x)))))
        h = norm2(x)
        x = x + mlp_adapter(mlp(h)) [+ mlp_parallel(x, h)]

    - ``attn_adapter`` / ``mlp_adapter``: serial on a sub-layer's output (``nn.Identity``
      until a method fills them: Adapter);
    - ``mlp_parallel``: a branch beside the MLP, given the sub-layer input ``x`` and
      ``norm2(x)`` (None until a method fills it: AdaptFormer);
    - the linears ``attn.qkv``, ``attn.proj``, ``mlp.lin1``, ``mlp.lin2`` and the norms,
      which methods replace by wrappers that keep their weights (LoRA, SSF), and
      ``attn`` itself (VPT's prompted attention).

    With ``with_cp``, a training forward with grad enabled runs the block under
    ``torch.utils.checkpoint`` (non-reentrant), which recomputes in backward, with the
    same inputs and RNG state, what it did not keep: with ``True`` everything but the
    block input; with ``'selective'`` it keeps the outputs of the fused attention and
    of the MLP's first linear (``mlp.lin1``) and recomputes the rest: norms, GELU,
    casts, the folded attention's augmented queries and keys, and the ``qkv`` and
    ``proj`` products.
    Gradients are the same as without checkpointing. Auxiliary losses are reported
    once: the recompute runs outside any ``collect_aux_losses``. A block that backward
    does not reach (frozen, on an input that needs no gradient: the blocks before the
    first adapted one) runs without checkpointing and keeps nothing.

    Args:
        base: the block whose modules to use.
        attn_impl: implementation of its attention (see :class:`SAMAttention`).
        with_cp: ``False``, ``'selective'`` or ``True`` (see above).
        grad_impl: attention implementation when the bias needs a gradient
            (:class:`SAMAttention`); None: always ``attn_impl``.
    """

    def __init__(
        self,
        base: Block,
        attn_impl: str = 'folded',
        with_cp: bool | str = False,
        grad_impl: str | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.norm1 = base.norm1
        self.attn = SAMAttention(base.attn, attn_impl, grad_impl)
        self.attn_adapter: nn.Module = nn.Identity()
        self.norm2 = base.norm2
        self.mlp = base.mlp
        self.mlp_adapter: nn.Module = nn.Identity()
        self.mlp_parallel: nn.Module | None = None
        self.window_size = base.window_size
        self.with_cp = with_cp

    @property
    def with_cp(self) -> bool | str:
        """The recomputation level, one of :data:`WITH_CP_LEVELS` (checked when set)."""
        return self._with_cp

    @with_cp.setter
    def with_cp(self, with_cp: bool | str) -> None:
        self._with_cp = check_with_cp(with_cp)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)  # (B, H, W, C) -> (B*nW, ws, ws, C)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))  # (B*nW, ws, ws, C) -> (B, H, W, C)
        x = shortcut + self.attn_adapter(x)
        normed = self.norm2(x)
        mlp = self.mlp
        if type(mlp).forward is _MLP_BLOCK_FORWARD:  # segment_anything's MLPBlock, written out
            with _keeping_products():  # with_cp='selective' keeps the MLP's hidden layer
                hidden = mlp.lin1(normed)
            out = mlp.lin2(mlp.act(hidden))
        else:  # a module that replaced the MLP runs its own forward
            out = mlp(normed)
        y = self.mlp_adapter(out)
        if self.mlp_parallel is not None:
            y = y + self.mlp_parallel(x, normed)
        return x + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        if self.with_cp and self.training and torch.is_grad_enabled() and self._needs_grad(x):
            if self.with_cp == 'selective':
                return checkpoint(
                    self._forward_without_cast_cache,
                    x,
                    use_reentrant=False,
                    context_fn=partial(create_selective_checkpoint_contexts, _selective_policy),
                )
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward_without_cast_cache(self, x: torch.Tensor) -> torch.Tensor:
        """``_forward`` with autocast's cast cache off (selective recomputation).

        The cache lets a forward skip the cast of a parameter that an earlier block already
        cast (COBOT shares parameters across blocks), while the recompute in backward casts
        it again; selective recomputation matches the operators of the two runs one by
        one, so both run without the cache. The values are the same.
        """
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            return self._forward(x)
        with torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False):
            return self._forward(x)

    def _needs_grad(self, x: torch.Tensor) -> bool:
        """Whether backward reaches this block: a frozen block on an input without grad keeps nothing."""
        return x.requires_grad or any(p.requires_grad for p in self.parameters())

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, with_cp={self.with_cp!r}'


@MODELS.register_module()
class SAMViT(SAMBackboneBase, ImageEncoderViT):
    """The image encoder of Segment Anything (ViT with windowed and global attention).

    Subclasses segment_anything's ``ImageEncoderViT`` so module names stay SAM's
    (``patch_embed``, ``pos_embed``, ``blocks.N.attn.qkv``, ``neck``): official weights
    load after stripping ``image_encoder.``. Pretrained weights are loaded here, at
    construction, before any PEFT module wraps the originals (MMEngine's
    ``init_weights`` does not run in ``tools/test.py``).

    Inputs of any size divisible by the patch size are accepted: the absolute position
    embedding is resized (bicubic) to the token grid, and the global blocks' relative
    position tables are interpolated (linearly) as segment_anything does.

    The blocks are :class:`SAMBlock` s (segment_anything's ``Block`` with the same
    parameters): their attention can run fused (``attn_impl``) and their activations
    can be recomputed in backward (``with_cp``); neither changes the function.

    Args:
        arch: ``'vit_b'``, ``'vit_l'``, ``'vit_h'`` or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads`` and optionally ``global_attn_indexes``,
            ``window_size`` (14), ``patch_size`` (16), ``mlp_ratio`` (4.0),
            ``out_channels`` (256), ``in_channels`` (3), ``qkv_bias`` (True).
        img_size: the training input size. For sizes other than the checkpoint's
            (1024 for SAM), ``pos_embed`` is resized bicubically and the global
            blocks' ``rel_pos_h``/``rel_pos_w`` linearly while loading.
        checkpoint: SAM checkpoint (official full model, encoder-only, or Hugging Face
            ``SamModel``; ``.pth``/``.bin``/``.safetensors``). Loaded strictly.
        peft: PEFT method config (``dict(type='LoRA', ...)``) or a list of them,
            injected after the weights are loaded.
        frozen: freeze every pretrained parameter (PEFT parameters stay trainable).
            ``False`` means full fine-tuning.
        out_indices: blocks whose outputs, as (B, C, H/p, W/p), are returned (before
            the neck output when ``with_neck``).
        with_neck: also return SAM's neck embedding (B, out_channels, H/p, W/p), last
            (the input of SAM's mask decoder). ``False`` returns only the ``out_indices``
            maps, one per level, for mmseg's multi-level necks and heads
            (``Feature2Pyramid`` / ``MultiLevelNeck`` + ``UPerHead``); the neck then stays
            in the module (SAM's checkpoint keys load) but is frozen and not run.
        attn_impl: how the blocks compute their attention (the same function, see
            :class:`SAMAttention`): ``'folded'`` (fused attention with the
            relative-position bias folded into queries and keys; no N x N tensor),
            ``'sdpa'`` (fused attention, bias as a float mask), ``'eager'``
            (segment_anything's code) or ``'auto'``: ``'sdpa'`` in windowed blocks
            (``'folded'`` when training them: ``grad_impl``) and ``'folded'`` in
            global ones.
        with_cp: recomputation in backward (training with grad enabled), per block:
            ``False`` keeps every activation, ``'selective'`` keeps the outputs of
            the fused attention and of ``mlp.lin1`` and recomputes the cheaper
            rest, ``True`` keeps only each block's input (see :class:`SAMBlock`;
            ``docs/memory.md`` says what each costs).
    """

    # the family to the tools (SAMBackboneBase)
    family = 'sam'
    family_title = 'SAM'
    arch_zoo = SAM_ARCHS
    arch_labels = {'vit_b': 'ViT-B', 'vit_l': 'ViT-L', 'vit_h': 'ViT-H'}
    report_archs = ('vit_b', 'vit_l', 'vit_h')
    decode_head = 'SAMMaskDecoderHead'
    peft_block_prefix = ''  # the PEFT methods find the blocks at blocks.<i>
    backbone_places = ('input_prompts', 'side_network')  # run by forward (see there)
    absent_places: dict[str, str] = {}

    def __init__(
        self,
        arch: str | Mapping[str, Any] = 'vit_b',
        img_size: int = 1024,
        checkpoint: str | None = None,
        peft: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        frozen: bool = True,
        out_indices: Sequence[int] = (),
        with_neck: bool = True,
        attn_impl: str = 'auto',
        with_cp: bool | str = False,
    ) -> None:
        cfg = _resolve_arch(arch, self.arch_zoo)  # a subclass may name other sizes
        check_attn_impl(attn_impl, _ATTN_IMPLS)
        check_with_cp(with_cp)
        patch_size = cfg['patch_size']
        if not isinstance(img_size, int) or img_size <= 0 or img_size % patch_size:
            raise ValueError(
                f'img_size must be a positive multiple of the patch size {patch_size}, got {img_size!r}'
            )
        super().__init__(**image_encoder_kwargs(cfg, img_size))
        # Same modules under the same keys, with the chosen attention and checkpointing.
        self.blocks = nn.ModuleList(
            SAMBlock(block, impl, with_cp, grad_impl)
            for block in self.blocks
            for impl, grad_impl in [_block_attn_impl(attn_impl, block.window_size)]
        )
        self.attn_impl = attn_impl
        self.with_cp = with_cp  # every block's level (SAMBackboneBase.with_cp)
        self.arch_settings = cfg
        self.patch_size = patch_size
        self.size_divisor = patch_size  # inputs must be multiples of it (SAMEncoderDecoder pads test inputs)
        self.embed_dims = cfg['embed_dims']
        self.out_channels = cfg['out_channels']
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not 0 <= i < cfg['num_layers']]
        if bad:
            raise ValueError(f'out_indices {bad} out of range for {cfg["num_layers"]} blocks')
        if not isinstance(with_neck, bool):
            raise TypeError(f'with_neck must be a bool, got {with_neck!r}')
        if not with_neck and (not out_indices or len(set(out_indices)) != len(out_indices)):
            raise ValueError(
                f'with_neck=False returns only the out_indices maps: out_indices must name distinct blocks, '
                f'got {out_indices!r}'
            )
        self.out_indices = out_indices
        self.with_neck = with_neck
        self._register_load_state_dict_pre_hook(self._resize_position_tables)
        self._register_load_state_dict_pre_hook(_upgrade_legacy_peft_keys)
        self.input_prompts: nn.Module | None  # prepare(images, embedding), prompt(i, state) -> (B, h, w, C)
        self.side_network: nn.Module | None  # reads detached taps, adds to the neck input
        self.setup(checkpoint, frozen, peft)  # load, freeze, empty backbone places, PEFT
        if not with_neck:
            if self.side_network is not None:
                raise ValueError(
                    f'{type(self.side_network).__name__} adds its output to the neck input, which '
                    'with_neck=False does not run: use with_neck=True with this PEFT method'
                )
            self.neck.requires_grad_(False)  # not run (even a PEFT method's neck parameters): no gradient

    check_with_cp = staticmethod(check_with_cp)

    def official_checkpoint(
        self, model: nn.Module, original: Mapping[str, Any], source: str, original_decoder: bool
    ) -> tuple[Any, dict[str, Any]]:
        """segment_anything's flat state dict (see :func:`mmseg_sam.apis.export_sam.sam_official_state`)."""
        from ...apis.export_sam import sam_official_state

        return sam_official_state(model, original, source, original_decoder)

    def load_pretrained(self, checkpoint: str) -> dict[str, torch.Tensor]:
        """The image encoder of a SAM checkpoint (official, encoder-only or Hugging Face ``SamModel``)."""
        return load_sam_component(checkpoint, 'image_encoder')

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of the returned maps, in order (every one is at the patch size)."""
        return (self.patch_size,) * (len(self.out_indices) + self.with_neck)

    def _resize_position_tables(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        """Load pre-hook: fit pos_embed / global rel_pos tables saved at another img_size."""
        key = f'{prefix}pos_embed'
        if self.pos_embed is not None and key in state_dict:
            src = state_dict[key]
            if src.dim() == 4 and src.shape[1:3] != self.pos_embed.shape[1:3]:
                state_dict[key] = resize_pos_embed(src, tuple(self.pos_embed.shape[1:3]))
        for i, block in enumerate(self.blocks):
            if block.window_size:  # windowed tables depend on the window, not img_size
                continue
            for name in ('rel_pos_h', 'rel_pos_w'):
                key = f'{prefix}blocks.{i}.attn.{name}'
                target = getattr(block.attn, name, None)
                if target is None or key not in state_dict:
                    continue
                src = state_dict[key]
                if src.dim() == 2 and src.shape[0] != target.shape[0]:
                    state_dict[key] = resize_rel_pos(src, target.shape[0])

    def _pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        if tuple(self.pos_embed.shape[1:3]) == grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encode images.

        Args:
            x: (B, C_in, H, W) normalised images, H and W multiples of the patch size.

        Returns:
            tuple[Tensor, ...]: one (B, embed_dims, H/p, W/p) map per ``out_indices``
            entry, then, when ``with_neck``, the neck embedding (B, out_channels, H/p, W/p).
        """
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f'input size {h}x{w} is not divisible by the patch size {self.patch_size}')
        images = x
        embedding = self.patch_embed(images)  # (B, C_in, H, W) -> (B, H/p, W/p, C)
        x = embedding
        if self.pos_embed is not None:
            x = x + self._pos_embed_for((x.shape[1], x.shape[2]))
        # place: prompts added to block inputs, computed from the image (SAM-Adapter)
        prompts = (
            None if self.input_prompts is None else self.input_prompts.prepare(images, embedding.detach())
        )
        side, taps = self.side_network, []
        outs = []
        for i, block in enumerate(self.blocks):
            if prompts is not None and (prompt := self.input_prompts.prompt(i, prompts)) is not None:
                x = x + prompt  # (B, h, w, C)
            if side is not None and i == 0:
                taps.append(x.detach())  # the side network reads the encoder, never trains it
            x = block(x)
            if side is not None and i in side.tap_blocks:
                taps.append(x.detach())
            if i in self.out_indices:
                outs.append(x.permute(0, 3, 1, 2))  # (B, h, w, C) -> (B, C, h, w)
        if not self.with_neck:
            return tuple(outs)
        if side is not None:  # place: a side network's output joins the neck input (LST)
            x = x.detach() + side(taps).to(x.dtype)
        outs.append(self.neck(x.permute(0, 3, 1, 2)))  # (B, h, w, C) -> (B, C_out, h, w)
        return tuple(outs)


def _upgrade_legacy_peft_keys(state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """Load pre-hook: PEFT keys of checkpoints written before the PEFT places, renamed in place."""
    for old in [k for k in state_dict if k.startswith(prefix)]:
        new = prefix + upgrade_peft_key(old[len(prefix) :])
        if new != old:
            state_dict[new] = state_dict.pop(old)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize an absolute position embedding.

    Args:
        pos_embed: (1, h, w, C).
        grid: target (h', w').

    Returns:
        Tensor: (1, h', w', C).
    """
    resized = F.interpolate(
        pos_embed.permute(0, 3, 1, 2).float(),  # (1, h, w, C) -> (1, C, h, w)
        size=grid,
        mode='bicubic',
        align_corners=False,
    )
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype)  # (1, C, h', w') -> (1, h', w', C)


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resize a relative position table, as segment_anything's get_rel_pos does.

    Args:
        rel_pos: (L, C).
        length: target L'.

    Returns:
        Tensor: (L', C).
    """
    resized = F.interpolate(
        rel_pos.t().unsqueeze(0).float(),  # (L, C) -> (1, C, L)
        size=length,
        mode='linear',
    )
    return resized[0].t().to(rel_pos.dtype)  # (1, C, L') -> (L', C)
