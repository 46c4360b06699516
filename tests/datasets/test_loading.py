"""Loading users' files: 16-bit / float images, binary masks that are not 0/255, checks put in by the dataset."""

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmcv.transforms import Compose, LoadImageFromFile
from PIL import Image

from mmseg_sam.datasets import BinaryForegroundDataset, CheckSegSample
from mmseg_sam.datasets.binary_transforms import check_binary_values
from mmseg_sam.datasets.transforms import LoadAnyDepthImageFromFile, image_bit_depth


def _save(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


def _load(path: Path, **kwargs) -> np.ndarray:
    return LoadAnyDepthImageFromFile(**kwargs)(dict(img_path=str(path)))['img']


@pytest.mark.parametrize('suffix', ['.png', '.jpg', '.bmp', '.tif'])
def test_8_bit_images_load_exactly_as_load_image_from_file(tmp_path, suffix):
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3)).astype(np.uint8)
    path = _save(tmp_path / f'a{suffix}', image)
    ours = LoadAnyDepthImageFromFile()(dict(img_path=str(path)))
    theirs = LoadImageFromFile()(dict(img_path=str(path)))
    assert ours['img'].dtype == np.uint8 and ours['img_shape'] == theirs['img_shape'] == (17, 23)
    np.testing.assert_array_equal(ours['img'], theirs['img'])


@pytest.mark.parametrize('suffix', ['.png', '.tif'])
def test_16_bit_grey_images_are_stretched_by_percentiles(tmp_path, suffix):
    rng = np.random.default_rng(0)
    image = rng.integers(100, 4096, (40, 50)).astype(np.uint16)  # 12-bit microscopy in a 16-bit file
    path = _save(tmp_path / f'scan{suffix}', image)
    assert image_bit_depth(path) == 16
    assert LoadImageFromFile()(dict(img_path=str(path)))['img'].max() <= 16  # what plain loading gives
    low, high = np.percentile(image.astype(np.float64), (1.0, 99.8))
    expected = np.clip((image - low) / (high - low), 0, 1) * 255
    loaded = _load(path)
    assert loaded.dtype == np.float32 and loaded.shape == (40, 50, 3)
    for channel in range(3):
        np.testing.assert_allclose(loaded[..., channel], expected, atol=1e-3)


def test_16_bit_colour_and_the_other_scales(tmp_path):
    image = np.zeros((8, 9, 3), np.uint16)
    image[..., 0], image[..., 2] = 1000, 3000  # B, R
    image[0, 0] = 0
    path = _save(tmp_path / 'rgb16.png', image)
    assert image_bit_depth(path) == 16
    minmax = _load(path, scale='minmax')
    np.testing.assert_allclose(minmax[1, 1], [1000 / 3000 * 255, 0, 255], atol=1e-3)  # BGR kept
    fixed = _load(path, scale='fixed')
    np.testing.assert_allclose(fixed[1, 1], [1000 / 65535 * 255, 0, 3000 / 65535 * 255], atol=1e-3)
    given = _load(path, scale='fixed', value_range=(0, 4095))
    np.testing.assert_allclose(given[1, 1], [1000 / 4095 * 255, 0, 3000 / 4095 * 255], atol=1e-3)


def test_float_tiff_and_rgba(tmp_path):
    values = np.linspace(-1, 1, 30, dtype=np.float32).reshape(5, 6)
    Image.fromarray(values, mode='F').save(tmp_path / 'f.tif')
    assert image_bit_depth(tmp_path / 'f.tif') == 32
    loaded = _load(tmp_path / 'f.tif', scale='minmax')
    np.testing.assert_allclose(loaded[..., 1], (values + 1) / 2 * 255, atol=1e-3)
    rgba = np.dstack([np.full((4, 4, 3), 7, np.uint8), np.zeros((4, 4), np.uint8)])
    loaded = _load(_save(tmp_path / 'rgba.png', rgba))
    assert loaded.shape == (4, 4, 3) and (loaded == 7).all()


@pytest.mark.parametrize(
    ('kwargs', 'pattern'),
    [
        (dict(scale='gamma'), r"scale must be one of .*got 'gamma'"),
        (dict(percentiles=(99, 1)), r'percentiles must be \(low, high\) with 0 <= low < high <= 100'),
        (dict(value_range=(5, 5)), r'value_range must be \(low, high\) with low < high'),
    ],
)
def test_bad_loader_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        LoadAnyDepthImageFromFile(**kwargs)


# --- binary masks --------------------------------------------------------------------


