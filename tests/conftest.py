"""Shared fixtures and builders: a tiny SAM architecture, segmentors and batches built on it,
and checkpoints in the official formats."""

import copy
import importlib
import importlib.util
import math
import re
import sys
import types
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules
from torch import nn

from mmseg_sam.models.sam_modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from mmseg_sam.utils.start_weights import StartWeights

# Tiny ops are ~100x slower with 2 threads on a loaded 2-core machine.
torch.set_num_threads(1)

# Components built directly (not through a config) resolve mmseg types like tools do.
register_all_modules(init_default_scope=True)

# 32-dim, 2 blocks, 2 heads; window 3 on the 4x4 grid of a 64x64 input, so the
# windowed block pads (4 -> 6) and block 1 attends globally.
TINY_IMG = 64
TINY_ARCH = dict(
    embed_dims=32, num_layers=2, num_heads=2, global_attn_indexes=(1,), window_size=3, out_channels=32
)
TINY_HEAD = dict(
    embed_dims=32, decoder_depth=2, decoder_num_heads=2, decoder_mlp_dims=64, mask_in_channels=16
)


def tiny_segmentor_cfg(
    sam_checkpoint: str | Path | None = None, img_size: int = TINY_IMG, **backbone: Any
) -> dict:
    """A ``SAMEncoderDecoder`` config on the tiny SAM with a binary (1-channel) head.

    Args:
        sam_checkpoint: SAM checkpoint for both parts, or None for random weights.
        img_size: input size of the encoder and the data preprocessor.
        **backbone: extra ``SAMViT`` arguments (``peft=...``, ``frozen=False``).
    """
    return dict(
        type='SAMEncoderDecoder',
        sam_checkpoint=sam_checkpoint and str(sam_checkpoint),
        data_preprocessor=dict(type='SegDataPreProcessor', size=(img_size, img_size)),
        backbone=dict(type='SAMViT', arch=dict(TINY_ARCH), img_size=img_size, **copy.deepcopy(backbone)),
        decode_head=dict(
            type='SAMMaskDecoderHead',
            num_classes=2,
            out_channels=1,
            threshold=0.5,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
            **TINY_HEAD,
        ),
    )


TINY_PROMPTED_HEAD = dict(TINY_HEAD, iou_head_hidden_dim=32, image_size=TINY_IMG, patch_size=16)


def tiny_prompted_cfg(
    sam_checkpoint: str | Path | None = None, head: dict | None = None, **backbone: Any
) -> dict:
    """A ``SAMPromptedEncoderDecoder`` config on the tiny SAM (whole decoder, IoU head included).

    Args:
        sam_checkpoint: SAM checkpoint for both parts, or None for random weights.
        head: extra ``SAMPromptedHead`` arguments (``train_prompting``, ``freeze``, ...).
        **backbone: extra ``SAMViT`` arguments (``peft=...``).
    """
    return dict(
        type='SAMPromptedEncoderDecoder',
        sam_checkpoint=sam_checkpoint and str(sam_checkpoint),
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            size=(TINY_IMG, TINY_IMG),
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
        ),
        backbone=dict(type='SAMViT', arch=dict(TINY_ARCH), img_size=TINY_IMG, **copy.deepcopy(backbone)),
        decode_head=dict(
            type='SAMPromptedHead', num_classes=2, **TINY_PROMPTED_HEAD, **copy.deepcopy(head or {})
        ),
    )


