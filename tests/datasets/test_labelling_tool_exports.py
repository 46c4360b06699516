"""COCO JSONs as CVAT and Label Studio export them: every annotation becomes an instance, or the
dataset says, when it is built, which did not and which option keeps them."""

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mmengine.logging import MMLogger
from mmseg.registry import DATASETS

from tests.conftest import run_tool
from tests.datasets import labelling_exports as exports
from tests.tools.test_prompted_tools import prompted_config


@contextlib.contextmanager
def warnings_logged() -> Iterator[list[str]]:
    """The WARNING records of MMEngine's current logger while the block runs."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _cvat(root: Path, crowd: str = 'ignore', empty_segmentation: str = 'error', **export: bool):
    """A CVAT export (``write_cvat_export(root, **export)``) as a dataset."""
    ann_file = exports.write_cvat_export(root, **export)
    cfg = exports.coco_dataset_cfg(
        root, ann_file, 'images', crowd=crowd, empty_segmentation=empty_segmentation
    )
    return DATASETS.build(cfg)


def _instances(dataset, i: int):
    return dataset[i]['data_samples'].gt_instances


def test_cvat_rectangles_are_refused_by_name(tmp_path):
    """CVAT writes a rectangle as segmentation [] with a bbox: no mask, and no silent drop."""
    with pytest.raises(
        ValueError,
        match=r'(?s)1 of 5 annotations of .*instances_default\.json have an empty segmentation, 1 of them with a '
        r'bbox only.*annotation 5 \(image .*images/scan_grey\.png, bbox \[18\.0, 2\.0, 9\.0, 6\.0\]\).*'
        r"empty_segmentation='drop'",
    ):
        _cvat(tmp_path)


def test_cvat_brush_masks_are_counted_when_ignored(tmp_path):
    """With crowd='ignore' the brush masks become ignore pixels: the log says so and names crowd='instance'."""
    with warnings_logged() as warnings:
        dataset = _cvat(tmp_path, empty_segmentation='drop')
    [warning] = [w for w in warnings if 'COCOInstanceSegDataset' in w]
    assert 'of the 5 annotations of' in warning and 'instances_default.json' in warning
    assert (
        "2 are crowd (iscrowd=1) and become ignore pixels under LoadCOCOInstances(crowd='ignore')" in warning
    )
    assert "LoadCOCOInstances(crowd='instance') makes each an instance" in warning
    assert '1 have an empty segmentation (a box or nothing, no mask) and are dropped' in warning
    assert '2 give instances' in warning
    street = dataset[0]['data_samples']
    assert street.gt_instances.labels.tolist() == [1]  # the polygon; the brush mask is ignored
    seg = street.gt_sem_seg.data[0].numpy()
    assert (seg[exports.BRUSH] == 255).all()


def test_cvat_brush_masks_as_instances(tmp_path):
    """crowd='instance' makes every brush mask an instance of its class; grey and RGBA images load as RGB."""
    with warnings_logged() as warnings:
        dataset = _cvat(tmp_path, crowd='instance', empty_segmentation='drop')
    [warning] = [w for w in warnings if 'COCOInstanceSegDataset' in w]
    assert (
        'crowd' not in warning and '1 have an empty segmentation' in warning and '4 give instances' in warning
    )
    assert dataset.metainfo['classes'] == ('background', 'cat', 'dog', 'bird')
    street, grey, rgba, unlabelled = (dataset[i] for i in range(4))
    for sample in (street, grey, rgba, unlabelled):
        assert sample['inputs'].shape == (3, exports.H, exports.W)
    instances = street['data_samples'].gt_instances
    assert instances.labels.tolist() == [1, 2]  # cat (category 1), dog (category 3)
    np.testing.assert_array_equal(instances.masks.numpy(), [exports.POLYGON, exports.BRUSH])
    assert grey['data_samples'].gt_instances.labels.tolist() == [3]  # bird (category 7), the brush
    np.testing.assert_array_equal(grey['data_samples'].gt_instances.masks[0].numpy(), exports.GREY_BRUSH)
    np.testing.assert_array_equal(rgba['data_samples'].gt_instances.masks[0].numpy(), exports.RGBA_POLYGON)
    assert len(unlabelled['data_samples'].gt_instances) == 0


def test_a_brush_only_project_fails_when_built(tmp_path):
    """Every object drawn with the brush: with crowd='ignore' nothing is an instance, said when built."""
    with pytest.raises(
        ValueError,
        match=r'of the 4 annotations of .*instances_default\.json, none gives an instance to train or score: '
        r"4 are crowd \(iscrowd=1\) and become ignore pixels under LoadCOCOInstances\(crowd='ignore'\).*"
        r"crowd='instance'",
    ):
        _cvat(tmp_path, brush_only=True)
    dataset = _cvat(tmp_path / 'ok', brush_only=True, crowd='instance')
    assert _instances(dataset, 0).labels.tolist() == [1, 2]


def test_label_studio_export(tmp_path):
    """Ids from 0, file names with the export's images/ folder, float polygons, a compressed RLE."""
    ann_file = exports.write_label_studio_export(tmp_path)
    with warnings_logged() as warnings:
        dataset = DATASETS.build(exports.coco_dataset_cfg(tmp_path, ann_file, ''))
    assert not [w for w in warnings if 'COCOInstanceSegDataset' in w]  # nothing lost: no warning
    assert dataset.metainfo['classes'] == ('background', 'bird', 'cat', 'dog')
    instances = _instances(dataset, 0)
    assert instances.labels.tolist() == [2, 3]
    np.testing.assert_array_equal(instances.masks.numpy(), [exports.POLYGON, exports.BRUSH])
    assert len(_instances(dataset, 1)) == 0
    assert _instances(dataset, 2).labels.tolist() == [1]
    (tmp_path / 'rect').mkdir()
    ann_file = exports.write_label_studio_export(tmp_path / 'rect', rectangles=True)
    with pytest.raises(
        ValueError, match=r'of .*result\.json have an empty .*annotation 3 \(image .*images/scan_grey'
    ):
        DATASETS.build(exports.coco_dataset_cfg(tmp_path / 'rect', ann_file, ''))


