"""Load 0/255 (or JPEG-compressed) binary masks as 0/1 labels."""

from __future__ import annotations

import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from .converters import binarize_mask, bytes_to_mask

__all__ = ['LoadBinaryAnnotations']


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

    Args:
        threshold: Lowest foreground value, in [1, 255]; 128 splits 0/255 and
            JPEG-compressed masks.
        backend_args: mmengine file backend arguments.

    Raises:
        ValueError: At construction if ``threshold`` is out of range; on a mask
            that holds only 0 and 1 (already class indices: load it with
            ``LoadAnnotations``), naming the file.
    """

    def __init__(self, threshold: int = 128, backend_args: dict | None = None) -> None:
        binarize_mask(
            np.zeros((1, 1), np.uint8), threshold
        )  # validates threshold now, not on the first sample
        super().__init__(backend_args=backend_args)
        self.threshold = threshold

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        if results.get('reduce_zero_label', False):
            raise ValueError(f'{path}: reduce_zero_label=True would ignore the background of a binary mask')
        mask = bytes_to_mask(fileio.get(path, backend_args=self.backend_args), str(path))
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
        return f'{type(self).__name__}(threshold={self.threshold}, backend_args={self.backend_args})'