def tiny_model_cfg(model: dict, img_size: int | None = TINY_IMG) -> dict:
    """A config's ``model`` (a ConfigDict, changed in place) with the tiny SAM swapped in.

    SAM-decoder heads get :data:`TINY_HEAD` (and 4 queries for mask classification); a
    backbone for mmseg's multi-level heads (``with_neck=False``: Feature2Pyramid + UPerHead +
    FCNHead) gets a 4-block tiny arch with one map per block and the neck and heads narrowed
    to its 32 channels.

    Args:
        model: the ``model`` of a config.
        img_size: the encoder's and the data preprocessor's size; None keeps the config's.
    """
    model.sam_checkpoint = None
    if model.backbone.type == 'SAM2Hiera':  # the SAM 2 family: tiny Hiera and SAM 2 decoder
        from tests.models.sam2_fixtures import TINY_SAM2_ARCH, TINY_SAM2_DECODER

        model.backbone.arch = dict(TINY_SAM2_ARCH)
        if img_size is not None:
            model.data_preprocessor.size = (img_size, img_size)
        for k, v in TINY_SAM2_DECODER.items():
            model.decode_head[k] = v
        if img_size is not None and 'image_size' in model.decode_head:  # a prompted head pads to it
            model.decode_head.image_size = img_size
        if model.decode_head.get('mode') == 'mask_classification':
            model.decode_head.num_queries = 4
        return model
    if img_size is not None:
        model.backbone.img_size = img_size
        model.data_preprocessor.size = (img_size, img_size)
    dims = TINY_ARCH['embed_dims']
    if model.backbone.get('with_neck', True):
        # assignment, not ConfigDict.update (which merges nested dicts)
        model.backbone.arch = dict(TINY_ARCH)
        head = TINY_PROMPTED_HEAD if model.decode_head.type == 'SAMPromptedHead' else TINY_HEAD
        for k, v in head.items():
            model.decode_head[k] = v
        if img_size is not None and model.decode_head.type == 'SAMPromptedHead':
            model.decode_head.image_size = img_size
        if model.decode_head.get('mode') == 'mask_classification':
            # 100 queries upsampled to a 784x784 crop would be most of a test step
            model.decode_head.num_queries = 4
        return model
    model.backbone.arch = dict(TINY_ARCH, num_layers=4, global_attn_indexes=(1, 3))
    model.backbone.out_indices = (0, 1, 2, 3)
    model.neck.embed_dim = dims
    model.decode_head.in_channels = [dims] * 4
    model.decode_head.channels = 16
    model.auxiliary_head.in_channels = dims
    model.auxiliary_head.channels = 16
    return model


REPO = Path(__file__).resolve().parents[1]
"""The repository root: every test reads files and runs tools relative to it."""


def load_tool(path: str | Path, name: str | None = None) -> types.ModuleType:
    """A tool's script (``tools/...``, relative to the repository) imported as a fresh module.

    The module is registered in ``sys.modules`` under ``name`` (default ``tool_<stem>``), as
    dataclasses and pickle look a class's module up there.

    Args:
        path: the script, relative to :data:`REPO` (or absolute).
        name: the module's name.
    """
    path = REPO / path
    name = name or f'tool_{path.stem}'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fast_sample(values: list, group: Any) -> list:
    """``values`` as pytest parameters: the first of each ``group(value)`` runs in the fast tier,
    the others are marked ``slow`` (``make test`` runs them all)."""
    seen = set()
    params = []
    for value in values:
        key = group(value)
        params.append(pytest.param(value, marks=() if key not in seen else pytest.mark.slow))
        seen.add(key)
    return params


def run_tool(path: str, *argv: Any) -> int:
    """Run a tool's ``main(argv)`` in-process, as ``python <path> argv...`` would; returns its status."""
    return load_tool(path).main([str(a) for a in argv])


def write_train_config(
    path: Path, base: str, data_root: Path, model: str, iters: int = 1, load_from: Path | None = None
) -> Path:
    """A config over ``base`` that trains ``iters`` iterations on 64x64 demo data at ``data_root``.

    Args:
        path: the config file to write.
        base: the base config, relative to the repository.
        data_root: data in the demo generator's layout.
        model: the body of the config's ``model = dict(...)`` (its overrides of the base's).
        iters: iterations; one checkpoint is written at the last.
        load_from: the weights to start from (:func:`save_start_weights`), or None.
    """
    path.write_text(f"""
load_from = {load_from and str(load_from)!r}
_base_ = [{str(REPO / base)!r}]
data_root = {str(data_root)!r}
model = dict(data_preprocessor=dict(size=(64, 64)), {model})
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval=100)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end={iters}, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={iters}))
""")
    return path


