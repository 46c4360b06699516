"""Foreground IoU and Dice per image (skin lesion, leaf disease, roads)."""

from typing import Any

import numpy as np
from mmseg.registry import METRICS

from .base_binary_metric import BaseBinaryMetric, BinaryMaps, check_threshold

__all__ = ['BinaryIoUMetric']


@METRICS.register_module()
class BinaryIoUMetric(BaseBinaryMetric):
    """Foreground IoU and Dice of a binary segmentation, per image then averaged.

    Each image's foreground is the model's decision (``pred_sem_seg``: for a
    1-channel head ``prob > decode_head.threshold``, what ``tools/infer.py`` writes),
    or ``prob > threshold`` when ``threshold`` is set; over its valid pixels (label not
    ``ignore_index``) ``IoU = TP / (TP + FP + FN)`` and ``Dice = 2TP / (2TP + FP + FN)``.
    An image whose valid pixels have neither ground-truth nor predicted foreground
    (TP + FP + FN = 0) scores ``empty_score`` for both (default 1: nothing to find,
    nothing found; torchmetrics' binary JaccardIndex, used by the Conv-LoRA
    reference, gives 0 there). Images without valid pixels are left out.

    Result keys, in percent:

    - ``IoU``, ``Dice``: means over images (the papers' ISIC/leaf/road protocol).
    - ``IoU_dataset``, ``Dice_dataset``: from TP, FP, FN summed over the dataset.

    Args:
        threshold: None (default) scores the model's decision; a float in [0, 1)
            scores ``prob > threshold`` instead (a warning says when that differs
            from the model's decision).
        empty_score: IoU and Dice of an image with empty ground truth and empty
            prediction; in [0, 1].
        **kwargs: ``ignore_index``, ``output_dir``, ``format_only``, ... of
            :class:`BaseBinaryMetric`.
    """

    def __init__(self, threshold: float | None = None, empty_score: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= empty_score <= 1:
            raise ValueError(f'empty_score must be in [0, 1], got {empty_score!r}')
        self.threshold = check_threshold(threshold)
        self.empty_score = float(empty_score)

    def process_image(self, maps: BinaryMaps) -> np.ndarray:
        """Counts (TP, FP, FN, valid pixels) of one image."""
        valid = maps.valid
        pred = self.decide(maps, self.threshold) & valid
        gt = maps.foreground & valid
        tp = np.count_nonzero(pred & gt)
        fp = np.count_nonzero(pred & ~gt)
        fn = np.count_nonzero(~pred & gt)
        return np.array([tp, fp, fn, np.count_nonzero(valid)], dtype=np.int64)

    def compute_scores(self, results: list) -> dict[str, float]:
        counts = np.stack(results).astype(np.float64)  # (N, 4)
        counts = counts[counts[:, 3] > 0]  # images without valid pixels do not count
        if len(counts) == 0:
            raise ValueError(f'{type(self).__name__}: no image has valid (not ignore_index) pixels')
        tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
        total_tp, total_fp, total_fn = tp.sum(), fp.sum(), fn.sum()
        return {
            'IoU': 100 * float(np.mean(self._ratio(tp, tp + fp + fn))),
            'Dice': 100 * float(np.mean(self._ratio(2 * tp, 2 * tp + fp + fn))),
            'IoU_dataset': 100 * float(self._ratio(total_tp, total_tp + total_fp + total_fn)),
            'Dice_dataset': 100 * float(self._ratio(2 * total_tp, 2 * total_tp + total_fp + total_fn)),
        }

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        """``num / den``, ``empty_score`` where ``den == 0`` (then ``num == 0`` too)."""
        num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
        out = np.full_like(den, self.empty_score)
        np.divide(num, den, out=out, where=den > 0)
        return out
