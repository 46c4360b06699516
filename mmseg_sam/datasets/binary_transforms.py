"""Load 0/255 (or JPEG-compressed) binary masks as 0/1 labels, refusing masks that are not binary."""

from __future__ import annotations

import io

import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS
from PIL import Image

from .converters import binarize_mask, bytes_to_mask

__all__ = ['LoadBinaryAnnotations', 'check_binary_values']

#: Formats whose compression moves pixel values (a 0/255 mask comes back with values near 0 and 255).
LOSSY_FORMATS = ('JPEG', 'MPO', 'WEBP')
#: In a lossy mask, values in [NEAR, 255 - NEAR) are compression noise at edges ...
NEAR = 32
#: ... and may cover at most this share of the pixels (measured: 0.5% for a JPEG of quality 30
#: of blobs at 256x256; an instance-id mask saved as JPEG puts most of its foreground there).
MAX_LOSSY_NOISE = 0.05


def _values(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).tolist()


def _listed(values: list[int]) -> str:
    return f'{values[:10]}{" ..." if len(values) > 10 else ""} ({len(values)} distinct values)'


def check_binary_values(mask: np.ndarray, name: str, lossy: bool) -> None:
    """Refuse a mask whose values do not follow the binary 0 / 255 convention.

    Accepted: a lossless mask (PNG, BMP, TIFF, ...) whose values, per pixel the
    largest over colour channels, are 0 and 255 only; a lossy (JPEG) mask whose
    values lie near 0 or 255 except for at most 5% of the pixels (compression noise
    along edges).

    Refused, naming the file and the values found: masks of class or instance labels
    (e.g. 1..124), palette masks of several classes, and 0/1 masks with 255 as
    "ignore", which a threshold would turn into wrong binary masks.

    Args:
        mask: uint8 ``(H, W)`` or ``(H, W, C)``.
        name: the mask file, for the message.
        lossy: whether the file format is lossy.

    Raises:
        ValueError: as above.
    """
    grey = mask.max(axis=2) if mask.ndim == 3 else mask  # (H, W, C) -> (H, W)
    values = _values(grey)
    if set(values) <= {0, 255}:
        return
    fix = (
        'LoadBinaryAnnotations expects 0 (background) and 255 (foreground). Masks of class indices load with '
        "mmseg's LoadAnnotations (0/1 with 255 = ignore is mmseg's own binary convention); to threshold "
        'any values anyway, set LoadBinaryAnnotations(any_values=True, threshold=...)'
    )
    if lossy:
        noisy = np.count_nonzero((grey >= NEAR) & (grey < 255 - NEAR)) / grey.size
        low_labels = np.count_nonzero((grey > 0) & (grey < NEAR)) / grey.size
        if noisy <= MAX_LOSSY_NOISE and not (low_labels > MAX_LOSSY_NOISE and grey.max() < 255 - NEAR):
            return
        raise ValueError(
            f'{name} is not a binary mask: {100 * noisy:.1f}% of its pixels lie between {NEAR} and {255 - NEAR} '
            f'(compression noise of a 0/255 JPEG mask stays under {100 * MAX_LOSSY_NOISE:.0f}%), values '
            f'{_listed(values)}. {fix}'
        )
    if set(values) <= {0, 1, 255} and 1 in values:
        kind = '0/1 labels with 255 (mmseg: ignore)' if 255 in values else '0/1 class indices'
        raise ValueError(
            f'{name} holds {kind}, values {values}: a threshold would turn them into '
            f'{"a foreground border" if 255 in values else "all background"}. {fix}'
        )
    raise ValueError(f'{name} is not a 0/255 binary mask: it holds values {_listed(values)}. {fix}')


@TRANSFORMS.register_module()
class LoadBinaryAnnotations(LoadAnnotations):
    """Load a binary mask and map values ``>= threshold`` to 1, the rest to 0.

    For custom binary data that was not converted (see
    :class:`~mmseg_sam.datasets.BinaryForegroundDataset`): masks stored as 0/255
    would otherwise reach mmseg with the foreground as 255, its ignore label,
    and the model would learn from background pixels only. Grey, bilevel,
    palette and colour masks are read with Pillow; a colour pixel is foreground
    when any channel reaches the threshold.

    Required keys: ``seg_map_path``, ``seg_fields``, ``reduce_zero_label``.
    Added keys: ``gt_seg_map`` (uint8 ``(H, W)`` of 0 and 1).

    Masks whose values do not follow the 0 / 255 convention are refused, naming the
    file and the values (see :func:`check_binary_values`): class or instance labels,
    palette masks of several classes, 0/1 masks with a 255 "ignore" border. With
    ``any_values=True`` every mask is thresholded as it is.

    Args:
        threshold: Lowest foreground value, in [1, 255]; 128 splits 0/255 and
            JPEG-compressed masks.
        any_values: Threshold masks of any values instead of refusing those that
            are not 0/255.
        backend_args: mmengine file backend arguments.

    Raises:
        ValueError: At construction if ``threshold`` is out of range; on a mask
            that is not 0/255 (unless ``any_values``), naming the file.
    """

    def __init__(
        self, threshold: int = 128, any_values: bool = False, backend_args: dict | None = None
    ) -> None:
        binarize_mask(
            np.zeros((1, 1), np.uint8), threshold
        )  # validates threshold now, not on the first sample
        if not isinstance(any_values, bool):
            raise TypeError(f'any_values must be a bool, got {any_values!r}')
        super().__init__(backend_args=backend_args)
        self.threshold = threshold
        self.any_values = any_values

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        if results.get('reduce_zero_label', False):
            raise ValueError(f'{path}: reduce_zero_label=True would ignore the background of a binary mask')
        data = fileio.get(path, backend_args=self.backend_args)
        mask = bytes_to_mask(data, str(path))
        if not self.any_values:
            with Image.open(io.BytesIO(data)) as img:  # header only: is the format lossy?
                lossy = img.format in LOSSY_FORMATS
            check_binary_values(mask, str(path), lossy)
        label = binarize_mask(mask, self.threshold, path)
        label_map = results.get('label_map')
        if label_map is not None:  # custom class subset, as mmseg's LoadAnnotations does
            mapped = label.copy()
            for old_id, new_id in label_map.items():
                mapped[label == old_id] = new_id
            label = mapped
        results['gt_seg_map'] = label
        results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(threshold={self.threshold}, any_values={self.any_values}, '
            f'backend_args={self.backend_args})'
        )
