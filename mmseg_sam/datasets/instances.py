"""Per-instance ground truth from a semantic mask (connected components) or an instance-id map."""

from __future__ import annotations

import os.path as osp
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from scipy import ndimage

__all__ = [
    'ENCODED_IDS',
    'GenerateInstances',
    'ID_STRIDE',
    'INSTANCES_FRAME',
    'encode_instance_ids',
    'frame_changes',
    'instances_frame',
    'image_rng',
    'masks_to_boxes',
    'sample_files',
]

_ON_EMPTY = ('skip', 'keep', 'error')
#: Instance-id loaders store ``class + ID_STRIDE * id`` (int32) in ``gt_seg_map`` ...
ID_STRIDE = 256
#: ... and set this results key, which GenerateInstances reads and removes.
ENCODED_IDS = 'seg_map_holds_instance_ids'
#: GenerateInstances records here the frame its instances are in (:func:`instances_frame`).
INSTANCES_FRAME = 'instances_frame'


def sample_files(results: dict[str, Any]) -> str:
    """The files of a sample, for error messages: ``'mask M (image I)'``, or the COCO JSON's image."""
    if not results.get('seg_map_path') and results.get('ann_file'):
        return f'image {results.get("img_path")} (annotations in {results["ann_file"]})'
    return f'mask {results.get("seg_map_path")} (image {results.get("img_path")})'


def check_seed(seed: object) -> None:
    """Refuse a ``seed`` that is neither None nor a non-negative int (see :func:`image_rng`)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f'seed must be None or a non-negative int, got {seed!r}')


def image_rng(seed: int | None, results: dict[str, Any]) -> np.random.Generator:
    """The random generator of one sample, by the project's seed rule.

    - ``seed=None``: a generator seeded by one draw from numpy's global RNG. Under
      :class:`~mmseg_sam.datasets.SeededDefaultSampler` or
      :class:`~mmseg_sam.datasets.SeededInfiniteSampler` (the prompted configs'
      training samplers) the dataset seeds that RNG from the sample's draw key (the
      seed, the epoch or pass, the sample's position in it) while it loads the
      sample, so the draws are the same whatever the number of workers and after a
      resume, and differ between epochs. Under MMEngine's samplers they come from
      the RNG MMEngine seeds once per worker (``seed + num_workers * rank + i``).
    - ``seed=int``: ``np.random.default_rng([seed, zlib.crc32(name)])`` where
      ``name`` is the image's file name (the last component of ``img_path``, or of
      ``seg_map_path`` where there is no image path). The draws then depend only on
      the seed and the image: identical whatever the number of workers, the order
      of the samples, the epoch, or the folder the data lies in (test prompts).

    Args:
        seed: None or a non-negative int.
        results: the sample's results dict.

    Returns:
        A fresh :class:`numpy.random.Generator`.

    Raises:
        ValueError: with an int seed, when the sample has neither ``img_path``
            nor ``seg_map_path``.
    """
    if seed is None:
        return np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
    path = results.get('img_path') or results.get('seg_map_path')
    if not path:
        raise ValueError(
            f'seed={seed} keys the random draws by the image file name, but the sample has neither '
            f'img_path nor seg_map_path (keys: {sorted(results)})'
        )
    name = osp.basename(str(path))
    return np.random.default_rng([seed, zlib.crc32(name.encode('utf-8'))])


def instances_frame(results: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint of the pixel frame of a sample: what a geometric transform changes.

    ``gt_seg_map``'s shape and the CRC-32 of its bytes (``Resize``, ``RandomCrop``,
    ``RandomRotate``, ``Pad``, ``RandomFlip`` all change one or the other), ``img_shape``,
    and mmcv's ``flip`` / ``flip_direction`` (set by ``RandomFlip`` even where it draws
    no flip). Compared by :func:`frame_changes`.
    """
    seg = np.ascontiguousarray(results['gt_seg_map'])
    return dict(
        gt_seg_map=(tuple(seg.shape), str(seg.dtype), zlib.crc32(seg.view(np.uint8).ravel())),
        img_shape=tuple(results['img_shape'][:2]) if 'img_shape' in results else None,
        flip=results.get('flip'),
        flip_direction=results.get('flip_direction'),
    )


