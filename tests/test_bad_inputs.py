"""Bad configurations, checkpoints and data: each fails early with an error that names the problem.

One table: ``(id, action, error type, message pattern)``. Where data is at fault the
pattern includes the file (or folder) name.
"""

import logging
import os
import pickle
import re
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
from tests.conftest import TINY_ARCH, TINY_HEAD, TINY_IMG


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
]


@pytest.fixture(scope='module')
def multiclass(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data') / 'multiclass'
    generate_synthetic_dataset(root, num_train=2, num_val=1, img_size=64, mode='multiclass')
    return root


def test_the_table_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 20 and len(set(ids)) == len(ids)


@pytest.mark.parametrize(('action', 'error', 'pattern'), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_with_a_clear_error(action, error, pattern, tmp_path, sam_checkpoint, multiclass):
    ctx = SimpleNamespace(tmp=tmp_path, sam=sam_checkpoint, multiclass=multiclass)
    with pytest.raises(error) as info:
        action(ctx)
    assert type(info.value) is error or error is AssertionError
    assert re.search(pattern, str(info.value)), f'{type(info.value).__name__}: {info.value}'