def _jpeg(mask: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode('.jpg', mask, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _blobs() -> np.ndarray:
    mask = np.zeros((96, 128), np.uint8)
    cv2.circle(mask, (40, 40), 25, 255, -1)
    cv2.rectangle(mask, (80, 20), (120, 80), 255, -1)
    return mask


@pytest.mark.parametrize('quality', [30, 75, 95])
def test_jpeg_compressed_0_255_masks_are_accepted(quality):
    check_binary_values(_jpeg(_blobs(), quality), 'm.jpg', lossy=True)


@pytest.mark.parametrize(
    ('mask', 'lossy', 'pattern'),
    [
        (np.array([[0, 1], [1, 0]], np.uint8), False, r'holds 0/1 class indices, values \[0, 1\]'),
        (np.array([[0, 1], [255, 0]], np.uint8), False, r'0/1 labels with 255 \(mmseg: ignore\)'),
        (
            np.array([[0, 7], [12, 0]], np.uint8),
            False,
            r'not a 0/255 binary mask: it holds values \[0, 7, 12\]',
        ),
        (np.dstack([np.array([[0, 128]], np.uint8)] * 3), False, r'values \[0, 128\]'),  # VOC-style palette
        (
            np.arange(0, 250, 2, dtype=np.uint8).reshape(5, 25),
            True,
            r'% of its pixels lie between 32 and 223',
        ),
        (np.tile(np.array([0, 3, 5], np.uint8), (10, 10)), True, r'is not a binary mask'),  # low labels, JPEG
    ],
)
def test_masks_that_are_not_0_255_are_refused(mask, lossy, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_binary_values(mask, 'm.png', lossy)


def test_any_values_thresholds_what_it_finds(tmp_path):
    ids = np.array([[0, 100], [200, 50]], np.uint8)
    path = _save(tmp_path / 'ids.png', ids)

    def load(**kwargs):
        step = Compose([dict(type='LoadBinaryAnnotations', **kwargs)])
        return step(dict(seg_map_path=str(path), seg_fields=[], reduce_zero_label=False))['gt_seg_map']

    with pytest.raises(ValueError, match=r'ids\.png is not a 0/255 binary mask'):
        load()
    np.testing.assert_array_equal(load(any_values=True, threshold=60), [[0, 1], [1, 0]])


def test_a_palette_png_of_two_classes_is_refused(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode='P')
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    (tmp_path / 'voc.png').write_bytes(buf.getvalue())
    step = Compose([dict(type='LoadBinaryAnnotations')])
    with pytest.raises(ValueError, match=r'voc\.png is not a 0/255 binary mask: it holds values \[0, 128\]'):
        step(dict(seg_map_path=str(tmp_path / 'voc.png'), seg_fields=[], reduce_zero_label=False))


# --- checks the dataset puts into its pipelines ------------------------------------------


def test_the_dataset_checks_mask_sizes_even_inside_test_time_augmentation(tmp_path):
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    _save(tmp_path / 'img/a.jpg', np.zeros((30, 40, 3), np.uint8))
    _save(tmp_path / 'ann/a.png', np.zeros((30, 41), np.uint8))
    load = dict(type='LoadBinaryAnnotations')
    tta = [
        dict(type='LoadImageFromFile'),
        dict(
            type='TestTimeAug',
            transforms=[
                [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
                [load],
                [dict(type='PackSegInputs')],
            ],
        ),
    ]
    for pipeline in ([dict(type='LoadImageFromFile'), load, dict(type='PackSegInputs')], tta):
        dataset = BinaryForegroundDataset(
            data_root=str(tmp_path), data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=pipeline
        )
        steps = [type(t).__name__ for t in dataset.pipeline.transforms]
        assert steps.count('CheckSegSample') == (1 if len(pipeline) == 3 else 0)
        with pytest.raises(ValueError, match=r'ann/a\.png \(image .*img/a\.jpg\): the mask is 30x41 \(HxW\)'):
            dataset[0]


def test_the_dataset_does_not_add_a_second_check(tmp_path):
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    _save(tmp_path / 'img/a.jpg', np.zeros((30, 40, 3), np.uint8))
    _save(tmp_path / 'ann/a.png', np.zeros((30, 40), np.uint8))
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadBinaryAnnotations'),
        dict(type='CheckSegSample'),
    ]
    dataset = BinaryForegroundDataset(
        data_root=str(tmp_path), data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=pipeline
    )
    assert [type(t) for t in dataset.pipeline.transforms].count(CheckSegSample) == 1
    assert dataset[0]['gt_seg_map'].shape == (30, 40)
