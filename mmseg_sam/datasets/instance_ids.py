"""Load an instance-id PNG stored next to the semantic mask (8 or 16 bit)."""

from __future__ import annotations

import io
import os.path as osp
from typing import Any

import cv2
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image

from .instances import ENCODED_IDS, ID_STRIDE, encode_instance_ids, sample_files

__all__ = ['LoadInstanceIdAnnotations']

#: Pascal VOC's label for object boundaries and void pixels in its palette PNGs.
_VOC_VOID = 255


def _palette_indices(data: bytes) -> np.ndarray | None:
    """The indices of a palette (``P`` mode) PNG as uint8 ``(H, W)``; None for any other image.

    OpenCV decodes a palette PNG to its colours (three channels); the ids are the
    indices, as mmseg's ``LoadAnnotations`` (Pillow) reads Pascal VOC's masks.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode != 'P':
                return None
            return np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError):
        return None


@TRANSFORMS.register_module()
class LoadInstanceIdAnnotations(BaseTransform):
    """Load the instance-id map of a sample for :class:`~mmseg_sam.datasets.GenerateInstances`.

    For datasets that give each object its own id (cell and nucleus datasets,
    Cityscapes-style ``*_instanceIds.png``, iSAID): a single-channel PNG (8-bit, or
    16-bit for ids above 255) with 0 where there is no instance and one id per
    instance. Its path follows from the semantic mask's: the extension of
    ``seg_map_path`` is replaced by ``suffix``::

        masks/train/0001.png  ->  masks/train/0001_instances.png   (suffix='_instances.png')

    A palette PNG (Pascal VOC's ``SegmentationObject`` layout: index ``i`` is object
    ``i``, 0 the background, 255 the object boundaries and void) is read as its
    indices, as mmseg's ``LoadAnnotations`` reads VOC's class masks; index 255 is no
    instance (VOC's ``SegmentationClass`` marks those pixels 255, ignored, too).

    Place it right after ``LoadAnnotations`` (or ``LoadBinaryAnnotations``). The ids
    are stored in ``gt_seg_map`` itself, as ``class + 256 * id`` (int32, see
    :func:`~mmseg_sam.datasets.instances.encode_instance_ids`): mmcv's ``Resize``,
    ``RandomFlip`` and ``Pad`` move ``gt_seg_map`` and no other map, so the ids
    move with the classes pixel for pixel. ``GenerateInstances``, after the
    geometric transforms, takes them out again (``gt_seg_map`` gets its classes
    back) and makes every id one instance whose class is the class under it (an
    id over two classes is an error naming this file and the id). Between the two,
    a step that reads mask values sees the encoded ones: mmseg's
    ``RandomCrop(cat_max_ratio=...)`` then counts instances rather than classes.

    Required keys: ``seg_map_path``, ``gt_seg_map`` (the classes, values < 256).
    Modified keys: ``gt_seg_map`` (int32 ``class + 256 * id``).
    Added keys: ``instance_path``, ``seg_map_holds_instance_ids``.

    Args:
        suffix: replaces the extension of ``seg_map_path`` (``'.png'``) to give the
            id file's path; must end in ``.png``.
        ignore_index: pixels of this class get no instance.
        backend_args: mmengine file backend arguments.

    Raises:
        FileNotFoundError: when the id file does not exist, naming the expected
            path and the rule.
        ValueError: when it is not a single-channel 8- or 16-bit image or its size
            differs from the mask's, or no class map was loaded before it,
            naming the file.
    """

    needs_annotations = True  # inference pipelines drop it (see transforms.roles)

    def __init__(
        self, suffix: str = '_instances.png', ignore_index: int = 255, backend_args: dict | None = None
    ) -> None:
        if not isinstance(suffix, str) or not suffix.lower().endswith('.png'):
            raise ValueError(f'suffix must end in .png (a lossless 8- or 16-bit image), got {suffix!r}')
        self.suffix = suffix
        self.ignore_index = ignore_index
        self.backend_args = backend_args

    def instance_path(self, seg_map_path: str) -> str:
        """The id file of a mask: ``seg_map_path`` with its extension replaced by ``suffix``."""
        return osp.splitext(str(seg_map_path))[0] + self.suffix

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        """Load the id file next to ``seg_map_path`` into ``gt_seg_map``."""
        seg_map_path = results.get('seg_map_path')
        if not seg_map_path:
            raise ValueError(
                f'LoadInstanceIdAnnotations derives the id file from seg_map_path, which image '
                f'{results.get("img_path")} does not have'
            )
        path = self.instance_path(seg_map_path)
        try:
            data = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f'{path}: no instance-id map for the mask {seg_map_path} (expected its path with the '
                f'extension replaced by suffix={self.suffix!r})'
            ) from error
        ids = _palette_indices(data)
        if ids is not None:
            ids[ids == _VOC_VOID] = 0  # VOC's boundary / void: no instance
        else:
            ids = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if ids is None:
            raise ValueError(f'{path}: cannot decode the instance-id map')
        if ids.ndim != 2 or ids.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f'{path}: an instance-id map must be a single-channel 8- or 16-bit image (ids as grey values, '
                f'or the indices of a palette PNG), got {ids.dtype} of shape {ids.shape}'
            )
        seg = results.get('gt_seg_map')
        if seg is None or results.get(ENCODED_IDS):
            raise ValueError(
                f'{path}: LoadInstanceIdAnnotations needs the class map of {seg_map_path} loaded just before it '
                '(place it right after LoadAnnotations or LoadBinaryAnnotations, once)'
            )
        if seg.shape != ids.shape:
            raise ValueError(
                f'{path}: the instance ids are {ids.shape[0]}x{ids.shape[1]} (HxW), the mask '
                f'{seg.shape[0]}x{seg.shape[1]} ({sample_files(results)})'
            )
        if seg.max(initial=0) >= ID_STRIDE:
            raise ValueError(
                f'{sample_files(results)}: class values must be below {ID_STRIDE} to carry instance ids'
            )
        results['gt_seg_map'] = encode_instance_ids(seg, ids, self.ignore_index)
        results[ENCODED_IDS] = True
        results['instance_path'] = path
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(suffix={self.suffix!r}, ignore_index={self.ignore_index}, '
            f'backend_args={self.backend_args})'
        )