def assert_trained(work_dir: Path, start: StartWeights, iters: int = 1) -> None:
    """What a ``tools/train.py`` run from ``start`` into ``work_dir`` must have done.

    Every logged loss is finite; the checkpoint of iteration ``iters`` holds the trainable
    parameters, and no frozen one where the frozen weights come from a SAM checkpoint
    (``SAMCheckpointHook``); a frozen parameter it holds is unchanged; trainable tensors
    changed, the method's among them when it has any.
    """
    logs = sorted(work_dir.glob('*/*.log'))
    assert logs, f'no training log under {work_dir}'
    losses = [float(v) for v in re.findall(r'Iter\(train\).*?\sloss: (\S+)', logs[-1].read_text())]
    assert losses and all(math.isfinite(v) for v in losses), f'logged losses {losses}'
    checkpoint = torch.load(work_dir / f'iter_{iters}.pth', map_location='cpu', weights_only=False)
    state = checkpoint['state_dict']
    missing = start.trainable - set(state)
    assert not missing, f'trainable parameters not saved: {sorted(missing)[:5]}'
    if checkpoint.get('meta', {}).get('mmseg_sam', {}).get('sam_checkpoints'):  # frozen weights come from SAM
        extra = set(state) & set(start.values) - start.trainable
        assert not extra, f'frozen parameters saved in a trainable-only checkpoint: {sorted(extra)[:5]}'
    changed = {n for n, v in start.values.items() if n in state and not torch.equal(state[n], v)}
    frozen_changed = changed - start.trainable
    assert not frozen_changed, f'frozen parameters changed: {sorted(frozen_changed)[:5]}'
    assert changed, 'no trainable parameter changed'
    assert bool(changed & start.method) == bool(start.method), (
        f'the method has {len(start.method)} tensors, {len(changed & start.method)} changed'
    )


def tiny_segmentor(sam_checkpoint: str | Path | None = None, **backbone: Any) -> nn.Module:
    """The model of :func:`tiny_segmentor_cfg`, built."""
    return MODELS.build(tiny_segmentor_cfg(sam_checkpoint, **backbone))


def tiny_vit(arch: dict, peft: dict | None = None, checkpoint: str | Path | None = None) -> nn.Module:
    """A ``SAMViT`` on ``arch`` at the tiny input size, with ``peft`` injected, in eval mode."""
    from mmseg_sam.models.backbones import SAMViT

    return SAMViT(arch=arch, img_size=TINY_IMG, peft=peft, checkpoint=checkpoint).eval()


def tiny_batch(n: int = 2) -> tuple[torch.Tensor, list[SegDataSample]]:
    """``n`` random (3, 64, 64) images with random 0/1 labels, as the data preprocessor outputs them."""
    samples = []
    for _ in range(n):
        shape = (TINY_IMG, TINY_IMG)
        sample = SegDataSample(metainfo=dict(img_shape=shape, pad_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 2, (1, TINY_IMG, TINY_IMG)))
        samples.append(sample)
    return torch.randn(n, 3, TINY_IMG, TINY_IMG), samples


