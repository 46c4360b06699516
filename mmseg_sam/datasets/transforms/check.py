"""A pipeline step that checks a loaded sample and names its files when something is wrong."""

from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

__all__ = ['CheckSegSample']


@TRANSFORMS.register_module()
class CheckSegSample(BaseTransform):
    """Check a segmentation sample right after it is loaded; raise naming the files.

    Place it after ``LoadAnnotations`` (or ``LoadBinaryAnnotations``). Checks:

    - the mask is one channel of class indices, ``(H, W)`` (not a colour mask);
    - the mask has the size of its image: the loaded image ``(H, W)``, or the
      image's original size when the image was resized before the mask was loaded
      (mmseg's test pipelines);
    - with ``num_classes`` given, every mask value is a class index
      ``< num_classes`` or ``ignore_index`` (the decode head checks this too, later).

    Costs one histogram of the uint8 mask when ``num_classes`` is set, else nothing
    beyond shape checks.

    Required keys: ``img``, ``gt_seg_map``; ``ori_shape``, ``img_path`` and
    ``seg_map_path`` when present.

    Args:
        num_classes: classes of the dataset (background included), or None to skip
            the value check.
        ignore_index: the label that losses and metrics ignore (255 in mmseg).

    Raises:
        ValueError: at construction for a bad ``num_classes``; on a bad sample,
            naming the mask and image files.
    """

    needs_annotations = True  # inference pipelines drop it (see transforms.roles)

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255) -> None:
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f'num_classes must be a positive int or None, got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    @staticmethod
    def _files(results: dict[str, Any]) -> str:
        return (
            f'mask {results.get("seg_map_path", "<unknown>")} (image {results.get("img_path", "<unknown>")})'
        )

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        if 'gt_seg_map' not in results:
            raise ValueError(
                f'CheckSegSample found no gt_seg_map for image {results.get("img_path", "<unknown>")}: '
                'place it after LoadAnnotations'
            )
        mask = results['gt_seg_map']
        if mask.ndim != 2:
            raise ValueError(
                f'{self._files(results)} has shape {tuple(mask.shape)}: a mask must be one channel of class '
                'indices (H, W), not a colour image; convert colour masks to class indices first'
            )
        sizes = {tuple(results['img'].shape[:2])}
        if 'ori_shape' in results:
            sizes.add(tuple(results['ori_shape'][:2]))
        if tuple(mask.shape) not in sizes:
            raise ValueError(
                f'{self._files(results)}: the mask is {mask.shape[0]}x{mask.shape[1]} (HxW), its image '
                f'{" or ".join(f"{h}x{w}" for h, w in sorted(sizes))}; a mask must have its image size'
            )
        if self.num_classes is not None:
            if mask.dtype == np.uint8:
                values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
            else:
                values = np.unique(mask)
            bad = [int(v) for v in values if not (0 <= v < self.num_classes or v == self.ignore_index)]
            if bad:
                raise ValueError(
                    f'{self._files(results)} holds labels {bad[:8]}{" ..." if len(bad) > 8 else ""} outside '
                    f'[0, {self.num_classes}) (num_classes={self.num_classes}, ignore_index={self.ignore_index})'
                )
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})'
