"""Camouflaged / salient object metrics (S-measure, weighted F, E-measure, MAE) via pysodmetrics."""

from typing import Any

import numpy as np
from mmseg.registry import METRICS

from .base_binary_metric import BaseBinaryMetric, BinaryMaps

__all__ = ['SODMetric']


#: The evaluation protocols: the field's published evaluators, and the Conv-LoRA reference.
PROTOCOLS = {
    # Margolin et al.'s weighted F (beta^2 = 1), the F-measure of the saliency literature
    # (beta^2 = 0.3), on 8-bit maps: pysodmetrics' default WeightedFmeasure() / Fmeasure(),
    # fed the uint8 PNGs the camouflage and polyp toolboxes read.
    'field': dict(wfm_beta2=1.0, fm_beta2=0.3, eight_bit=True),
    # AutoGluon's semantic_seg_metrics.py, used by the Conv-LoRA paper: WeightedFmeasure(beta=0.3),
    # Fmeasure(beta=1.0), float maps (prob * 255 through pysodmetrics' normalisation).
    'conv_lora': dict(wfm_beta2=0.3, fm_beta2=1.0, eight_bit=False),
}


@METRICS.register_module()
class SODMetric(BaseBinaryMetric):
    """Camouflage / polyp metrics, computed per image by pysodmetrics then averaged.

    ``protocol`` says whose numbers the keys reproduce:

    - ``'field'`` (default): the published camouflage / polyp / saliency tables.
      Each probability map is rounded to 8 bits (``round(255 * p)``, the PNG that
      ``tools/test.py --out`` writes under ``probabilities/``) and the ground truth
      written as 0/255, both handed to pysodmetrics as the toolboxes hand their PNGs
      (``normalize=True``: ``pred / 255``, min-max per image, ``GT > 128``); weighted
      F with beta^2 = 1, F-measure with beta^2 = 0.3.
    - ``'conv_lora'``: the Conv-LoRA reference (AutoGluon's
      ``semantic_seg_metrics.py``): float maps (``prob * 255`` through pysodmetrics'
      normalisation, no 8-bit rounding), weighted F with beta^2 = 0.3 and F-measure
      with beta^2 = 1. For comparing with that paper's numbers.

    pysodmetrics names beta^2 ``beta``. Ground truth is ``label == 1`` (the
    camouflage and polyp converters write 1 where the release's mask is > 128).

    The structural measures need a whole map: ``ignore_index`` pixels may only form a
    border (e.g. padding), which is cropped away; ignored pixels inside the bounding
    box of the valid ones raise a ``ValueError``. An image without valid pixels is left out.

    Result keys (fractions, not percent; MAE lower is better, the others higher; the
    E-measure divides by N - 1 and can exceed 1 by 1 / (N - 1)):

    - ``Sm``: S-measure (``alpha``). An all-background ground truth gives
      ``1 - mean(pred)``, an all-foreground one ``mean(pred)``.
    - ``wFm``: weighted F-measure; 0 on an all-background ground truth
      (pysodmetrics' convention).
    - ``meanEm``, ``maxEm``: mean and maximum over the 256 thresholds of the E-measure
      curve averaged over images; ``adpEm``: E-measure at twice the mean prediction.
    - ``MAE``: mean absolute error between the normalised map and the ground truth.
    - ``meanFm``, ``maxFm``, ``adpFm``: the same for the F-measure.

    Args:
        protocol: ``'field'`` or ``'conv_lora'`` (see above).
        alpha: S-measure weight of the object term (0.5 in both protocols).
        beta2: not an option: the protocol sets both betas; passing it raises, naming the protocols.
        **kwargs: ``ignore_index``, ``output_dir``, ``format_only``, ... of
            :class:`BaseBinaryMetric`.
    """

    def __init__(self, protocol: str = 'field', alpha: float = 0.5, beta2: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if beta2 is not None:
            raise ValueError(
                f"SODMetric(beta2={beta2!r}): the betas follow protocol='field' (weighted F beta^2 = 1, "
                "F-measure beta^2 = 0.3) or protocol='conv_lora' (0.3 and 1, the Conv-LoRA reference)"
            )
        if protocol not in PROTOCOLS:
            raise ValueError(f'protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}')
        if not 0 <= alpha <= 1:
            raise ValueError(f'alpha must be in [0, 1], got {alpha!r}')
        self.protocol = protocol
        self.alpha = float(alpha)
        settings = PROTOCOLS[protocol]
        self.wfm_beta2, self.fm_beta2, self.eight_bit = (
            settings['wfm_beta2'],
            settings['fm_beta2'],
            settings['eight_bit'],
        )

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
        if self.eight_bit:  # the PNGs a toolbox reads, and its call: normalize=True
            pred, gt, normalize = (
                np.rint(prob * 255).astype(np.uint8),
                foreground.astype(np.uint8) * 255,
                True,
            )
        else:  # what pysodmetrics' normalisation makes of prob * 255, without rounding
            pred, gt, normalize = normalize_min_max(prob), foreground, False

        import py_sod_metrics  # with scikit-learn and scikit-image: imported when a score is computed

        sm = py_sod_metrics.Smeasure(alpha=self.alpha)
        wfm = py_sod_metrics.WeightedFmeasure(beta=self.wfm_beta2)
        em = py_sod_metrics.Emeasure()
        mae = py_sod_metrics.MAE()
        fm = py_sod_metrics.Fmeasure(beta=self.fm_beta2)
        for metric in (sm, wfm, em, mae, fm):
            metric.step(pred, gt, normalize=normalize)
        em_results, fm_results = em.get_results()['em'], fm.get_results()['fm']
        return dict(
            sm=float(sm.get_results()['sm']),
            wfm=float(wfm.get_results()['wfm']),
            mae=float(mae.get_results()['mae']),
            em_curve=em_results['curve'],  # (256,)
            adp_em=float(em_results['adp']),
            fm_curve=fm_results['curve'],  # (256,)
            adp_fm=float(fm_results['adp']),
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
