"""Bad configurations, checkpoints and data: each fails early with an error that names the problem.

One table: ``(id, action, error type, message pattern)``. Where data is at fault the
pattern includes the file (or folder) name. The cases under "a user's own data" run
the real tools (``tools/train.py``, ``tools/test.py``, ``tools/infer.py``,
``merge_peft.py``) in-process through their ``main``, on data laid out as the README's
binary recipe says and with the README's own config.
"""

import contextlib
import io
import logging
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.runner import CheckpointLoader
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample

from mmseg_sam.datasets import CheckedSegDataset, generate_synthetic_dataset
from mmseg_sam.engine import PortableAmpOptimWrapper
from mmseg_sam.engine.hooks import SAMCheckpointHook, check_head_fits_dataset
from tests.conftest import TINY_ARCH, TINY_HEAD, TINY_IMG, load_tool
from tests.datasets import bad_prompted_data as prompted_data
from tests.tools.test_infer_prompted import folder_with_an_empty_image, infer_argv
from tests.user_data import write_configs, write_user_data


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def _backbone(ctx, **kwargs):
    kwargs.setdefault('arch', TINY_ARCH)
    kwargs.setdefault('img_size', TINY_IMG)
    return MODELS.build(dict(type='SAMViT', **kwargs))


def _peft(peft):
    return lambda ctx: _backbone(ctx, peft=peft)


def _head(**kwargs):
    cfg = dict(type='SAMMaskDecoderHead', **TINY_HEAD)
    cfg.update(num_classes=2, out_channels=1, threshold=0.5)
    cfg.update(kwargs)
    cfg.setdefault('loss_decode', dict(type='CrossEntropyLoss', use_sigmoid=cfg.get('out_channels') == 1))
    return lambda ctx: MODELS.build(cfg)


def _segmentor(ctx, peft=None, num_classes=2, out_channels=1):
    multi = out_channels != 1
    return MODELS.build(
        dict(
            type='SAMEncoderDecoder',
            sam_checkpoint=str(ctx.sam),
            data_preprocessor=dict(type='SegDataPreProcessor', size=(TINY_IMG, TINY_IMG)),
            backbone=dict(type='SAMViT', arch=TINY_ARCH, img_size=TINY_IMG, peft=peft),
            decode_head=dict(
                type='SAMMaskDecoderHead',
                num_classes=num_classes,
                out_channels=out_channels,
                threshold=None if multi else 0.5,
                loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=not multi),
                **TINY_HEAD,
            ),
        )
    )


# --- checkpoints ------------------------------------------------------------------


def _sam_variant(ctx, name: str, edit: Callable[[dict], None]) -> Path:
    state = torch.load(ctx.sam, weights_only=True)
    edit(state)
    path = ctx.tmp / name
    torch.save(state, path)
    return path


def _truncated(ctx, name: str) -> Path:
    path = ctx.tmp / name
    path.write_bytes(ctx.sam.read_bytes()[:4096])
    return path


def _sam_of_another_arch(ctx):
    _backbone(ctx, arch=dict(TINY_ARCH, embed_dims=64), checkpoint=str(ctx.sam))


def _sam_missing_keys(ctx):
    path = _sam_variant(ctx, 'sam_missing.pth', lambda s: s.pop('image_encoder.blocks.1.mlp.lin1.weight'))
    _backbone(ctx, checkpoint=str(path))


def _sam_corrupt(ctx):
    _backbone(ctx, checkpoint=str(_truncated(ctx, 'sam_truncated.pth')))


def _sam_not_found(ctx):
    _backbone(ctx, checkpoint=str(ctx.tmp / 'no_such_sam.pth'))


def _training_checkpoint_corrupt(ctx):
    CheckpointLoader.load_checkpoint(str(_truncated(ctx, 'iter_8_truncated.pth')), map_location='cpu')


def _training_checkpoint_runs_code(ctx):
    path = ctx.tmp / 'iter_8_crafted.pth'
    torch.save({'state_dict': {}, 'meta': {'note': _RunsCode()}}, path)
    CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def _training_checkpoint_of_another_peft(ctx):
    saved = _segmentor(ctx, peft=dict(type='LoRA', rank=2, targets=('q', 'v')))
    checkpoint = {'meta': {}, 'state_dict': dict(saved.state_dict())}
    hook = SAMCheckpointHook()
    runner = SimpleNamespace(model=saved, logger=logging.getLogger('test'))
    hook.before_save_checkpoint(runner, checkpoint)
    other = _segmentor(ctx, peft=dict(type='SSF'))
    hook.after_load_checkpoint(SimpleNamespace(model=other, logger=runner.logger), checkpoint)


# --- data ----------------------------------------------------------------------------


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _image(ctx, name='img.png', size=(64, 64)) -> Path:
    return _write(ctx.tmp / name, np.full((*size, 3), 100, np.uint8))


def _mask(ctx, name='mask.png', size=(64, 64), value=1, channels=None) -> Path:
    shape = size if channels is None else (*size, channels)
    return _write(ctx.tmp / name, np.full(shape, value, np.uint8))


def _pipeline(img: Path, mask: Path, *checks: dict) -> dict:
    pipeline = Compose(
        [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), *checks]
        if checks
        else [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    )
    return pipeline(dict(img_path=str(img), seg_map_path=str(mask), seg_fields=[], reduce_zero_label=False))


