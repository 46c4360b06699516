"""Actions of the bad-input table (``tests/test_bad_inputs.py``) for prompted data: labelling-tool COCO
exports, instance maps and the frame of the instances. Each takes the table's ``ctx`` (``tmp``: a
fresh folder) and raises."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from mmcv.transforms import Compose
from mmseg.registry import DATASETS, MODELS

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.engine.hooks import check_head_fits_dataset
from tests.conftest import tiny_prompted_cfg
from tests.datasets import labelling_exports as exports

CVAT_JSON = 'annotations/instances_default.json'


def _coco(root: Path, ann_file: str, img_path: str = 'images', **kwargs) -> object:
    return DATASETS.build(exports.coco_dataset_cfg(root, ann_file, img_path, **kwargs))


def cvat_rectangle(ctx: SimpleNamespace) -> None:
    _coco(ctx.tmp, exports.write_cvat_export(ctx.tmp))


def cvat_brush_only(ctx: SimpleNamespace) -> None:
    _coco(ctx.tmp, exports.write_cvat_export(ctx.tmp, brush_only=True))


def label_studio_rectangle(ctx: SimpleNamespace) -> None:
    _coco(ctx.tmp, exports.write_label_studio_export(ctx.tmp, rectangles=True), '')


def coco_image_without_size_unreadable(ctx: SimpleNamespace) -> None:
    exports.write_cvat_export(ctx.tmp, rectangles=False, drop_sizes=True)
    (ctx.tmp / 'images/street.jpg').write_bytes(b'<html>not found</html>')
    _coco(ctx.tmp, CVAT_JSON)


def coco_empty_image_file(ctx: SimpleNamespace) -> None:
    exports.write_cvat_export(ctx.tmp, rectangles=False)
    (ctx.tmp / 'images/logo_rgba.png').write_bytes(b'')
    _coco(ctx.tmp, CVAT_JSON)


def coco_image_without_file_name(ctx: SimpleNamespace) -> None:
    exports.write_cvat_export(ctx.tmp, rectangles=False)
    coco = json.loads((ctx.tmp / CVAT_JSON).read_text())
    del coco['images'][1]['file_name']
    (ctx.tmp / 'annotations/instances.json').write_text(json.dumps(coco))
    _coco(ctx.tmp, 'annotations/instances.json')


def coco_categories_vs_prompted_head(ctx: SimpleNamespace) -> None:
    dataset = _coco(ctx.tmp, exports.write_cvat_export(ctx.tmp, brush_only=True), crowd='instance')
    check_head_fits_dataset(MODELS.build(tiny_prompted_cfg()), dataset, 'train')


def coco_empty_segmentation_option(ctx: SimpleNamespace) -> None:
    _coco(ctx.tmp, exports.write_cvat_export(ctx.tmp), empty_segmentation='skip')


def _ids_sample(ctx: SimpleNamespace, ids: np.ndarray) -> dict:
    (ctx.tmp / 'ann').mkdir()
    assert cv2.imwrite(str(ctx.tmp / 'ann/cell_007.png'), np.ones(ids.shape[:2], np.uint8))
    assert cv2.imwrite(str(ctx.tmp / 'ann/cell_007_instances.png'), ids)
    return dict(
        seg_map_path=str(ctx.tmp / 'ann/cell_007.png'), img_path='img/cell_007.png', seg_fields=[],
        reduce_zero_label=False,
    )  # fmt: skip


def colour_instance_map(ctx: SimpleNamespace) -> None:
    ids = np.zeros((4, 6, 3), np.uint8)
    ids[1:3, 1:3] = (0, 0, 128)  # an object painted in a colour, not an id
    sample = _ids_sample(ctx, ids)
    Compose([dict(type='LoadAnnotations'), dict(type='LoadInstanceIdAnnotations')])(sample)


def _synthetic(ctx: SimpleNamespace) -> Path:
    root = ctx.tmp / 'data'
    generate_synthetic_dataset(root, num_train=2, num_val=1, img_size=(32, 40), mode='binary', seed=0)
    return root


def _mmseg_layout(root: Path, pipeline: list[dict], **kwargs) -> object:
    return DATASETS.build(
        dict(
            type='CheckedSegDataset',
            data_root=str(root),
            data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
            img_suffix='.png',
            seg_map_suffix='.png',
            metainfo=dict(classes=('background', 'foreground')),
            pipeline=pipeline,
            **kwargs,
        )
    )


def flip_after_generate_instances(ctx: SimpleNamespace) -> None:
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='GenerateInstances'),
        dict(type='SamplePrompts', box_jitter='none', num_pos_points=1),
        dict(type='RandomFlip', prob=1.0),
        dict(type='PackPromptedSegInputs'),
    ]
    _mmseg_layout(_synthetic(ctx), pipeline)[0]


def no_instance_in_any_training_image(ctx: SimpleNamespace) -> None:
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='GenerateInstances', min_area=10**6, on_empty='skip'),
        dict(type='PackPromptedSegInputs'),
    ]
    _mmseg_layout(_synthetic(ctx), pipeline, max_refetch=20)[0]


def empty_image_file_in_a_prompted_dataset(ctx: SimpleNamespace) -> None:
    root = _synthetic(ctx)
    (root / 'img_dir/train/00001.png').write_bytes(b'')
    _mmseg_layout(root, [dict(type='LoadImageFromFile'), dict(type='GenerateInstances')])