def frame_changes(recorded: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """What differs between a recorded :func:`instances_frame` and the sample's frame now, in words."""
    now = instances_frame(results)
    changes = []
    for key, before in recorded.items():
        after = now[key]
        if key == 'gt_seg_map' and before != after:
            (shape0, dtype0, _), (shape1, dtype1, _) = before, after
            what = (
                'its values'
                if (shape0, dtype0) == (shape1, dtype1)
                else f'{shape0} {dtype0} -> {shape1} {dtype1}'
            )
            changes.append(f'gt_seg_map changed ({what})')
        elif before != after:
            changes.append(f'{key} {before!r} -> {after!r}')
    return changes


def encode_instance_ids(seg: np.ndarray, ids: np.ndarray, ignore_index: int) -> np.ndarray:
    """Carry instance ids inside the semantic mask: ``class + ID_STRIDE * id`` as int32 ``(H, W)``.

    mmcv's ``Resize``, ``RandomFlip`` and ``Pad`` move ``gt_seg_map`` only, not the
    other ``seg_fields``; ids stored in it move with the classes through every
    geometric transform, pixel for pixel. Padding with the ignore label 255 reads
    back as class 255 without an instance. Ignore pixels get no id.

    Args:
        seg: the class map, values below ``ID_STRIDE``.
        ids: the instance ids, ``(H, W)``, 0 = none, at most 65535.
        ignore_index: the ignore label.

    Returns:
        int32 ``(H, W)``.
    """
    ids = np.where(seg == ignore_index, 0, ids).astype(np.int32)
    return seg.astype(np.int32) + ID_STRIDE * ids


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of binary masks, as SAM counts them.

    ``x0`` / ``y0`` are the smallest column / row of the mask's pixels and ``x1`` /
    ``y1`` the largest, all inclusive pixel indices (segment_anything's
    ``batched_mask_to_box``, SAM 2's ``mask_to_box``, MedSAM): a single pixel at
    column 3, row 5 has the box ``(3, 5, 3, 5)``.

    Args:
        masks: bool ``(N, H, W)``; every mask holds at least one pixel.

    Returns:
        float32 ``(N, 4)``, ``(x0, y0, x1, y1)`` per mask.
    """
    n, h, w = masks.shape
    if n == 0:
        return np.zeros((0, 4), np.float32)
    cols = masks.any(axis=1)  # (N, H, W) -> (N, W)
    rows = masks.any(axis=2)  # (N, H, W) -> (N, H)
    assert cols.any(axis=1).all(), 'masks_to_boxes got an empty mask'
    x0 = cols.argmax(axis=1)
    x1 = w - 1 - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = h - 1 - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def _int_or_raise(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
    return int(value)


@TRANSFORMS.register_module()
class GenerateInstances(BaseTransform):
    """Split the semantic mask into instances: one binary mask, class and box per instance.

    Two sources of instances:

    - **Connected components** (the default): every connected region of one
      class's pixels in ``gt_seg_map`` is an instance (``scipy.ndimage.label``
      with 8-connectivity, a 3x3 structure, or 4-connectivity). Two objects of one
      class that touch become **one** instance: a semantic mask cannot tell them
      apart; give such datasets an instance-id map.
    - **Instance ids**: where a loader stored ids in the mask
      (:class:`~mmseg_sam.datasets.LoadInstanceIdAnnotations`,
      :class:`~mmseg_sam.datasets.LoadCOCOInstances`: ``class + 256 * id``, see
      :func:`encode_instance_ids`), every id other than 0 is one instance
      (connected or not) whose class is the class under it; ``gt_seg_map`` is
      given back its classes (uint8). An id over pixels of two classes is an
      error naming the id file and the id.

    In both, pixels labelled ``ignore_index`` belong to no instance (so not to
    its box either), and only the instance classes count: ``classes`` if given,
    else every value of the mask except ``background`` and ``ignore_index``.
    Then instances smaller than ``min_area`` pixels are dropped, and at most
    ``max_instances`` are kept, drawn uniformly without replacement by the seed
    rule of :func:`image_rng` and kept in their order.

    Order: by class, then by component (the raster order of each component's first
    pixel); by id for instance ids.

    Place it after the geometric transforms (``Resize``, ``RandomCrop``,
    ``RandomFlip``, ``Pad``, ``RandomRotate``): they move ``gt_seg_map`` (with the
    ids stored in it), not the per-instance masks, so what it adds is in the pixel
    frame of the mask at this step. It records that frame
    (``results['instances_frame']``, :func:`instances_frame`), and
    :class:`~mmseg_sam.datasets.PackPromptedSegInputs` refuses a sample whose frame
    changed after this step.

    Binary masks: ``LoadBinaryAnnotations`` (0/255 on disk) and ``LoadAnnotations``
    on 0/1 masks give 0/1 maps whose connected foreground regions become the
    instances of class 1; 255 in a 0/1 mask is ignored.

    An image without any instance (after ``min_area`` and ``classes``) follows
    ``on_empty``: ``'skip'`` returns None, on which MMEngine's dataset draws
    another sample in training (a test dataset raises on None); ``'keep'`` keeps
    it with N = 0 (test pipelines: the image still counts in the metrics);
    ``'error'`` raises a ValueError naming the mask file.

    Required keys: ``gt_seg_map`` (integer ``(H, W)``); ``seg_map_holds_instance_ids``,
    ``instance_path``, ``img_path``, ``seg_map_path``, ``reduce_zero_label`` when
    present.
    Modified keys: ``gt_seg_map`` (the classes again, uint8, where it held ids).
    Added keys: ``gt_instance_masks`` (bool ``(N, H, W)``), ``gt_instance_labels``
    (int64 ``(N,)``, class indices), ``gt_instance_bboxes`` (float32 ``(N, 4)``,
    tight ``(x0, y0, x1, y1)`` of inclusive pixel indices, see
    :func:`masks_to_boxes`), ``instances_frame`` (:func:`instances_frame`).

    Args:
        classes: the label values that are instances; None takes every value
            except ``background`` and ``ignore_index``.
        background: the background label, never an instance; None makes 0 an
            instance class too (used only when ``classes`` is None).
        ignore_index: the label of pixels that belong to nothing (mmseg: 255).
        connectivity: 8 (diagonal neighbours connect) or 4.
        min_area: instances with fewer pixels are dropped.
        max_instances: at most this many instances per image; None keeps all.
        seed: None (numpy's global RNG) or an int (per-image generator), see
            :func:`image_rng`.
        on_empty: ``'skip'``, ``'keep'`` or ``'error'``, see above.

    Raises:
        ValueError: at construction for a bad argument; on a sample whose mask is
            not an integer ``(H, W)`` map, whose ids do not match the mask, or
            loaded with ``reduce_zero_label=True`` while ``background=0``; on an
            empty sample with ``on_empty='error'``. Each names the files.
    """

    needs_annotations = True  # inference pipelines drop it (see transforms.roles)

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        background: int | None = 0,
        ignore_index: int = 255,
        connectivity: int = 8,
        min_area: int = 1,
        max_instances: int | None = None,
        seed: int | None = None,
        on_empty: str = 'skip',
    ) -> None:
        if connectivity not in (4, 8) or isinstance(connectivity, bool):
            raise ValueError(f'connectivity must be 4 or 8, got {connectivity!r}')
        if on_empty not in _ON_EMPTY:
            raise ValueError(f'on_empty must be one of {_ON_EMPTY}, got {on_empty!r}')
        ignore_index = _int_or_raise('ignore_index', ignore_index, 0)
        if background is not None:
            background = _int_or_raise('background', background, 0)
            if background == ignore_index:
                raise ValueError(f'background and ignore_index are both {background}')
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
                raise ValueError(
                    f'classes must be a non-empty sequence of label values or None, got {classes!r}'
                )
            classes = tuple(_int_or_raise('every value of classes', c, 0) for c in classes)
            bad = [c for c in classes if c in (ignore_index, background)]
            if bad:
                raise ValueError(
                    f'classes {list(classes)} include {bad}, the background ({background}) or ignore '
                    f'({ignore_index}) label; to make 0 an instance class set background=None'
                )
        check_seed(seed)
        self.classes = classes
        self.background = background
        self.ignore_index = ignore_index
        self.connectivity = connectivity
        self.min_area = _int_or_raise('min_area', min_area, 1)
        self.max_instances = (
            None if max_instances is None else _int_or_raise('max_instances', max_instances, 1)
        )
        self.seed = seed
        self.on_empty = on_empty
        # 3x3 structure: 8-connectivity; the cross: 4-connectivity
        self._structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)

    def drop_rule(self) -> str | None:
        """When this step drops a sample (returns None), in words; None when it never does."""
        if self.on_empty != 'skip':
            return None
        return (
            f"GenerateInstances(on_empty='skip') drops every image without an instance of at least "
            f'min_area={self.min_area} pixels (counted at its step of the pipeline) among classes={self.classes} '
            f'(background={self.background}, ignore_index={self.ignore_index} excluded)'
        )

    def _is_instance_class(self, value: int) -> bool:
        if self.classes is not None:
            return value in self.classes
        return value not in (self.ignore_index, self.background)

    def _components(self, seg: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Connected components per instance class: instance map (0 = none, 1..N) and the N classes."""
        present = np.flatnonzero(np.bincount(seg.ravel())) if seg.dtype == np.uint8 else np.unique(seg)
        instance_map = np.zeros(seg.shape, np.int32)
        labels: list[int] = []
        for value in present.tolist():
            if not self._is_instance_class(value):
                continue
            components, count = ndimage.label(seg == value, structure=self._structure)
            inside = components > 0
            instance_map[inside] = components[inside] + len(labels)
            labels += [value] * count
        return instance_map, labels

    def _from_ids(
        self, seg: np.ndarray, ids: np.ndarray, results: dict[str, Any]
    ) -> tuple[np.ndarray, list[int]]:
        """Instances of an id map: instance map (0 = none, 1..N, by id) and the N classes."""
        source = results.get('instance_path') or sample_files(results)
        valid = (ids != 0) & (seg != self.ignore_index)
        pair_ids = ids[valid].astype(np.int64)
        pair_classes = seg[valid].astype(np.int64)
        span = int(pair_classes.max()) + 1 if pair_classes.size else 1
        pairs = np.unique(pair_ids * span + pair_classes)  # one entry per (id, class)
        unique_ids, first, counts = np.unique(pairs // span, return_index=True, return_counts=True)
        if (counts > 1).any():
            bad = int(unique_ids[counts > 1][0])
            found = sorted(int(p % span) for p in pairs if p // span == bad)
            raise ValueError(
                f'{source}: instance id {bad} covers pixels of classes {found} in {sample_files(results)}; '
                'an instance must lie on one class (ignore pixels excepted)'
            )
        classes = (pairs[first] % span).tolist()
        kept = [(i, c) for i, c in zip(unique_ids.tolist(), classes) if self._is_instance_class(c)]
        lookup = np.zeros(int(ids.max()) + 1, np.int32)
        for index, (instance_id, _) in enumerate(kept, start=1):
            lookup[instance_id] = index
        instance_map = np.where(valid, lookup[ids], 0).astype(np.int32)
        return instance_map, [c for _, c in kept]

    def _select(self, instance_map: np.ndarray, labels: list[int], results: dict[str, Any]) -> list[int]:
        """Indices (1-based, ascending) of the instances kept after ``min_area`` and ``max_instances``."""
        areas = np.bincount(instance_map.ravel(), minlength=len(labels) + 1)[1:]
        kept = (np.flatnonzero(areas >= self.min_area) + 1).tolist()
        if self.max_instances is not None and len(kept) > self.max_instances:
            rng = image_rng(self.seed, results)
            drawn = rng.choice(len(kept), self.max_instances, replace=False)
            kept = [kept[i] for i in sorted(drawn.tolist())]
        return kept

    def transform(self, results: dict[str, Any]) -> dict[str, Any] | None:
        """Add the instance masks, classes and boxes; None for an empty sample with ``on_empty='skip'``."""
        seg = results.get('gt_seg_map')
        if seg is None:
            raise ValueError(
                f'GenerateInstances found no gt_seg_map for image {results.get("img_path")}: place it after '
                'LoadAnnotations (or LoadBinaryAnnotations, LoadCOCOInstances)'
            )
        if not isinstance(seg, np.ndarray) or seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
            kind = f'{seg.dtype} {tuple(seg.shape)}' if isinstance(seg, np.ndarray) else type(seg).__name__
            raise TypeError(f'{sample_files(results)}: gt_seg_map must be an integer (H, W) map, got {kind}')
        if results.get('reduce_zero_label', False) and self.classes is None and self.background == 0:
            raise ValueError(
                f'{sample_files(results)} is loaded with reduce_zero_label=True, which turns the background '
                'into 255 (ignored) and class 1 into 0: set GenerateInstances(background=None) so that 0 is '
                'an instance class'
            )
        if results.pop(ENCODED_IDS, False):
            if seg.min() < 0:
                raise ValueError(f'{sample_files(results)}: a mask holding instance ids has negative values')
            ids, seg = np.divmod(seg, ID_STRIDE)
            seg = seg.astype(np.uint8)
            results['gt_seg_map'] = seg
            instance_map, labels = self._from_ids(seg, ids, results)
        else:
            instance_map, labels = self._components(seg)
        kept = self._select(instance_map, labels, results)
        if not kept:
            if self.on_empty == 'skip':
                return None
            if self.on_empty == 'error':
                raise ValueError(
                    f'{sample_files(results)} holds no instance (classes={self.classes}, '
                    f'background={self.background}, ignore_index={self.ignore_index}, min_area={self.min_area}); '
                    "GenerateInstances(on_empty='skip') draws another sample instead, 'keep' keeps it with none"
                )
        masks = instance_map[None] == np.asarray(kept, np.int32)[:, None, None]  # (H, W) -> (N, H, W)
        results['gt_instance_masks'] = masks
        results['gt_instance_labels'] = np.asarray([labels[i - 1] for i in kept], np.int64)
        results['gt_instance_bboxes'] = masks_to_boxes(masks)
        results[INSTANCES_FRAME] = instances_frame(results)
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(classes={self.classes}, background={self.background}, '
            f'ignore_index={self.ignore_index}, connectivity={self.connectivity}, min_area={self.min_area}, '
            f'max_instances={self.max_instances}, seed={self.seed}, on_empty={self.on_empty!r})'
        )