def _mask_of_other_size(ctx):
    _pipeline(_image(ctx), _mask(ctx, 'small_mask.png', size=(32, 48)), dict(type='CheckSegSample'))


def _colour_mask(ctx):
    _pipeline(_image(ctx), _mask(ctx, 'rgb_mask.png', channels=3), dict(type='CheckSegSample'))


def _labels_out_of_range_in_pipeline(ctx):
    mask = _mask(ctx, 'mask_0_255_7.png', value=7)
    _pipeline(_image(ctx), mask, dict(type='CheckSegSample', num_classes=2))


def _check_before_annotations(ctx):
    Compose([dict(type='LoadImageFromFile'), dict(type='CheckSegSample')])(dict(img_path=str(_image(ctx))))


def _corrupt_image(ctx):
    bad = ctx.tmp / 'broken_image.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    _pipeline(bad, _mask(ctx))


def _corrupt_binary_mask(ctx):
    bad = ctx.tmp / 'broken_mask.png'
    bad.write_bytes(b'not an image')
    Compose([dict(type='LoadBinaryAnnotations')])(
        dict(seg_map_path=str(bad), seg_fields=[], reduce_zero_label=False)
    )


def _labels_out_of_range_in_loss(ctx):
    head = _head()(ctx).train()
    samples = []
    for i, value in enumerate((1, 3)):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), seg_map_path=f'ann_dir/train/{i:05d}.png'))
        sample.gt_sem_seg = PixelData(data=torch.full((1, 64, 64), value))
        samples.append(sample)
    head.loss([torch.randn(2, 32, 4, 4)], samples, train_cfg={})


def _dataset(ctx, split='train', checked=False, **kwargs):
    cfg = dict(
        data_root=str(ctx.multiclass),
        data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        img_suffix='.png',
        seg_map_suffix='.png',
        metainfo=dict(classes=('background', 'stripes', 'checker', 'dots')),
    )
    cfg.update(kwargs)
    return CheckedSegDataset(**cfg) if checked else DATASETS.build(dict(type='BaseSegDataset', **cfg))


def _empty_folder(ctx):
    (ctx.tmp / 'empty/img_dir/train').mkdir(parents=True)
    (ctx.tmp / 'empty/ann_dir/train').mkdir(parents=True)
    _dataset(ctx, checked=True, data_root=str(ctx.tmp / 'empty'))


def _empty_dataset_reaches_training(ctx):
    (ctx.tmp / 'empty2/img_dir/train').mkdir(parents=True)
    dataset = _dataset(ctx, data_root=str(ctx.tmp / 'empty2'), serialize_data=False)
    check_head_fits_dataset(_segmentor(ctx), dataset, 'train')


def _missing_mask(ctx):
    root = ctx.tmp / 'nomask'
    _write(root / 'img_dir/train/a.png', np.zeros((64, 64, 3), np.uint8))
    _write(root / 'img_dir/train/b.png', np.zeros((64, 64, 3), np.uint8))
    _write(root / 'ann_dir/train/a.png', np.zeros((64, 64), np.uint8))
    _dataset(ctx, checked=True, data_root=str(root))


def _num_classes_vs_dataset(ctx):
    model = _segmentor(ctx, num_classes=3, out_channels=3)
    check_head_fits_dataset(model, _dataset(ctx), 'train')


def _binary_head_on_multiclass_dataset(ctx):
    check_head_fits_dataset(_segmentor(ctx), _dataset(ctx, split='val'), 'val')


# --- a user's own data, through the real tools ----------------------------------------


class ToolFailed(Exception):
    """A tool's ``main`` returned a non-zero status; the message is what it printed to stderr."""


