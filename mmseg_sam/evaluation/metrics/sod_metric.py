"""Camouflaged / salient object metrics (S-measure, weighted F, E-measure, MAE) via pysodmetrics."""

from typing import Any

import numpy as np
import py_sod_metrics
from mmseg.registry import METRICS

from .base_binary_metric import BaseBinaryMetric, BinaryMaps

__all__ = ['SODMetric']


@METRICS.register_module()
class SODMetric(BaseBinaryMetric):
    """Camouflage / polyp metrics, computed per image by pysodmetrics then averaged.

    Input conversion, per image (what pysodmetrics' ``prepare_data`` does to an
    8-bit map, minus the 8-bit rounding):

    - prediction: the foreground probability, min-max normalised to [0, 1] when it
      is not constant (a constant map is kept as is), as float64. The Conv-LoRA
      reference (AutoGluon's ``semantic_seg_metrics.py``) passes the float map the
      same way (``prob * 255`` through pysodmetrics' own normalisation); offline
      toolboxes read 8-bit PNGs, i.e. the map rounded to multiples of 1/255 first,
      which changed the scores by up to about 1e-3 on random test maps.
    - ground truth: ``label == 1`` (the field's ``GT > 128``: the camouflage and
      polyp converters write 1 where the release's mask is > 128).
    - both go to pysodmetrics with ``normalize=False``.

    The structural measures need a whole map: ``ignore_index`` pixels may only form a
    border (e.g. padding), which is cropped away; ignored pixels inside the bounding
    box of the valid ones raise a ``ValueError``. An image without valid pixels is left out.

    Result keys (fractions, not percent; MAE lower is better, the others higher; the
    E-measure divides by N - 1 and can exceed 1 by 1 / (N - 1)):

    - ``Sm``: S-measure (``alpha``). An all-background ground truth gives
      ``1 - mean(pred)``, an all-foreground one ``mean(pred)``.
    - ``wFm``: weighted F-measure (``beta2``); 0 on an all-background ground truth
      (pysodmetrics' convention).
    - ``meanEm``, ``maxEm``: mean and maximum over the 256 thresholds of the E-measure
      curve averaged over images; ``adpEm``: E-measure at twice the mean prediction.
    - ``MAE``: mean absolute error between the normalised map and the ground truth.
    - ``meanFm``, ``maxFm``, ``adpFm``: the same for the F-measure (``beta2``).

    Args:
        alpha: S-measure weight of the object term (0.5 in the field).
        beta2: beta^2 of the weighted F-measure and the F-measure (0.3 in the
            field and the Conv-LoRA reference; pysodmetrics' WeightedFmeasure
            default is 1).
        **kwargs: ``ignore_index``, ``output_dir``, ``format_only``, ... of
            :class:`BaseBinaryMetric`.
    """

    def __init__(self, alpha: float = 0.5, beta2: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= alpha <= 1:
            raise ValueError(f'alpha must be in [0, 1], got {alpha!r}')
        if not beta2 > 0:
            raise ValueError(f'beta2 must be positive, got {beta2!r}')
        self.alpha = float(alpha)
        self.beta2 = float(beta2)

    def process_image(self, maps: BinaryMaps) -> dict | None:
        """pysodmetrics' scores of one image (E/F curves over 256 thresholds)."""
        prob, foreground, valid = maps.prob, maps.foreground, maps.valid
        if not valid.all():
            rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
            if rows.size == 0:
                return None  # nothing to evaluate; one entry per image all the same
            box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            if not valid[box].all():
                raise ValueError(
                    f'{np.count_nonzero(~valid[box])} ignore_index={self.ignore_index} pixels lie inside the '
                    f'valid region {valid[box].shape}: S-measure, weighted F and E-measure need a whole map, '
                    'so ignored pixels may only form a border (padding), which is cropped'
                )
            prob, foreground = prob[box], foreground[box]
        pred = normalize_min_max(prob)

        sm = py_sod_metrics.Smeasure(alpha=self.alpha)
        wfm = py_sod_metrics.WeightedFmeasure(beta=self.beta2)
        em = py_sod_metrics.Emeasure()
        mae = py_sod_metrics.MAE()
        fm = py_sod_metrics.FmeasureV2(
            {'fm': py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=self.beta2)}
        )
        for metric in (sm, wfm, em, mae, fm):
            metric.step(pred, foreground, normalize=False)
        em_results, fm_results = em.get_results()['em'], fm.get_results()['fm']
        return dict(
            sm=float(sm.get_results()['sm']),
            wfm=float(wfm.get_results()['wfm']),
            mae=float(mae.get_results()['mae']),
            em_curve=em_results['curve'],  # (256,)
            adp_em=float(em_results['adp']),
            fm_curve=fm_results['dynamic'],  # (256,)
            adp_fm=float(fm_results['adaptive']),
        )

    def compute_scores(self, results: list) -> dict[str, float]:
        results = [r for r in results if r is not None]
        if not results:
            raise ValueError(f'{type(self).__name__}: no image has valid (not ignore_index) pixels')
        em_curve = np.mean([r['em_curve'] for r in results], axis=0)  # (256,) over images
        fm_curve = np.mean([r['fm_curve'] for r in results], axis=0)
        return {
            'Sm': float(np.mean([r['sm'] for r in results])),
            'wFm': float(np.mean([r['wfm'] for r in results])),
            'meanEm': float(em_curve.mean()),
            'MAE': float(np.mean([r['mae'] for r in results])),
            'maxEm': float(em_curve.max()),
            'adpEm': float(np.mean([r['adp_em'] for r in results])),
            'meanFm': float(fm_curve.mean()),
            'maxFm': float(fm_curve.max()),
            'adpFm': float(np.mean([r['adp_fm'] for r in results])),
        }


def normalize_min_max(prob: np.ndarray) -> np.ndarray:
    """``(p - min) / (max - min)`` per image; a constant map is returned unchanged (as pysodmetrics does)."""
    low, high = prob.min(), prob.max()
    if high == low:
        return prob.astype(np.float64)
    return (prob - low) / (high - low)
