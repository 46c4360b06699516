"""Load 8-bit, 16-bit and float images (microscopy, remote sensing) on the 0-255 scale SAM expects."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.registry import TRANSFORMS
from PIL import Image

from .roles import is_image_loader

__all__ = [
    'LoadAnyDepthImageFromFile',
    'check_8_bit',
    'image_bit_depth',
    'reads_8_bit_only',
    'scale_to_uint8_range',
]

_SCALES = ('percentile', 'minmax', 'fixed')


def image_bit_depth(source: str | Path | bytes) -> int | None:
    """Bits per sample of an image file, read from its header (the pixels are not decoded).

    Returns:
        8, 16 or 32, or None when Pillow cannot identify the file (the loader then
        reports it).
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            mode = img.mode
            raw = ' '.join(str(tile.args) for tile in getattr(img, 'tile', []) or [])
    except (OSError, SyntaxError):
        return None
    if mode in ('I', 'F') or mode.startswith(('I;32', 'F;32')):
        return 32
    # Pillow opens 16-bit colour PNG / TIFF as 8-bit 'RGB' and keeps the depth in the tile's raw mode
    if mode.startswith('I;16') or ';16' in raw:
        return 16
    return 8


def scale_to_uint8_range(
    img: np.ndarray, scale: str, percentiles: tuple[float, float], value_range: tuple[float, float] | None
) -> np.ndarray:
    """Map a high-bit-depth image onto [0, 255] (float32); see :class:`LoadAnyDepthImageFromFile`."""
    values = img.astype(np.float64)
    if scale == 'percentile':
        low, high = np.percentile(values, percentiles)
    elif scale == 'minmax':
        low, high = values.min(), values.max()
    else:
        low, high = value_range if value_range is not None else (0.0, float(np.iinfo(img.dtype).max))
    if high <= low:  # a constant image: mid-grey rather than a division by zero
        return np.full(img.shape, 127.5 if scale != 'fixed' else 0.0, np.float32)
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.float32)


@TRANSFORMS.register_module()
class LoadAnyDepthImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that also reads 16-bit and float images correctly.

    mmcv's ``LoadImageFromFile`` decodes with OpenCV's ``IMREAD_COLOR``, which keeps
    the high byte of a 16-bit image: 12-bit microscopy data (0..4095) comes out as
    0..15, an almost black image, and training and inference run on it without an
    error. This loader decodes the file unchanged:

    - 8-bit images come out exactly as ``LoadImageFromFile`` gives them (uint8,
      BGR, three channels);
    - 16-bit and 32-bit (int or float) images are mapped onto the 0..255 scale that
      the data preprocessor's ``mean`` / ``std`` (SAM's pixel statistics) expect,
      as float32 BGR, grey images repeated to three channels:

      - ``scale='percentile'`` (default): per image, the ``percentiles`` (1, 99.8)
        map to 0 and 255, values outside are clipped (the normalisation of
        microscopy tools such as cellpose and StarDist; a 2-98 stretch is usual in
        remote sensing);
      - ``scale='minmax'``: per image, min and max map to 0 and 255;
      - ``scale='fixed'``: ``value_range=(low, high)`` for every image (default:
        the integer type's full range, e.g. 0..65535), which keeps intensities
        comparable between images.

    Alpha channels are dropped. ``CheckedSegDataset`` and ``tools/infer.py`` refuse a
    16-bit image met by plain ``LoadImageFromFile``, naming the file.

    Required keys: ``img_path``. Added keys: ``img``, ``img_shape``, ``ori_shape``.

    Args:
        scale: ``'percentile'``, ``'minmax'`` or ``'fixed'`` (high bit depths only).
        percentiles: low and high percentile for ``'percentile'``, 0 <= low < high <= 100.
        value_range: ``(low, high)`` for ``'fixed'``; None takes the integer type's range.
        to_float32: return float32 for 8-bit images too.
        backend_args: mmengine file backend arguments.
    """

    def __init__(
        self,
        scale: str = 'percentile',
        percentiles: tuple[float, float] = (1.0, 99.8),
        value_range: tuple[float, float] | None = None,
        to_float32: bool = False,
        backend_args: dict | None = None,
    ) -> None:
        if scale not in _SCALES:
            raise ValueError(f'scale must be one of {_SCALES}, got {scale!r}')
        bounds = tuple(percentiles) if isinstance(percentiles, (tuple, list)) else ()
        if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1] <= 100:
            raise ValueError(
                f'percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}'
            )
        low, high = bounds
        if value_range is not None and (len(tuple(value_range)) != 2 or not value_range[0] < value_range[1]):
            raise ValueError(f'value_range must be (low, high) with low < high, got {value_range!r}')
        super().__init__(to_float32=to_float32, color_type='color', backend_args=backend_args)
        self.scale = scale
        self.percentiles = (float(low), float(high))
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """Decode image bytes to a BGR ``(H, W, 3)`` array: uint8 as is, higher depths scaled to float32."""
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:  # OpenCV does not read e.g. 32-bit float TIFF; Pillow does (RGB order)
            try:
                with Image.open(io.BytesIO(data)) as pil:
                    img = np.asarray(pil)
            except (OSError, SyntaxError) as err:
                raise ValueError(f'cannot decode the image {name}: {err}') from err
            if img.ndim == 3:
                img = img[..., ::-1]  # RGB(A) -> BGR(A)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]  # (H, W, 4) BGRA -> (H, W, 3) BGR
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'image {name} has shape {img.shape}: expected a grey, RGB or RGBA image')
        if img.dtype == np.uint8:
            return np.ascontiguousarray(img)
        if img.dtype == np.bool_:
            return img.astype(np.uint8) * 255
        return scale_to_uint8_range(img, self.scale, self.percentiles, self.value_range)

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        filename = results['img_path']
        img = self.decode(fileio.get(filename, backend_args=self.backend_args), str(filename))
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(scale={self.scale!r}, percentiles={self.percentiles}, '
            f'value_range={self.value_range}, to_float32={self.to_float32}, backend_args={self.backend_args})'
        )


def reads_8_bit_only(step: object) -> bool:
    """Whether a pipeline step is an image loader that reads 16-bit files as 8 bits (mmcv's, not ours)."""
    return is_image_loader(step) and not isinstance(step, LoadAnyDepthImageFromFile)


def check_8_bit(path: str | Path) -> None:
    """Refuse, naming it, an image file deeper than 8 bits (its header only is read).

    Where a pipeline loads with :func:`reads_8_bit_only` loaders, the dataset and the
    inferencer call this before loading, instead of training or predicting on a dark image.
    """
    bits = image_bit_depth(path)
    if bits is not None and bits > 8:
        raise ValueError(
            f'{path} is a {bits}-bit image, which LoadImageFromFile reads as 8 bits (a dark or clipped '
            "image); train and infer with dict(type='LoadAnyDepthImageFromFile') in the pipelines (it maps "
            'each image onto 0..255, see its scale option)'
        )
