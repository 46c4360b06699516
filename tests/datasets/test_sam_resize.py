"""SAMResizeLongestSide: segment_anything's ResizeLongestSide pixels and sizes, mmcv Resize's bookkeeping."""

import sys
import types

import cv2
import numpy as np
import pytest
from mmcv.transforms import Compose
from PIL import Image

from mmseg_sam.datasets.transforms import SAMResizeLongestSide, longest_side_shape, pil_bilinear


@pytest.fixture(scope='module')
def resize_longest_side():
    """segment_anything's ResizeLongestSide. Its module imports torchvision's ``resize`` and ``to_pil_image``,
    which these machines cannot import; for a uint8 image they are ``PIL.Image.fromarray`` and
    ``img.resize(size[::-1], BILINEAR)`` (torchvision/transforms/_functional_pil.py, ``resize``): stubbed so."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        stub = types.ModuleType('torchvision')
        transforms = types.ModuleType('torchvision.transforms')
        functional = types.ModuleType('torchvision.transforms.functional')
        functional.to_pil_image = lambda array: Image.fromarray(array)
        functional.resize = lambda img, size: img.resize(tuple(size[::-1]), Image.BILINEAR)
        stub.transforms, transforms.functional = transforms, functional
        names = ('torchvision', 'torchvision.transforms', 'torchvision.transforms.functional')
        saved = {k: sys.modules.get(k) for k in (*names, 'segment_anything.utils.transforms')}
        sys.modules.update(dict(zip(names, (stub, transforms, functional))))
        sys.modules.pop('segment_anything.utils.transforms', None)
        try:
            from segment_anything.utils.transforms import ResizeLongestSide

            yield ResizeLongestSide
        finally:
            for key, value in saved.items():
                if value is None:
                    sys.modules.pop(key, None)
                else:
                    sys.modules[key] = value
        return
    from segment_anything.utils.transforms import ResizeLongestSide

    yield ResizeLongestSide


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured uint8 BGR image: smooth gradients plus fine noise (aliasing shows on it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 11.0)[..., None]
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(('h', 'w'), [(180, 240), (240, 180), (97, 131), (50, 50), (33, 200)])
def test_image_equals_segment_anything(resize_longest_side, h, w):
    image = _photo(h, w)
    expected = resize_longest_side(64).apply_image(image)
    results = SAMResizeLongestSide(long_side=64)(dict(img=image, img_shape=(h, w), ori_shape=(h, w)))
    assert results['img'].shape == expected.shape
    np.testing.assert_array_equal(results['img'], expected)
    assert results['img_shape'] == expected.shape[:2] == longest_side_shape(h, w, 64)
    assert results['img_shape'] == resize_longest_side.get_preprocess_shape(h, w, 64)


def test_differs_from_mmcv_resize_when_shrinking():
    """What the transform is for: mmcv's Resize (OpenCV, no antialiasing) gives other pixels."""
    image = _photo(240, 180)
    ours = SAMResizeLongestSide(long_side=64)(dict(img=image))['img']
    mmcv = Compose([dict(type='Resize', scale=(64, 64), keep_ratio=True)])(dict(img=image))['img']
    assert ours.shape == mmcv.shape
    assert np.abs(ours.astype(int) - mmcv.astype(int)).mean() > 1.0


def test_masks_and_encoded_ids_follow_the_image():
    image = _photo(97, 131)
    seg = np.zeros((97, 131), np.int32)
    seg[10:60, 20:90] = 1 + 256 * 3  # class 1, instance id 3, as the instance loaders encode them
    results = SAMResizeLongestSide(long_side=64)(dict(img=image, gt_seg_map=seg, seg_fields=['gt_seg_map']))
    assert results['gt_seg_map'].shape == results['img'].shape[:2] == (47, 64)
    assert results['gt_seg_map'].dtype == np.int32
    assert set(np.unique(results['gt_seg_map']).tolist()) == {0, 1 + 256 * 3}
    sx, sy = results['scale_factor']
    assert (round(131 * sx), round(97 * sy)) == (64, 47)


def test_other_depths_resize_with_the_same_filter():
    image16 = (_photo(120, 90).astype(np.uint16) * 257)[..., 0]  # a 16-bit grey image
    out = pil_bilinear(image16, 64, 48)
    assert out.dtype == np.uint16 and out.shape == (64, 48)
    as8 = pil_bilinear((image16 // 257).astype(np.uint8), 64, 48).astype(float)
    assert np.abs(out / 257.0 - as8).max() <= 1.0
    grey = _photo(120, 90)[..., 0]
    assert pil_bilinear(grey, 64, 48).shape == (64, 48)
    assert cv2.resize(grey, (48, 64)).shape == (64, 48)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        (dict(long_side=0), r'long_side must be a positive int, got 0'),
        (dict(long_side=1024.0), r'long_side must be a positive int, got 1024\.0'),
        (dict(keep_ratio=False), r'SAMResizeLongestSide sets keep_ratio itself .*got keep_ratio=False'),
        (dict(scale=(512, 512)), r'sets scale itself'),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAMResizeLongestSide(**kwargs)