def test_images_without_their_size_in_the_json(tmp_path):
    """Sizes missing from the JSON are read from the image files' headers."""
    dataset = _cvat(tmp_path, drop_sizes=True, crowd='instance', empty_segmentation='drop')
    assert [dataset.get_data_info(i)['height'] for i in range(4)] == [exports.H] * 4
    assert _instances(dataset, 0).masks.shape == (2, exports.H, exports.W)
    (tmp_path / 'images/street.jpg').write_bytes(b'not an image')
    with pytest.raises(
        ValueError,
        match=r'image 1 of .*instances_default\.json has no "height" and "width", and its file '
        r'.*images/street\.jpg cannot be read',
    ):
        DATASETS.build(
            exports.coco_dataset_cfg(
                tmp_path, 'annotations/instances_default.json', 'images', empty_segmentation='drop'
            )
        )


def test_an_empty_image_file_is_named_when_built(tmp_path):
    exports.write_cvat_export(tmp_path, rectangles=False)
    (tmp_path / 'images/logo_rgba.png').write_bytes(b'')
    with pytest.raises(
        ValueError,
        match=r'1 of 4 images of .*instances_default\.json are empty files \(0 bytes\): .*logo_rgba\.png',
    ):
        DATASETS.build(exports.coco_dataset_cfg(tmp_path, 'annotations/instances_default.json', 'images'))


def _export_config(tmp_path: Path, root: Path, sam_checkpoint: Path, crowd: str, num_classes: int) -> Path:
    """The tiny prompted config of the tool tests on a CVAT export, its training pipeline loading COCO."""
    cfg = prompted_config(
        tmp_path / 'base.py', root, sam_checkpoint, dict(peft=None), dict(num_classes=num_classes)
    )
    path = tmp_path / f'cvat_{crowd}_{num_classes}.py'
    path.write_text(f"""
_base_ = [{str(cfg)!r}]
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadCOCOInstances', crowd={crowd!r}),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='GenerateInstances', on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='shift', max_shift=5, num_pos_points=1),
    dict(type='PackPromptedSegInputs')]
train_dataloader = dict(dataset=dict(
    _delete_=True, type='COCOInstanceSegDataset', data_root={str(root)!r},
    ann_file='annotations/instances_default.json', data_prefix=dict(img_path='images'), pipeline=train_pipeline))
val_cfg = None
val_dataloader = None
val_evaluator = None
""")
    return path


@pytest.mark.slow
def test_a_cvat_brush_project_through_tools_train(tmp_path, sam_checkpoint):
    """The user's path: a brush-only CVAT export fails when built, naming crowd='instance'; with it, the
    3-category JSON asks for num_classes=4 by the head's own option; with both it trains."""
    root = tmp_path / 'cvat'
    exports.write_cvat_export(root, brush_only=True)
    cfg = _export_config(tmp_path, root, sam_checkpoint, 'ignore', 4)
    with pytest.raises(ValueError, match=r"none gives an instance.*LoadCOCOInstances\(crowd='instance'\)"):
        run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'ignored')
    cfg = _export_config(tmp_path, root, sam_checkpoint, 'instance', 2)
    with pytest.raises(ValueError) as info:
        run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'two')
    assert "the train dataset has 4 classes ('background', 'cat', 'dog', 'bird')" in str(info.value)
    assert 'model.decode_head.num_classes=4' in str(info.value) and 'out_channels' not in str(info.value)
    cfg = _export_config(tmp_path, root, sam_checkpoint, 'instance', 4)
    assert run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'work') is None
    assert (tmp_path / 'work/iter_1.pth').is_file()


def test_a_coco_dataset_that_drops_every_sample_names_its_crowd_annotations(tmp_path):
    ann_file = exports.write_cvat_export(tmp_path)
    cfg = exports.coco_dataset_cfg(tmp_path, ann_file, 'images', empty_segmentation='drop', max_refetch=5)
    cfg['pipeline'][2] = dict(type='GenerateInstances', min_area=10**6, on_empty='skip')
    dataset = DATASETS.build(cfg)
    with pytest.raises(
        ValueError,
        match=r'(?s)dropped \(returned None for\) 6 samples in a row.*min_area=1000000.*2 of the 5 annotations of '
        r".*instances_default\.json are crowd \(iscrowd=1\), which LoadCOCOInstances\(crowd='ignore'\) makes no "
        r"instance: crowd='instance' makes each an instance",
    ):
        dataset[0]
