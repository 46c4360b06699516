"""Box and point prompts per instance, drawn by the rules of SAM, SAM 2, COBOT and MedSAM."""

from __future__ import annotations

from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from scipy import ndimage

from .instances import check_seed, image_rng, sample_files

__all__ = ['BOX_JITTERS', 'SamplePrompts', 'jitter_boxes']

#: Box rule -> default ``max_shift`` (None: the rule has none).
BOX_JITTERS: dict[str, float | None] = {'none': None, 'shift': 49, 'expand': 19, 'sam': 20, 'sam2': 20}
#: SAM's and SAM 2's box noise scale, as a share of the box side.
BOX_NOISE = 0.1


def jitter_boxes(
    boxes: np.ndarray, rule: str, max_shift: float | None, rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
    """Prompt boxes from tight boxes by one of the rules of :class:`SamplePrompts`.

    Args:
        boxes: float32 ``(N, 4)`` tight ``(x0, y0, x1, y1)``, inclusive pixel indices.
        rule: a key of :data:`BOX_JITTERS`.
        max_shift: the rule's bound in pixels (see :class:`SamplePrompts`).
        rng: draws one ``(N, 4)`` array (nothing for ``'none'``).
        height: image height; boxes are clipped to ``[0, height - 1]``.
        width: image width; boxes are clipped to ``[0, width - 1]``.

    Returns:
        float32 ``(N, 4)``.
    """
    boxes = boxes.astype(np.float64)
    n = len(boxes)
    if rule == 'shift':  # COBOT remote/train_SAM_box.py: box + U{0..49} per coordinate
        boxes = boxes + rng.integers(0, int(max_shift) + 1, (n, 4))
    elif rule == 'expand':  # COBOT medical/train.py, MedSAM: each side out by U{0..max_shift}
        boxes = boxes + rng.integers(0, int(max_shift) + 1, (n, 4)) * np.array([-1, -1, 1, 1])
    elif rule in ('sam', 'sam2'):
        sides = np.stack(
            [boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1
        )  # (N, 4): w, h, w, h
        scale = np.minimum(BOX_NOISE * sides, max_shift)
        noise = rng.standard_normal((n, 4)) if rule == 'sam' else rng.uniform(-1.0, 1.0, (n, 4))
        boxes = boxes + noise * scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height - 1)
    return boxes.astype(np.float32)


def _border_distance(mask: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and border distances of a mask's pixels, in raster order.

    The distance is the Euclidean distance from a pixel to the nearest pixel
    outside the instance, pixels beyond the image border counting as outside: 1 on
    the instance's edge. Computed on the tight box padded by one pixel, which is
    exact (the pixels around a tight box are all outside the instance).
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = np.pad(mask[y0 : y1 + 1, x0 : x1 + 1], 1)  # (h, w) -> (h + 2, w + 2), outside = 0
    distance = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
    rows, cols = np.nonzero(crop[1:-1, 1:-1])
    return rows + y0, cols + x0, distance[rows, cols]


@TRANSFORMS.register_module()
class SamplePrompts(BaseTransform):
    """Draw the prompts of every instance: a box and positive / negative points.

    Box rules (``box_jitter``), from the instance's tight box ``(x0, y0, x1, y1)``
    (inclusive pixel indices), each result clipped to ``[0, W - 1] x [0, H - 1]``:

    - ``'none'``: the tight box (evaluation with exact boxes).
    - ``'shift'`` (COBOT, natural and remote-sensing images,
      ``remote/train_SAM_box.py``): ``U{0..max_shift}`` pixels added to each of the
      four coordinates independently, ``max_shift=49`` (``np.random.randint(0, 50,
      size=4)``). All offsets are positive: the box moves right and down, and for
      an instance narrower than the shift it can come out inverted
      (``x0 > x1``), kept as drawn as COBOT does. COBOT does not clip.
    - ``'expand'`` (COBOT's medical pipeline ``medical/train.py`` with
      ``max_shift=19``, ``np.random.randint(0, 20)``, the default; MedSAM's
      ``train_one_gpu.py`` with ``max_shift=20``, ``random.randint(0, 20)``): each
      side moved outward by its own ``U{0..max_shift}`` pixels. Both clip to
      ``[0, W]``; here to ``[0, W - 1]``.
    - ``'sam'`` (SAM's paper, appendix "Training algorithm"): Gaussian noise on each
      coordinate with a standard deviation of 10% of the box side (width ``x1 - x0``
      for x, height for y), capped at ``max_shift=20`` pixels (the paper's "to a
      maximum of 20 pixels", read as SAM 2's code caps its noise scale).
    - ``'sam2'`` (SAM 2's ``sam2/modeling/sam2_utils.py``, ``sample_box_points``):
      uniform noise in ``[-s, s]`` on each coordinate with ``s = min(0.1 * side,
      max_shift=20)``, clipped to ``[0, W - 1]`` as here.

    Points, as ``(x, y)`` = (column, row) pixel indices (SAM's prompt encoder adds
    the half-pixel itself):

    - ``num_pos_points`` positives drawn uniformly without replacement from the
      instance's pixels whose distance to the nearest pixel outside the instance
      (the image border counts as outside; 1 on the instance's edge) is at least
      ``min_border_distance``. An instance too thin to have that many such pixels
      gives its most interior pixels instead: the threshold drops to the
      ``num_pos_points``-th largest distance in it. ``min_border_distance=0``
      draws uniformly from the whole mask (SAM's first point).
    - ``num_neg_points`` negatives drawn uniformly without replacement from the
      pixels outside the instance and not ``ignore_index`` (pixels of other
      instances count) inside the tight box grown by ``neg_margin`` pixels, clipped
      to the image.

    ``prompt_points[i]`` holds the positives in slots ``0 .. num_pos_points - 1``
    and the negatives after them; a slot that the instance cannot fill (fewer
    pixels than asked) has label -1 and coordinates ``(0, 0)``, SAM's padding point.

    Random draws follow :func:`~mmseg_sam.datasets.image_rng`: ``seed=None`` for
    training (numpy's global RNG, seeded per worker by MMEngine), ``seed=int`` for
    test prompts that depend only on the seed and the image file name.

    Place it after :class:`~mmseg_sam.datasets.GenerateInstances`.

    Required keys: ``gt_instance_masks``, ``gt_instance_bboxes``, ``gt_seg_map``
    (for ``ignore_index``); ``img_path`` for ``seed=int``.
    Added keys: ``prompt_boxes`` (float32 ``(N, 4)``) with ``boxes=True``;
    ``prompt_points`` (float32 ``(N, K, 2)``) and ``prompt_point_labels`` (int64
    ``(N, K)``: 1 positive, 0 negative, -1 padding) with ``K = num_pos_points +
    num_neg_points > 0``.

    Args:
        boxes: draw ``prompt_boxes``.
        box_jitter: ``'none'``, ``'shift'``, ``'expand'``, ``'sam'`` or ``'sam2'``.
        max_shift: the rule's bound in pixels; None takes the rule's default
            (49, 19, 20, 20); must be None for ``'none'``.
        num_pos_points: positive points per instance.
        num_neg_points: negative points per instance.
        min_border_distance: least distance of a positive point to the instance's
            boundary, in pixels.
        neg_margin: pixels by which the tight box grows to give the negatives'
            region.
        ignore_index: label of ``gt_seg_map`` where no negative is drawn.
        seed: None or a non-negative int, see above.

    Raises:
        ValueError: at construction for a bad argument or when nothing would be
            drawn; on a sample without instances or with instances of the wrong
            shape or type, naming its files.
    """

    needs_annotations = True  # inference pipelines drop it (see transforms.roles)

    def __init__(
        self,
        boxes: bool = True,
        box_jitter: str = 'none',
        max_shift: float | None = None,
        num_pos_points: int = 1,
        num_neg_points: int = 0,
        min_border_distance: float = 0.0,
        neg_margin: int = 10,
        ignore_index: int = 255,
        seed: int | None = None,
    ) -> None:
        if not isinstance(boxes, bool):
            raise ValueError(f'boxes must be a bool, got {boxes!r}')
        if box_jitter not in BOX_JITTERS:
            raise ValueError(f'box_jitter must be one of {tuple(BOX_JITTERS)}, got {box_jitter!r}')
        if max_shift is None:
            max_shift = BOX_JITTERS[box_jitter]
        elif box_jitter == 'none':
            raise ValueError(f"max_shift={max_shift!r} has no effect with box_jitter='none'; leave it None")
        elif box_jitter in ('shift', 'expand') and (
            isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0
        ):
            raise ValueError(f"max_shift of box_jitter='{box_jitter}' must be an int >= 0, got {max_shift!r}")
        elif isinstance(max_shift, bool) or not isinstance(max_shift, (int, float)) or max_shift < 0:
            raise ValueError(
                f"max_shift of box_jitter='{box_jitter}' must be a number >= 0, got {max_shift!r}"
            )
        for name, value in (('num_pos_points', num_pos_points), ('num_neg_points', num_neg_points)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, got {value!r}')
        if not boxes and num_pos_points + num_neg_points == 0:
            raise ValueError('SamplePrompts draws nothing: boxes=False and no points asked for')
        if isinstance(min_border_distance, bool) or not isinstance(min_border_distance, (int, float)):
            raise ValueError(f'min_border_distance must be a number >= 0, got {min_border_distance!r}')
        if min_border_distance < 0:
            raise ValueError(f'min_border_distance must be a number >= 0, got {min_border_distance!r}')
        if isinstance(neg_margin, bool) or not isinstance(neg_margin, int) or neg_margin < 0:
            raise ValueError(f'neg_margin must be an int >= 0, got {neg_margin!r}')
        check_seed(seed)
        self.boxes = boxes
        self.box_jitter = box_jitter
        self.max_shift = max_shift
        self.num_pos_points = num_pos_points
        self.num_neg_points = num_neg_points
        self.min_border_distance = float(min_border_distance)
        self.neg_margin = neg_margin
        self.ignore_index = ignore_index
        self.seed = seed

    def _positives(self, mask: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Up to ``num_pos_points`` ``(x, y)`` points inside the mask, float ``(P, 2)``."""
        rows, cols, distance = _border_distance(mask, box)
        k = self.num_pos_points
        threshold = self.min_border_distance
        if np.count_nonzero(distance >= threshold) < k:  # too thin: its most interior pixels
            threshold = min(threshold, np.partition(distance, -k)[-k]) if len(distance) >= k else 0.0
        candidates = np.flatnonzero(distance >= threshold)
        chosen = rng.choice(candidates, min(k, len(candidates)), replace=False)
        return np.stack([cols[chosen], rows[chosen]], axis=1)

    def _negatives(
        self, mask: np.ndarray, box: np.ndarray, ignore: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Up to ``num_neg_points`` ``(x, y)`` points outside the mask near it, float ``(M, 2)``."""
        h, w = mask.shape
        m = self.neg_margin
        x0, y0 = max(int(box[0]) - m, 0), max(int(box[1]) - m, 0)
        x1, y1 = min(int(box[2]) + m, w - 1), min(int(box[3]) + m, h - 1)
        region = ~mask[y0 : y1 + 1, x0 : x1 + 1] & ~ignore[y0 : y1 + 1, x0 : x1 + 1]
        rows, cols = np.nonzero(region)
        chosen = rng.choice(len(rows), min(self.num_neg_points, len(rows)), replace=False)
        return np.stack([cols[chosen] + x0, rows[chosen] + y0], axis=1)

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        """Add ``prompt_boxes`` and / or ``prompt_points`` with ``prompt_point_labels``."""
        missing = [k for k in ('gt_instance_masks', 'gt_instance_bboxes', 'gt_seg_map') if k not in results]
        if missing:
            raise ValueError(
                f'SamplePrompts needs {missing} for {sample_files(results)}: place it after GenerateInstances'
            )
        masks, tight = results['gt_instance_masks'], results['gt_instance_bboxes']
        seg = results['gt_seg_map']
        if not isinstance(masks, np.ndarray) or masks.dtype != np.bool_ or masks.ndim != 3:
            kind = f'{masks.dtype} {masks.shape}' if isinstance(masks, np.ndarray) else type(masks).__name__
            raise TypeError(f'{sample_files(results)}: gt_instance_masks must be bool (N, H, W), got {kind}')
        n, h, w = masks.shape
        if np.shape(tight) != (n, 4) or seg.shape[:2] != (h, w):
            raise ValueError(
                f'{sample_files(results)}: gt_instance_bboxes {np.shape(tight)} and gt_seg_map {seg.shape} '
                f'do not match gt_instance_masks {masks.shape} (expected ({n}, 4) and ({h}, {w}))'
            )
        rng = image_rng(self.seed, results)
        if self.boxes:
            results['prompt_boxes'] = jitter_boxes(tight, self.box_jitter, self.max_shift, rng, h, w)
        k = self.num_pos_points + self.num_neg_points
        if k == 0:
            return results
        points = np.zeros((n, k, 2), np.float32)
        labels = np.full((n, k), -1, np.int64)
        ignore = seg == self.ignore_index
        for i in range(n):
            if self.num_pos_points:
                pos = self._positives(masks[i], tight[i], rng)
                points[i, : len(pos)] = pos
                labels[i, : len(pos)] = 1
            if self.num_neg_points:
                neg = self._negatives(masks[i], tight[i], ignore, rng)
                start = self.num_pos_points
                points[i, start : start + len(neg)] = neg
                labels[i, start : start + len(neg)] = 0
        results['prompt_points'] = points
        results['prompt_point_labels'] = labels
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(boxes={self.boxes}, box_jitter={self.box_jitter!r}, '
            f'max_shift={self.max_shift}, num_pos_points={self.num_pos_points}, '
            f'num_neg_points={self.num_neg_points}, min_border_distance={self.min_border_distance}, '
            f'neg_margin={self.neg_margin}, ignore_index={self.ignore_index}, seed={self.seed})'
        )
