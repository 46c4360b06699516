"""Resize an image as segment_anything's ``ResizeLongestSide`` does, so the model sees SamPredictor's pixels."""

from __future__ import annotations

from typing import Any

import numpy as np
from mmcv.transforms import Resize
from mmseg.registry import TRANSFORMS
from PIL import Image

__all__ = ['SAMResizeLongestSide', 'longest_side_shape', 'pil_bilinear']


def longest_side_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` with the longer side ``long_side``, rounded as ``ResizeLongestSide.get_preprocess_shape``."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def pil_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's bilinear resize (antialiased when shrinking), what ``ResizeLongestSide.apply_image`` runs.

    segment_anything resizes a uint8 image with torchvision's ``resize`` on a PIL image,
    which is ``PIL.Image.resize(size, BILINEAR)``. uint8 images take that path as they
    are; other depths (16-bit, float) resize channel by channel as 32-bit float images
    (PIL mode ``'F'``) with the same filter and are rounded back to integer types.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``.
        height, width: the output size.

    Returns:
        The resized image, same dtype and channels.
    """
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (3, 4)):
        return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    channels = image[..., None] if image.ndim == 2 else image
    planes = [
        np.asarray(
            Image.fromarray(channels[..., c].astype(np.float32)).resize((width, height), Image.BILINEAR)
        )
        for c in range(channels.shape[2])
    ]
    out = np.stack(planes, axis=-1)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(image.dtype)
    return out[..., 0] if image.ndim == 2 else out


@TRANSFORMS.register_module()
class SAMResizeLongestSide(Resize):
    """mmcv's ``Resize(scale=(L, L), keep_ratio=True)`` with segment_anything's image interpolation.

    ``SamPredictor.set_image`` scales the longer side to ``L`` (1024) with
    ``ResizeLongestSide``: PIL's bilinear filter, antialiased when shrinking. mmcv's
    ``Resize`` computes the same output size but interpolates with OpenCV's bilinear
    filter, which does not antialias: shrunk by 1024 / 2400, scikit-image's photographs
    differ by 2.2 to 3.2 grey levels on average, 14 to 27 at the 99th percentile
    (``tools/analysis_tools/resize_gap.py``), so a model trained and tested after
    mmcv's resize meets other pixels in ``SamPredictor`` than it was trained on. This transform gives the image SAM's pixels (tested equal to
    ``ResizeLongestSide.apply_image``); segmentation maps are resized as ``Resize``
    resizes them (nearest neighbour, the instance ids encoded in them included), and
    ``img_shape``, ``scale`` and ``scale_factor`` are set as ``Resize`` sets them.

    Args:
        long_side: the longer side after resizing (SAM: 1024; the encoder's ``img_size``).
        **kwargs: other ``Resize`` arguments (``clip_object_border``).
    """

    def __init__(self, long_side: int = 1024, **kwargs: Any) -> None:
        if isinstance(long_side, bool) or not isinstance(long_side, int) or long_side < 1:
            raise ValueError(f'long_side must be a positive int, got {long_side!r}')
        for key in ('scale', 'scale_factor', 'keep_ratio', 'backend', 'interpolation'):
            if key in kwargs:
                raise ValueError(
                    f'SAMResizeLongestSide sets {key} itself (scale=(long_side, long_side), keep_ratio=True, '
                    f'PIL bilinear for the image), got {key}={kwargs[key]!r}'
                )
        super().__init__(scale=(long_side, long_side), keep_ratio=True, **kwargs)
        self.long_side = long_side

    def _resize_img(self, results: dict) -> None:
        image = results.get('img')
        if image is None:
            return
        h, w = image.shape[:2]
        new_h, new_w = longest_side_shape(h, w, self.long_side)
        results['img'] = pil_bilinear(image, new_h, new_w)
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (new_w / w, new_h / h)
        results['keep_ratio'] = True

    def __repr__(self) -> str:
        return f'{type(self).__name__}(long_side={self.long_side})'
