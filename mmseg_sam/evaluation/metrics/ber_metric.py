"""Balance error rate of shadow detection."""

from typing import Any

import numpy as np
from mmseg.registry import METRICS

from .base_binary_metric import BaseBinaryMetric, BinaryMaps, check_threshold

__all__ = ['BERMetric']


@METRICS.register_module()
class BERMetric(BaseBinaryMetric):
    """Balance error rate (BER), per image then averaged, in percent.

    Each image's shadow mask is the model's decision (``pred_sem_seg``: for a
    1-channel head ``prob > decode_head.threshold``; the shadow benchmark configs set
    that to 125/255, as the shadow literature thresholds 8-bit maps at ``> 125``), or
    ``prob > threshold`` when ``threshold`` is set; over its valid pixels::

        shadow error     = 1 - TP / (TP + FN)      (1 - TPR)
        non-shadow error = 1 - TN / (TN + FP)      (1 - TNR)
        BER              = (shadow error + non-shadow error) / 2
                         = 1 - (TPR + TNR) / 2

    An error rate is undefined on an image without pixels of its class: such an
    image's BER is the mean of its defined rates (an image without shadow scores its
    non-shadow error, one that is all shadow its shadow error), and it is left out
    of the mean of the undefined rate. Images without valid pixels are left out.

    Result keys, in percent (lower is better):

    - ``BER``: mean of the per-image BER (the protocol of the Conv-LoRA paper).
    - ``shadow_err``, ``non_shadow_err``: means of the per-image error rates over the
      images where they are defined. When every image has both classes,
      ``BER = (shadow_err + non_shadow_err) / 2``.
    - ``BER_dataset``: from TP, TN, FP, FN summed over the dataset, as shadow
      evaluation scripts that accumulate counts over the test set do.

    Args:
        threshold: None (default) scores the model's decision; a float in [0, 1)
            scores ``prob > threshold`` instead (a warning says when that differs
            from the model's decision).
        **kwargs: ``ignore_index``, ``output_dir``, ``format_only``, ... of
            :class:`BaseBinaryMetric`.
    """

    def __init__(self, threshold: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = check_threshold(threshold)

    def process_image(self, maps: BinaryMaps) -> np.ndarray:
        """Counts (TP, FN, TN, FP) of one image over its valid pixels."""
        pred = self.decide(maps, self.threshold)
        pos, neg = maps.foreground & maps.valid, ~maps.foreground & maps.valid
        tp = np.count_nonzero(pred & pos)
        tn = np.count_nonzero(~pred & neg)
        return np.array([tp, np.count_nonzero(pos) - tp, tn, np.count_nonzero(neg) - tn], dtype=np.int64)

    def compute_scores(self, results: list) -> dict[str, float]:
        counts = np.stack(results).astype(np.float64)  # (N, 4): TP, FN, TN, FP
        tp, fn, tn, fp = counts.T
        pos, neg = tp + fn, tn + fp
        has_pos, has_neg = pos > 0, neg > 0
        if not (has_pos | has_neg).any():
            raise ValueError(f'{type(self).__name__}: no image has valid (not ignore_index) pixels')
        shadow_err = 1 - np.divide(tp, pos, out=np.zeros_like(tp), where=has_pos)
        non_shadow_err = 1 - np.divide(tn, neg, out=np.zeros_like(tn), where=has_neg)
        # mean of the defined rates of each image
        defined = has_pos.astype(np.float64) + has_neg  # (N,) 0, 1 or 2
        scored = defined > 0
        ber = (shadow_err * has_pos + non_shadow_err * has_neg) / np.maximum(defined, 1)
        total_tpr = tp.sum() / pos.sum() if pos.sum() > 0 else np.nan
        total_tnr = tn.sum() / neg.sum() if neg.sum() > 0 else np.nan
        return {
            'BER': 100 * float(ber[scored].mean()),
            'shadow_err': 100 * float(shadow_err[has_pos].mean()) if has_pos.any() else float('nan'),
            'non_shadow_err': 100 * float(non_shadow_err[has_neg].mean()) if has_neg.any() else float('nan'),
            'BER_dataset': 100 * float(1 - np.nanmean([total_tpr, total_tnr])),
        }