def _tool(path: str, *argv) -> None:
    """Run a tool's ``main`` in-process; a non-zero return raises :class:`ToolFailed` with its stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = load_tool(path).main([str(a) for a in argv])
    if status:
        raise ToolFailed(stderr.getvalue())


def _user_project(ctx, name: str, edit: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
    """README-layout data (then ``edit(data_root)``) and the README recipe config; returns (config, data)."""
    root = ctx.tmp / name
    data = root / 'data/my_data'
    write_user_data(data, {'train': [(70, 90), (64, 64)], 'val': [(67, 93)]})
    if edit is not None:
        edit(data)
    return write_configs(root, data, ctx.sam), data


def _train(ctx, name: str, edit: Callable[[Path], None] | None = None, *options: str) -> Path:
    cfg, _ = _user_project(ctx, name, edit)
    work = ctx.tmp / name / 'work'
    _tool('tools/train.py', cfg, '--work-dir', work, *options)
    return work


def _put_mask(values: np.ndarray) -> Callable[[Path], None]:
    return lambda data: _write(data / 'masks/train/0000.png', values)


def _instance_ids() -> np.ndarray:
    ids = np.zeros((70, 90), np.uint8)
    for i in range(124):
        ids[(i // 18) * 10 : (i // 18) * 10 + 8, (i % 18) * 5 : (i % 18) * 5 + 4] = i + 1
    return ids


def _zero_one_with_ignore_border() -> np.ndarray:
    mask = np.zeros((70, 90), np.uint8)
    mask[20:50, 30:60] = 1
    mask[:3], mask[-3:], mask[:, :3], mask[:, -3:] = 255, 255, 255, 255
    return mask


def _sixteen_bit_images(data: Path) -> None:
    for path in (data / 'images/train').glob('*.jpg'):
        image = cv2.imread(str(path)).astype(np.uint16) * 16  # 12-bit microscopy range
        assert cv2.imwrite(str(path.with_suffix('.png')), image)
        path.unlink()


def _trained(ctx) -> tuple[Path, Path, Path]:
    """One 2-iteration training of the recipe (LoRA rank 4), shared by the cases: (config, data, ckpt)."""
    if getattr(ctx, 'trained', None) is None:
        cfg, data = _user_project(ctx, 'trained')
        work = ctx.tmp / 'trained/work'
        _tool(
            'tools/train.py',
            cfg,
            '--work-dir',
            work,
            '--cfg-options',
            'train_cfg.max_iters=2',
            'param_scheduler.0.end=2',
            'default_hooks.checkpoint.interval=2',
        )
        ctx.trained = (cfg, data, work / 'iter_2.pth')
    return ctx.trained


_RANK_2 = ('--cfg-options', 'model.backbone.peft.rank=2')


def _test_with_other_rank(ctx):
    cfg, _, ckpt = _trained(ctx)
    _tool('tools/test.py', cfg, ckpt, '--work-dir', ctx.tmp / 'test_rank2', *_RANK_2)


def _load_from_other_rank(ctx):
    cfg, _, ckpt = _trained(ctx)
    _tool('tools/train.py', cfg, '--work-dir', ctx.tmp / 'load_rank2', *_RANK_2, f'load_from={ckpt}')


def _resume_with_other_rank(ctx):
    cfg, _, ckpt = _trained(ctx)
    work = ctx.tmp / 'resume_rank2'
    work.mkdir()
    shutil.copy(ckpt, work / ckpt.name)
    (work / 'last_checkpoint').write_text(str(work / ckpt.name))
    _tool('tools/train.py', cfg, '--work-dir', work, '--resume', *_RANK_2)


def _merge_onto_its_input(ctx):
    cfg, _, ckpt = _trained(ctx)
    _tool('tools/model_converters/merge_peft.py', cfg, ckpt, ckpt)


def _merge_onto_an_existing_file(ctx):
    cfg, _, ckpt = _trained(ctx)
    existing = ctx.tmp / 'merged_before.pth'
    existing.write_bytes(b'keep me')
    _tool('tools/model_converters/merge_peft.py', cfg, ckpt, existing)


def _infer_into_a_file(ctx):
    cfg, data, ckpt = _trained(ctx)
    target = ctx.tmp / 'not_a_folder.txt'
    target.write_text('x')
    _tool('tools/infer.py', cfg, ckpt, data / 'images/val', '--out-dir', target)


def _infer_on_16_bit(ctx):
    cfg, data, ckpt = _trained(ctx)
    image = (np.random.default_rng(0).integers(0, 4096, (50, 60))).astype(np.uint16)
    _write(ctx.tmp / 'scan_16bit.png', image)
    _tool('tools/infer.py', cfg, ckpt, ctx.tmp / 'scan_16bit.png', '--out-dir', ctx.tmp / 'pred16')


def _test_with_threshold(ctx):
    cfg, _, ckpt = _trained(ctx)
    options = ('--cfg-options', 'model.decode_head.threshold=1.5')
    _tool('tools/test.py', cfg, ckpt, '--work-dir', ctx.tmp / 'thr', *options)


def _diverging_run(ctx):
    _train(ctx, 'diverge', None, '--cfg-options', 'optim_wrapper.optimizer.lr=1e6')


def _prompted_project(ctx, name: str, backbone: dict | None = None) -> Path:
    """Synthetic binary data and the prompted demo config on the tiny SAM (tests/tools/test_prompted_tools.py)."""
    from tests.tools.test_prompted_tools import prompted_config  # noqa: PLC0415  (a test module: only here)

    root = ctx.tmp / name
    generate_synthetic_dataset(root / 'data', num_train=2, num_val=1, img_size=(64, 80), mode='binary')
    return prompted_config(root / 'cfg.py', root / 'data', ctx.sam, backbone or dict(peft=None), {})


def _prompted_test(ctx, name: str, *argv, checkpoint: str = 'none', backbone: dict | None = None) -> None:
    cfg = _prompted_project(ctx, name, backbone)
    _tool('tools/test.py', cfg, checkpoint, '--work-dir', ctx.tmp / name / 'work', *argv)


CASES = [
    # configuration
    (
        'unknown PEFT type',
        _peft(dict(type='LoRAX')),
        ValueError,
        r"unknown PEFT type 'LoRAX'; registered: \[",
    ),
    ('LoRA rank 0', _peft(dict(type='LoRA', rank=0)), ValueError, r'LoRA rank must be a positive int, got 0'),
    ('Conv-LoRA rank < 0', _peft(dict(type='ConvLoRA', rank=-2)), ValueError, r'ConvLoRA rank .* got -2'),
    (
        'LoRA dropout 1',
        _peft(dict(type='LoRA', dropout=1.0)),
        ValueError,
        r'dropout must be in \[0, 1\), got 1.0',
    ),
    (
        'Conv-LoRA k > experts',
        _peft(dict(type='ConvLoRA', num_experts=2, k=3)),
        ValueError,
        r'k must be in \[1, 2\]',
    ),
    (
        'COBOT V % 4 != 0',
        _peft(dict(type='COBOT', host=dict(type='LoRA', rank=3))),
        ValueError,
        r'quaternion head needs a slot width .* divisible by 4, got 3',
    ),
    (
        'bad arch name',
        lambda ctx: _backbone(ctx, arch='vit_x'),
        ValueError,
        r"arch must be one of .*got 'vit_x'",
    ),
    (
        'unknown arch key',
        lambda ctx: _backbone(ctx, arch=dict(TINY_ARCH, depth=2)),
        ValueError,
        r"unknown arch keys \['depth'\]",
    ),
    (
        'bad out_indices',
        lambda ctx: _backbone(ctx, out_indices=(0, 5)),
        ValueError,
        r'out_indices \[5\] out of range for 2 blocks',
    ),
    (
        'img_size not divisible by patch',
        lambda ctx: _backbone(ctx, img_size=72),
        ValueError,
        r'img_size must be a positive multiple of the patch size 16, got 72',
    ),
    ('unknown head mode', _head(mode='tokens'), ValueError, r"mode must be one of .*got 'tokens'"),
    (
        'num_queries 0',
        _head(
            mode='mask_classification',
            out_channels=None,
            threshold=None,
            num_queries=0,
            loss_decode=dict(type='MaskClassificationLoss'),
        ),
        ValueError,
        r'num_queries must be a positive int, got 0',
    ),
    (
        'threshold with multi-class',
        _head(num_classes=4, out_channels=4, threshold=0.5),
        ValueError,
        r'threshold=0.5 only applies to a binary head with out_channels=1; this head has 4 output channels',
    ),
    (
        'out_channels=1 with 4 classes',
        _head(num_classes=4, out_channels=1),
        ValueError,
        r'out_channels=1 .* is for binary segmentation, num_classes=2; got num_classes=4',
    ),
    (
        'MaskClassificationLoss classes differ',
        _head(
            mode='mask_classification',
            num_classes=3,
            out_channels=None,
            threshold=None,
            loss_decode=dict(type='MaskClassificationLoss', num_classes=4),
        ),
        ValueError,
        r'MaskClassificationLoss num_classes=4 differs from the head num_classes=3',
    ),
    (
        'decoder heads do not divide embed_dims',
        _head(decoder_num_heads=3),
        ValueError,
        r'embed_dims=32 must be divisible by 8 and by decoder_num_heads=3',
    ),
    (
        'CPU AMP dtype',
        lambda ctx: PortableAmpOptimWrapper(
            optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), dtype='float64'
        ),
        ValueError,
        r"dtype must be one of \['bfloat16', 'float16'\], got 'float64'",
    ),
    # checkpoints
    (
        'SAM checkpoint of another arch',
        _sam_of_another_arch,
        ValueError,
        r'(?s)cannot load .*sam_tiny\.pth into SAMViT: .*size mismatch for pos_embed',
    ),
    (
        'SAM checkpoint missing keys',
        _sam_missing_keys,
        ValueError,
        r'cannot load .*sam_missing\.pth into SAMViT:\s+missing keys \(1\): blocks\.1\.mlp\.lin1\.weight',
    ),
    ('corrupt SAM checkpoint', _sam_corrupt, ValueError, r'cannot read checkpoint .*sam_truncated\.pth: '),
    (
        'missing SAM checkpoint',
        _sam_not_found,
        FileNotFoundError,
        r'checkpoint file not found: .*no_such_sam\.pth',
    ),
    (
        'corrupt training checkpoint',
        _training_checkpoint_corrupt,
        ValueError,
        r'cannot read checkpoint .*iter_8_truncated\.pth \(truncated, corrupt or not a torch checkpoint\)',
    ),
    (
        'checkpoint that would run code',
        _training_checkpoint_runs_code,
        pickle.UnpicklingError,
        r'refused to load checkpoint .*iter_8_crafted\.pth: it holds objects \(posix\.getcwd\).*could run '
        r'arbitrary code',
    ),
    (
        'training checkpoint of another PEFT config',
        _training_checkpoint_of_another_peft,
        ValueError,
        r'(?s)does not fit the model built from the config:.*missing keys .*ssf.*unexpected keys .*lora_A',
    ),
    # data
    (
        'mask size differs from its image',
        _mask_of_other_size,
        ValueError,
        r'mask .*small_mask\.png \(image .*img\.png\): the mask is 32x48 \(HxW\), its image 64x64',
    ),
    (
        'colour mask',
        _colour_mask,
        ValueError,
        r'mask .*rgb_mask\.png .* has shape \(64, 64, 3\): a mask must be one',
    ),
    (
        'labels >= num_classes (pipeline)',
        _labels_out_of_range_in_pipeline,
        ValueError,
        r'mask .*mask_0_255_7\.png .* holds labels \[7\] outside \[0, 2\)',
    ),
    (
        'labels >= num_classes (decode head loss)',
        _labels_out_of_range_in_loss,
        ValueError,
        r'labels outside \[0, 2\) .* in 1 mask\(s\):.*ann_dir/train/00001\.png: \[3\]',
    ),
    (
        'check placed before loading',
        _check_before_annotations,
        ValueError,
        r'img\.png: place it after LoadAnnotations',
    ),
    ('corrupt image', _corrupt_image, AssertionError, r'failed to load image: .*broken_image\.png'),
    ('corrupt mask', _corrupt_binary_mask, ValueError, r'cannot decode the mask .*broken_mask\.png'),
    (
        'missing mask',
        _missing_mask,
        FileNotFoundError,
        r'1 of 2 images in .*img_dir/train have no mask.*b\.png',
    ),
    (
        'empty dataset folder',
        _empty_folder,
        ValueError,
        r"no image ending in '\.png' found in the folder .*empty/img_dir/train",
    ),
    (
        'empty dataset reaching training',
        _empty_dataset_reaches_training,
        ValueError,
        r"the train dataset is empty \(BaseSegDataset, data_root='.*empty2'",
    ),
    (
        'num_classes differs from the dataset',
        _num_classes_vs_dataset,
        ValueError,
        r"decode_head\.num_classes=3 but the train dataset has 4 classes \('background', 'stripes', 'checker', "
        r"'dots'\) \(BaseSegDataset, data_root='.*multiclass'",
    ),
    (
        'out_channels=1 on a multi-class dataset',
        _binary_head_on_multiclass_dataset,
        ValueError,
        r'decode_head has out_channels=1 .* but the val dataset has 4 classes',
    ),
    # a user's own data, through the real tools
    (
        'instance-id mask (tools/train.py)',
        lambda ctx: _train(ctx, 'ids', _put_mask(_instance_ids())),
        ValueError,
        r'(?s)image .*images/train/0000\.jpg, mask .*masks/train/0000\.png\).*masks/train/0000\.png is not a 0/255 '
        r'binary mask: it holds values \[0, 1, 2, 3, .* \(125 distinct values\)',
    ),
    (
        '0/1 mask with a 255 border (tools/train.py)',
        lambda ctx: _train(ctx, 'border', _put_mask(_zero_one_with_ignore_border())),
        ValueError,
        r'masks/train/0000\.png holds 0/1 labels with 255 \(mmseg: ignore\), values \[0, 1, 255\]: a threshold '
        r'would turn them into a foreground border',
    ),
    (
        'mask of another size than its image (tools/train.py)',
        lambda ctx: _train(ctx, 'sizes', _put_mask(np.zeros((40, 50), np.uint8))),
        ValueError,
        r'mask .*masks/train/0000\.png \(image .*images/train/0000\.jpg\): the mask is 40x50 \(HxW\), its image 70x90',
    ),
    (
        '16-bit images (tools/train.py)',
        lambda ctx: _train(
            ctx, 'depth', _sixteen_bit_images, '--cfg-options', 'train_dataloader.dataset.img_suffix=.png'
        ),
        ValueError,
        r'images/train/000[01]\.png is a 16-bit image, which LoadImageFromFile reads as 8 bits .*'
        r"dict\(type='LoadAnyDepthImageFromFile'\)",
    ),
    (
        '16-bit image (tools/infer.py)',
        _infer_on_16_bit,
        ToolFailed,
        r"scan_16bit\.png is a 16-bit image, .* dict\(type='LoadAnyDepthImageFromFile'\)",
    ),
    (
        'checkpoint of another LoRA rank (tools/test.py)',
        _test_with_other_rank,
        ValueError,
        r'tensors have another shape \(backbone\.blocks\.0\.attn\.qkv\.lora_A.*: checkpoint \(4, 32\), model \(2, 32\)',
    ),
    (
        'load_from of another LoRA rank (tools/train.py)',
        _load_from_other_rank,
        ValueError,
        r'tensors have another shape \(backbone\.blocks\.0\.attn\.qkv\.lora_A.*: checkpoint \(4, 32\), model \(2, 32\)',
    ),
    (
        '--resume with another LoRA rank (tools/train.py)',
        _resume_with_other_rank,
        ValueError,
        r'tensors have another shape \(backbone\.blocks\.0\.attn\.qkv\.lora_A.*: checkpoint \(4, 32\), model \(2, 32\)',
    ),
    (
        'head threshold 1.5 (tools/test.py)',
        _test_with_threshold,
        ValueError,
        r'threshold must be a probability in \(0, 1\) .*got 1\.5',
    ),
    (
        'diverging run, lr 1e6 (tools/train.py)',
        _diverging_run,
        FloatingPointError,
        r'training stopped at iteration \d+: non-finite .*loss.* learning rate',
    ),
    (
        'merge_peft.py writing over its input',
        _merge_onto_its_input,
        ToolFailed,
        r'error: the output .*iter_2\.pth is the input .*iter_2\.pth: writing it would destroy the input',
    ),
    (
        'merge_peft.py writing over an existing file',
        _merge_onto_an_existing_file,
        ToolFailed,
        r'error: the output .*merged_before\.pth exists: pass --overwrite',
    ),
    (
        'infer --out-dir is a file (tools/infer.py)',
        _infer_into_a_file,
        ToolFailed,
        r'error: --out-dir .*not_a_folder\.txt is a file',
    ),
    (
        'peft given as a string (tools/train.py)',
        lambda ctx: _train(ctx, 'peftstr', None, '--cfg-options', 'model.backbone.peft=LoRA'),
        TypeError,
        r"peft must be a dict such as dict\(type='LoRA', rank=4\) .*got 'LoRA': write peft=dict\(type='LoRA'\)",
    ),
    (
        'num_classes=1 on the head (tools/train.py)',
        lambda ctx: _train(ctx, 'onecls', None, '--cfg-options', 'model.decode_head.num_classes=1'),
        ValueError,
        r'num_classes must be an int >= 2 .*got 1; for binary segmentation write num_classes=2, out_channels=1',
    ),
    # prompted: COCO exports of labelling tools (CVAT, Label Studio, Roboflow)
    (
        'CVAT rectangle: segmentation [] with a bbox',
        prompted_data.cvat_rectangle,
        ValueError,
        r'(?s)1 of 5 annotations of .*instances_default\.json have an empty segmentation.*annotation 5 '
        r"\(image .*images/scan_grey\.png, bbox \[18\.0, 2\.0, 9\.0, 6\.0\]\).*empty_segmentation='drop'",
    ),
    (
        'CVAT project drawn with the brush only (iscrowd=1)',
        prompted_data.cvat_brush_only,
        ValueError,
        r'of the 4 annotations of .*instances_default\.json, none gives an instance to train or score: 4 are '
        r"crowd \(iscrowd=1\).*LoadCOCOInstances\(crowd='instance'\) makes each an instance",
    ),
    (
        'Label Studio rectangle: segmentation []',
        prompted_data.label_studio_rectangle,
        ValueError,
        r'(?s)annotations of .*result\.json have an empty segmentation.*annotation 3 \(image .*images/scan_grey\.png',
    ),
    (
        'COCO image without height / width, its file unreadable',
        prompted_data.coco_image_without_size_unreadable,
        ValueError,
        r'image 1 of .*instances_default\.json has no "height" and "width", and its file .*images/street\.jpg '
        r'cannot be read',
    ),
    (
        'COCO image file of 0 bytes',
        prompted_data.coco_empty_image_file,
        ValueError,
        r'1 of 4 images of .*instances_default\.json are empty files \(0 bytes\): .*images/logo_rgba\.png',
    ),
    (
        'COCO image without file_name',
        prompted_data.coco_image_without_file_name,
        ValueError,
        r'annotations/instances\.json: images 2 have no "file_name"',
    ),
    (
        'COCO JSON of 3 categories on a 2-class prompted head',
        prompted_data.coco_categories_vs_prompted_head,
        ValueError,
        r'(?s)^(?!.*out_channels)model\.decode_head\.num_classes=2 but the train dataset has 4 classes '
        r"\('background', 'cat', 'dog', 'bird'\) \(COCOInstanceSegDataset.*instances_default\.json.*"
        r'model\.decode_head\.num_classes=4',
    ),
    (
        'COCO empty_segmentation misspelt',
        prompted_data.coco_empty_segmentation_option,
        ValueError,
        r"empty_segmentation must be one of \('error', 'drop'\), got 'skip'",
    ),
    # prompted: instance maps and prompt files
    (
        'instance-id map painted in colours',
        prompted_data.colour_instance_map,
        ValueError,
        r'ann/cell_007_instances\.png: an instance-id map must be a single-channel 8- or 16-bit image .*got '
        r'uint8 of shape \(4, 6, 3\)',
    ),
    (
        'RandomFlip after GenerateInstances',
        prompted_data.flip_after_generate_instances,
        ValueError,
        r'(?s)mask .*ann_dir/train/00000\.png \(image .*img_dir/train/00000\.png\): a pipeline step after '
        r'GenerateInstances moved the image and gt_seg_map but not the instance masks.*flip None -> True',
    ),
    (
        'no instance in any training image (min_area)',
        prompted_data.no_instance_in_any_training_image,
        ValueError,
        r'(?s)dropped \(returned None for\) 21 samples in a row, 2 distinct images of 2 \(.*img_dir/train/0000'
        r"[01]\.png.*GenerateInstances\(on_empty='skip'\) drops every image without an instance of at least "
        r'min_area=1000000 pixels',
    ),
    (
        'image file of 0 bytes in an mmseg-layout dataset',
        prompted_data.empty_image_file_in_a_prompted_dataset,
        ValueError,
        r'1 image or mask files of 2 samples are empty \(0 bytes\): .*img_dir/train/00001\.png',
    ),
    # prompted: tools/infer.py
    (
        'prompt file: a box of 3 numbers (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py', *infer_argv(ctx, '--boxes', {'{0}': [[4, 6, 40]], '{1}': [[1, 1, 9, 9]]})
        ),
        ToolFailed,
        r"--boxes file .*boxes\.json, image '\d+\.png', box 0: a box is \[x0, y0, x1, y1\], 4 numbers; got 3 "
        r'\(a list, \[4, 6, 40\]\)',
    ),
    (
        'prompt file: a flat point list (tools/infer.py)',
        lambda ctx: _tool('tools/infer.py', *infer_argv(ctx, '--points', {'{0}': [10, 12], '{1}': [[5, 5]]})),
        ToolFailed,
        r"--points file .*points\.json, image '\d+\.png': expected a list of points \[\[x, y\] or \[x, y, label\], "
        r'\.\.\.\] .*got a flat list of numbers: one point is written \[\[10, 12\]\]',
    ),
    (
        'prompt file: numbers as strings (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(ctx, '--boxes', {'{0}': [['4', '6', '40', '50']], '{1}': [[1, 1, 9, 9]]}),
        ),
        ToolFailed,
        r"--boxes file .*boxes\.json, image '\d+\.png', box 0: expected a box \[x0, y0, x1, y1\] of numbers, got a "
        r'string, "4"',
    ),
    (
        'prompt file: an object where a list belongs (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(ctx, '--boxes', {'{0}': {'box': [4, 6, 40, 50]}, '{1}': [[1, 1, 9, 9]]}),
        ),
        ToolFailed,
        r"--boxes file .*boxes\.json, image '\d+\.png': expected a list of boxes \[\[x0, y0, x1, y1\], \.\.\.\], got "
        r'an object, \{"box": \[4, 6, 40, 50\]\}',
    ),
    (
        'prompt file: a list, not an object of images (tools/infer.py)',
        lambda ctx: _tool('tools/infer.py', *infer_argv(ctx, '--boxes', [[4, 6, 40, 50]])),
        ToolFailed,
        r'--boxes file .*boxes\.json must be a JSON object mapping image file names to prompts, \{"0001\.png": '
        r'\.\.\.\}; got a list, \[\[4, 6, 40, 50\]\]',
    ),
    (
        'prompt file: an empty list of boxes (tools/infer.py)',
        lambda ctx: _tool('tools/infer.py', *infer_argv(ctx, '--boxes', {'{0}': [], '{1}': [[1, 1, 9, 9]]})),
        ToolFailed,
        r"--boxes file .*boxes\.json, image '\d+\.png': the list of boxes is empty; give at least one box",
    ),
    (
        'prompt file: NaN in a box (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(ctx, '--boxes', {'{0}': [[4, float('nan'), 40, 50]], '{1}': [[1, 1, 9, 9]]}),
        ),
        ToolFailed,
        r"--boxes file .*boxes\.json, image '\d+\.png', box 0: nan is not a finite number",
    ),
    (
        'prompt file: point label 2 (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py', *infer_argv(ctx, '--points', {'{0}': [[10, 12, 2]], '{1}': [[5, 5]]})
        ),
        ToolFailed,
        r"--points file .*points\.json, image '\d+\.png', point 0: point label 2\.0 must be 1 \(positive\) or 0 "
        r'\(negative\)',
    ),
    (
        'prompt files: boxes and point lists do not pair up (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(
                ctx,
                '--boxes',
                {'{0}': [[4, 6, 40, 50], [30, 10, 78, 60]], '{1}': [[1, 1, 9, 9]]},
                '--points',
                {'{0}': [[10, 12]], '{1}': [[5, 5]]},
            ),
        ),
        ToolFailed,
        r"image '\d+\.png': 2 boxes \(--boxes file .*boxes\.json\) and 1 point lists \(--points file "
        r'.*points\.json\); give one point list per box',
    ),
    (
        'prompt file: an image not among the inputs (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(
                ctx,
                '--boxes',
                {'{0}': [[4, 6, 40, 50]], '{1}': [[1, 1, 9, 9]], 'IMG_0042.png': [[1, 1, 9, 9]]},
            ),
        ),
        ToolFailed,
        r'--boxes file .*boxes\.json names 1 image\(s\) that are not among the 2 input images \(\d+\.png, '
        r'\d+\.png\): "IMG_0042\.png"',
    ),
    (
        'prompt file: image paths as keys (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(ctx, '--boxes', {'img_dir/val/{0}': [[4, 6, 40, 50]], '{1}': [[1, 1, 9, 9]]}),
        ),
        ToolFailed,
        r'keys are file names, not paths: write "\d+\.png" for "img_dir/val/\d+\.png"',
    ),
    (
        'prompt file: 65536 objects in an image (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py',
            *infer_argv(ctx, '--boxes', {'{0}': [[1, 1, 9, 9]] * 65536, '{1}': [[1, 1, 9, 9]]}),
        ),
        ToolFailed,
        r"image '\d+\.png' \(--boxes file .*boxes\.json\): 65536 objects; at most 65535 fit the 16-bit label map",
    ),
    (
        'box past the last pixel, x1 = W (tools/infer.py)',
        lambda ctx: _tool('tools/infer.py', *infer_argv(ctx, '--boxes', '4,6,80,50')),
        ToolFailed,
        r"--boxes, image '\d+\.png', object 0: box \[4\.0, 6\.0, 80\.0, 50\.0\] does not fit the 80x64 \(WxH\) image: "
        r'expected 0 <= x0 <= x1 <= 79 and 0 <= y0 <= y1 <= 63',
    ),
    (
        'box starting with a minus sign (tools/infer.py)',
        lambda ctx: _tool('tools/infer.py', *infer_argv(ctx, '--boxes', '-3,4,10,12')),
        ToolFailed,
        r'box \[-3\.0, 4\.0, 10\.0, 12\.0\] does not fit the 80x64 \(WxH\) image: expected 0 <= x0',
    ),
    (
        'empty image file (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py', *infer_argv(ctx, '--boxes', '4,6,40,50', inputs=folder_with_an_empty_image(ctx))
        ),
        ToolFailed,
        r'image file .*images/empty\.png is empty \(0 bytes\)',
    ),
    (
        'a scores.json that is not JSON in --out-dir (tools/infer.py)',
        lambda ctx: _tool(
            'tools/infer.py', *infer_argv(ctx, '--boxes', '4,6,40,50', scores_json='{"a.png": [0.9],')
        ),
        ToolFailed,
        r'out/scores\.json exists but is not JSON \(.*\); new scores would replace it: move it away',
    ),
    # prompted: checkpoints
    (
        'tools/test.py on the frozen weights of another SAM',
        lambda ctx: _tool(
            'tools/test.py',
            *_trained(ctx)[::2],
            '--work-dir',
            ctx.tmp / 'test_medsam',
            '--cfg-options',
            f'model.sam_checkpoint={_sam_variant(ctx, "medsam_tiny.pth", lambda s: [v.add_(0.01) for v in s.values()])}',
        ),
        ValueError,
        r"(?s)frozen weights differ .*SAM checkpoint \['.*sam_tiny\.pth'\] \(sha256:.*model\.sam_checkpoint "
        r"\['.*medsam_tiny\.pth'\] .*--cfg-options allow_other_sam_checkpoint=True",
    ),
    (
        'tools/infer.py on the frozen weights of another SAM',
        lambda ctx: _tool(
            'tools/infer.py',
            *_trained(ctx)[::2],
            _trained(ctx)[1] / 'images/val',
            '--out-dir',
            ctx.tmp / 'infer_medsam',
            '--cfg-options',
            f'model.sam_checkpoint={_sam_variant(ctx, "medsam_tiny.pth", lambda s: [v.add_(0.01) for v in s.values()])}',
        ),
        ToolFailed,
        r"(?s)error: the frozen weights differ .*\['.*sam_tiny\.pth'\] .*\['.*medsam_tiny\.pth'\] "
        r'.*allow_other_sam_checkpoint=True',
    ),
    (
        'load_from on the frozen weights of another SAM (tools/train.py)',
        lambda ctx: _tool(
            'tools/train.py',
            _trained(ctx)[0],
            '--work-dir',
            ctx.tmp / 'load_medsam',
            '--cfg-options',
            f'load_from={_trained(ctx)[2]}',
            f'model.sam_checkpoint={_sam_variant(ctx, "medsam_tiny.pth", lambda s: [v.add_(0.01) for v in s.values()])}',
        ),
        ValueError,
        r"(?s)frozen weights differ .*\['.*sam_tiny\.pth'\] .*\['.*medsam_tiny\.pth'\] .*allow_other_sam_checkpoint",
    ),
    (
        '--resume on the frozen weights of another SAM (tools/train.py)',
        lambda ctx: _tool(
            'tools/train.py',
            _trained(ctx)[0],
            '--work-dir',
            ctx.tmp / 'resume_medsam',
            '--resume',
            '--cfg-options',
            f'load_from={_trained(ctx)[2]}',
            f'model.sam_checkpoint={_sam_variant(ctx, "medsam_tiny.pth", lambda s: [v.add_(0.01) for v in s.values()])}',
        ),
        ValueError,
        r"(?s)frozen weights differ .*\['.*sam_tiny\.pth'\] .*\['.*medsam_tiny\.pth'\] .*allow_other_sam_checkpoint",
    ),
    (
        'allow_other_sam_checkpoint not a bool (tools/test.py)',
        lambda ctx: _tool(
            'tools/test.py',
            *_trained(ctx)[::2],
            '--work-dir',
            ctx.tmp / 'test_allow_yes',
            '--cfg-options',
            'allow_other_sam_checkpoint=yes',
        ),
        TypeError,
        r"allow_other_sam_checkpoint must be True or False, got 'yes'",
    ),
    # prompted: pipelines, tools/train.py and tools/test.py
    (
        '--tta on a prompted config (tools/test.py)',
        lambda ctx: _prompted_test(ctx, 'tta', '--tta'),
        ValueError,
        r'--tta does not apply to SAMPromptedEncoderDecoder: its predictions follow per-instance prompts',
    ),
    (
        'zero-shot baseline without SAM weights (tools/test.py none)',
        lambda ctx: _prompted_test(ctx, 'nosam', '--cfg-options', 'model.sam_checkpoint=None'),
        ValueError,
        r"none evaluates SAM's own weights, but the config names none: set model\.sam_checkpoint",
    ),
    (
        '--out is a file on a prompted config (tools/test.py)',
        lambda ctx: _prompted_test(
            ctx, 'outfile', '--out', _write(ctx.tmp / 'out.png', np.zeros((2, 2), np.uint8))
        ),
        ValueError,
        r'output_dir .*out\.png is a file, expected a folder',
    ),
    (
        'SAMResizeLongestSide told to squash',
        lambda ctx: Compose([dict(type='SAMResizeLongestSide', long_side=64, keep_ratio=False)]),
        ValueError,
        r'SAMResizeLongestSide sets keep_ratio itself .*got keep_ratio=False',
    ),
    (
        'SAMResizeLongestSide of 0 pixels',
        lambda ctx: Compose([dict(type='SAMResizeLongestSide', long_side=0)]),
        ValueError,
        r'long_side must be a positive int, got 0',
    ),
]


@pytest.fixture(scope='module')
def multiclass(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data') / 'multiclass'
    generate_synthetic_dataset(root, num_train=2, num_val=1, img_size=64, mode='multiclass')
    return root


@pytest.fixture(scope='module')
def trained(tmp_path_factory, sam_checkpoint) -> tuple[Path, Path, Path]:
    """The README recipe trained for 2 iterations (LoRA rank 4): (config, data root, checkpoint)."""
    ctx = SimpleNamespace(tmp=tmp_path_factory.mktemp('trained'), sam=sam_checkpoint)
    return _trained(ctx)


def test_the_table_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 80 and len(set(ids)) == len(ids)


@pytest.mark.slow
@pytest.mark.parametrize(('action', 'error', 'pattern'), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_with_a_clear_error(
    action, error, pattern, tmp_path, sam_checkpoint, multiclass, trained
):
    ctx = SimpleNamespace(tmp=tmp_path, sam=sam_checkpoint, multiclass=multiclass, trained=trained)
    with pytest.raises(error) as info:
        action(ctx)
    assert type(info.value) is error or error is AssertionError
    assert re.search(pattern, str(info.value)), f'{type(info.value).__name__}: {info.value}'