def build_reference_sam(img_size: int = TINY_IMG, arch: dict | None = None, seed: int = 0):
    """segment_anything's Sam with the tiny architecture and perturbed weights.

    Every parameter gets noise so that zero-initialised tables (pos_embed, rel_pos)
    and equal tokens cannot hide a mismatch.
    """
    from segment_anything.modeling import Sam

    arch = arch or TINY_ARCH
    torch.manual_seed(seed)
    patch = arch.get('patch_size', 16)
    encoder = ImageEncoderViT(
        img_size=img_size,
        patch_size=patch,
        embed_dim=arch['embed_dims'],
        depth=arch['num_layers'],
        num_heads=arch['num_heads'],
        out_chans=arch['out_channels'],
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=arch['window_size'],
        global_attn_indexes=arch['global_attn_indexes'],
    )
    dims = TINY_HEAD['embed_dims']
    prompt_encoder = PromptEncoder(
        embed_dim=dims,
        image_embedding_size=(img_size // patch, img_size // patch),
        input_image_size=(img_size, img_size),
        mask_in_chans=TINY_HEAD['mask_in_channels'],
    )
    mask_decoder = MaskDecoder(
        transformer_dim=dims,
        transformer=TwoWayTransformer(
            depth=TINY_HEAD['decoder_depth'],
            embedding_dim=dims,
            mlp_dim=TINY_HEAD['decoder_mlp_dims'],
            num_heads=TINY_HEAD['decoder_num_heads'],
        ),
        num_multimask_outputs=3,
        iou_head_hidden_dim=dims,
    )
    sam = Sam(
        encoder,
        prompt_encoder,
        mask_decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    perturb_(sam, seed)
    return sam.eval()


def save_perturbed_trainable(model_cfg: Any, path: Path, std: float = 0.05) -> nn.Module:
    """Build ``model_cfg`` (seed 0), move every trainable parameter by N(0, std) and save it at ``path``
    as training does: trainable-only (``SAMCheckpointHook``). Returns the model, in eval mode."""
    from types import SimpleNamespace

    from mmseg_sam.engine.hooks import SAMCheckpointHook

    torch.manual_seed(0)
    model = MODELS.build(model_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * std)
    checkpoint = {'state_dict': dict(model.state_dict()), 'meta': {}}
    SAMCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model), checkpoint)
    torch.save(checkpoint, path)
    return model


def perturb_(module: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return module


@pytest.fixture(scope='session')
def reference_sam():
    return build_reference_sam()


@pytest.fixture(scope='session')
def sam_checkpoint(tmp_path_factory, reference_sam) -> Path:
    """The tiny SAM saved as segment_anything's ``Sam.state_dict()`` (official format)."""
    path = tmp_path_factory.mktemp('ckpt') / 'sam_tiny.pth'
    torch.save(reference_sam.state_dict(), path)
    return path


@pytest.fixture
def tiny_arch() -> dict:
    return copy.deepcopy(TINY_ARCH)


@pytest.fixture
def tiny_head() -> dict:
    return copy.deepcopy(TINY_HEAD)


@pytest.fixture
def sam_predictor_cls():
    """segment_anything's SamPredictor; where torchvision cannot be imported (these machines), its
    image-resizing helpers are stubbed: the test feeds images already at the encoder's size
    through ``set_torch_image`` and never calls them."""
    try:
        from segment_anything import SamPredictor

        yield SamPredictor
        return
    except ImportError:
        pass
    saved = {
        k: v for k, v in sys.modules.items() if k.startswith(('torchvision', 'segment_anything.predictor'))
    }
    stub = types.ModuleType('torchvision')
    transforms = types.ModuleType('torchvision.transforms')
    functional = types.ModuleType('torchvision.transforms.functional')

    def unused(*args, **kwargs):
        raise AssertionError('torchvision stub called: the test must pass images at the encoder size')

    functional.resize = functional.to_pil_image = unused
    stub.transforms, transforms.functional = transforms, functional
    names = ('torchvision', 'torchvision.transforms', 'torchvision.transforms.functional')
    sys.modules.update(dict(zip(names, (stub, transforms, functional))))
    try:
        predictor = importlib.import_module('segment_anything.predictor').SamPredictor
    finally:  # the stub only for that import: other libraries probe torchvision
        for name in names:
            sys.modules.pop(name, None)
    try:
        yield predictor
    finally:
        for name in ('segment_anything.predictor', 'segment_anything.utils.transforms'):
            sys.modules.pop(name, None)
        sys.modules.update(saved)
