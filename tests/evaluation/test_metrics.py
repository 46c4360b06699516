"""Binary metrics against values computed by hand or by independent numpy code."""

from unittest.mock import patch

import cv2
import numpy as np
import py_sod_metrics
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.logging import MMLogger
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample
from PIL import Image

from mmseg_sam.evaluation import BERMetric, BinaryIoUMetric, SODMetric, foreground_probability

EPS = np.spacing(1)


def _sample(prob, label, channels: int = 1, threshold: float = 0.5) -> SegDataSample:
    """A predicted data sample: ``prob`` as mmseg stores it (1 channel) or as 2-channel logits.

    ``pred_sem_seg`` is ``prob > threshold``, as ``EncoderDecoder`` decides with the head's threshold.
    """
    prob = torch.as_tensor(np.asarray(prob), dtype=torch.float64)
    decision = (prob > threshold).long()[None]
    if channels == 1:
        seg_logits = prob[None]  # postprocess_result stores sigmoid(logits) for out_channels=1
    else:
        logit = torch.logit(prob.clamp(1e-12, 1 - 1e-12))
        seg_logits = torch.stack([torch.full_like(logit, 0.7), logit + 0.7])  # softmax(...)[1] == prob
    sample = SegDataSample()
    sample.seg_logits = PixelData(data=seg_logits)
    sample.pred_sem_seg = PixelData(data=decision)
    sample.gt_sem_seg = PixelData(data=torch.as_tensor(np.asarray(label), dtype=torch.int64)[None])
    return sample


def _evaluate(metric, samples) -> dict:
    """Through mmengine's Evaluator: samples become dicts, results are collected per image."""
    evaluator = Evaluator(metric)
    evaluator.process(samples)
    for m in evaluator.metrics:  # one entry per image: what collect_results relies on
        assert len(m.results) == len(samples)
    return evaluator.evaluate(len(samples))


def _blob(rng, shape):
    """A random ellipse mask and a noisy probability map that roughly follows it."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.15, 0.35) * w
    gt = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    prob = np.clip(0.6 * gt + 0.4 * rng.random(shape) + rng.normal(0, 0.1, shape), 0, 1)
    return prob, gt


# --- independent reference implementations ---------------------------------------------------


def _min_max(pred):
    return (pred - pred.min()) / (pred.max() - pred.min()) if pred.max() > pred.min() else pred


def _ref_mae(prob, gt):
    return float(np.abs(_min_max(prob) - gt).mean())


def _ref_smeasure(prob, gt, alpha=0.5):
    """S-measure from Fan et al. (ICCV 2017) with the MATLAB reference's conventions."""
    pred, gt = _min_max(prob), gt.astype(bool)
    mu = gt.mean()
    if mu == 0:
        return 1 - pred.mean()
    if mu == 1:
        return pred.mean()

    def o(values):  # object similarity of a distribution to the all-ones map
        x, s = values.mean(), values.std(ddof=1) if values.size > 1 else 0.0
        return 2 * x / (x * x + 1 + s + EPS)

    s_object = mu * o(pred[gt]) + (1 - mu) * o(1 - pred[~gt])

    h, w = gt.shape
    rows, cols = np.nonzero(gt)
    # centroid rounded like numpy (half to even); +1: MATLAB's 1:X includes X
    y, x = int(np.round(rows.sum() / rows.size)) + 1, int(np.round(cols.sum() / cols.size)) + 1

    def ssim(p, g):
        n = p.size
        mp, mg = p.mean(), g.mean()
        vp, vg = ((p - mp) ** 2).sum() / (n - 1 + EPS), ((g - mg) ** 2).sum() / (n - 1 + EPS)
        cov = ((p - mp) * (g - mg)).sum() / (n - 1 + EPS)
        num, den = 4 * mp * mg * cov, (mp**2 + mg**2) * (vp + vg)
        return num / (den + EPS) if num != 0 else (1.0 if den == 0 else 0.0)

    g = gt.astype(np.float64)
    s_region = sum(
        ssim(pred[r, c], g[r, c]) * pred[r, c].size / (h * w)
        for r in (slice(0, y), slice(y, h))
        for c in (slice(0, x), slice(x, w))
        if pred[r, c].size
    )
    return max(0.0, alpha * s_object + (1 - alpha) * s_region)


# --- foreground probabilities and input checks ---------------------------------------------------


def test_foreground_probability_channels():
    logits = torch.randn(2, 5, 7)
    assert torch.allclose(foreground_probability(logits), logits.double().softmax(0)[1])
    prob = torch.rand(1, 5, 7)
    assert torch.equal(foreground_probability(prob), prob[0].double())  # no second sigmoid
    with pytest.raises(ValueError, match=r'shape \(3, 5, 7\): this metric is binary'):
        foreground_probability(torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match=r'must be a \(C, H, W\) tensor, got \(5, 7\)'):
        foreground_probability(torch.rand(5, 7))
    with pytest.raises(ValueError, match=r'probabilities in \[0, 1\].*got values in \[-2'):
        foreground_probability(torch.tensor([[[-2.0, 0.5]]]))


@pytest.mark.parametrize('metric_type', ['BinaryIoUMetric', 'BERMetric', 'SODMetric'])
def test_one_and_two_channels_agree(metric_type):
    rng = np.random.default_rng(0)
    samples = [_blob(rng, (24, 31)), _blob(rng, (17, 20))]
    one = _evaluate(METRICS.build(dict(type=metric_type)), [_sample(p, g, 1) for p, g in samples])
    two = _evaluate(METRICS.build(dict(type=metric_type)), [_sample(p, g, 2) for p, g in samples])
    assert set(one) == set(two)
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize('metric_type', ['BinaryIoUMetric', 'BERMetric', 'SODMetric'])
def test_bad_inputs_raise(metric_type):
    metric = METRICS.build(dict(type=metric_type))
    prob, label = np.full((4, 6), 0.5), np.zeros((4, 6), dtype=np.int64)
    with pytest.raises(ValueError, match=r'are \(4, 6\) but the label is \(4, 5\).*original image size'):
        metric.process(None, [_sample(prob, label[:, :5])])
    label[0, 0] = 2
    with pytest.raises(ValueError, match=r'labels \[2\] found.*ignore_index=255'):
        metric.process(None, [_sample(prob, label)])
    sample = _sample(prob, label).to_dict()
    del sample['seg_logits']
    with pytest.raises(KeyError, match="no 'seg_logits'"):
        metric.process(None, [sample])
    with pytest.raises(ValueError, match=r'\(3, 4, 6\): this metric is binary'):
        sample = _sample(prob, label * 0)
        sample.seg_logits = PixelData(data=torch.randn(3, 4, 6))
        metric.process(None, [sample])
    with pytest.raises(ValueError, match='ignore_index must be an int other than the labels 0 and 1, got 1'):
        METRICS.build(dict(type=metric_type, ignore_index=1))


def test_constructor_checks():
    with pytest.raises(
        ValueError,
        match=r"threshold must be None \(use the model's decision.* or a float in \[0, 1\), got 1.0",
    ):
        BinaryIoUMetric(threshold=1.0)
    with pytest.raises(ValueError, match=r'empty_score must be in \[0, 1\], got 2'):
        BinaryIoUMetric(empty_score=2)
    with pytest.raises(ValueError, match=r'or a float in \[0, 1\), got -0.1'):
        BERMetric(threshold=-0.1)
    with pytest.raises(ValueError, match=r'format_only=True writes the predictions to output_dir'):
        BERMetric(format_only=True)
    with pytest.raises(ValueError, match=r'alpha must be in \[0, 1\], got 1.5'):
        SODMetric(alpha=1.5)
    with pytest.raises(ValueError, match=r"SODMetric\(beta2=0.3\): the betas follow protocol='field'"):
        SODMetric(beta2=0.3)
    with pytest.raises(ValueError, match=r"protocol must be one of \['conv_lora', 'field'\], got 'matlab'"):
        SODMetric(protocol='matlab')


def test_registered_names_and_disjoint_keys():
    metrics = [METRICS.build(dict(type=t)) for t in ('BinaryIoUMetric', 'BERMetric', 'SODMetric')]
    rng = np.random.default_rng(1)
    out = _evaluate(metrics, [_sample(*_blob(rng, (20, 26)))])  # Evaluator refuses clashing names
    assert set(out) == {
        'IoU', 'Dice', 'IoU_dataset', 'Dice_dataset',
        'BER', 'shadow_err', 'non_shadow_err', 'BER_dataset',
        'Sm', 'wFm', 'meanEm', 'MAE', 'maxEm', 'adpEm', 'meanFm', 'maxFm', 'adpFm',
    }  # fmt: skip


# --- BinaryIoUMetric ---------------------------------------------------------------------------------


def test_iou_dice_by_hand():
    label = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    prob = np.array([[0.9, 0.8, 0.2, 0.6], [0.7, 0.5, 0.1, 0.0], [0.0, 0.3, 0.4, 0.5]])
    # prob > 0.5 (0.5 itself is background): TP = 3 ((0,0) (0,1) (1,0)), FP = 1 ((0,3)), FN = 2 ((0,2) (1,1))
    out = _evaluate(BinaryIoUMetric(), [_sample(prob, label)])
    assert out['IoU'] == pytest.approx(100 * 3 / 6)
    assert out['Dice'] == pytest.approx(100 * 6 / 9)
    assert out['IoU_dataset'] == pytest.approx(out['IoU'])
    higher = _evaluate(BinaryIoUMetric(threshold=0.75), [_sample(prob, label)])
    assert higher['IoU'] == pytest.approx(100 * 2 / 5)  # TP 2, FP 0, FN 3


def test_iou_per_image_mean_vs_dataset():
    small = (np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1, 0], [0, 0]]))  # IoU 1
    big_label = np.zeros((4, 4), dtype=np.int64)
    big_label[:2, :2] = 1
    big_prob = np.zeros((4, 4))
    big_prob[:2, :] = 1.0  # TP 4, FP 4, FN 0: IoU 0.5, Dice 2/3
    out = _evaluate(BinaryIoUMetric(), [_sample(*small), _sample(big_prob, big_label)])
    assert out['IoU'] == pytest.approx(100 * (1 + 0.5) / 2)
    assert out['Dice'] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out['IoU_dataset'] == pytest.approx(100 * 5 / 9)  # pooled: TP 5, FP 4, FN 0
    assert out['Dice_dataset'] == pytest.approx(100 * 10 / 14)


@pytest.mark.parametrize('empty_score', [1.0, 0.0])
def test_iou_empty_ground_truth_and_prediction(empty_score):
    empty = _sample(np.full((3, 3), 0.2), np.zeros((3, 3), dtype=np.int64))
    half = _sample(np.array([[1.0, 1.0]]), np.array([[1, 0]]))  # IoU 0.5, Dice 2/3
    out = _evaluate(BinaryIoUMetric(empty_score=empty_score), [empty, half])
    assert out['IoU'] == pytest.approx(100 * (empty_score + 0.5) / 2)
    assert out['Dice'] == pytest.approx(100 * (empty_score + 2 / 3) / 2)
    assert out['IoU_dataset'] == pytest.approx(100 * 0.5)
    false_alarm = _sample(np.full((3, 3), 0.9), np.zeros((3, 3), dtype=np.int64))
    assert _evaluate(BinaryIoUMetric(empty_score=empty_score), [false_alarm])['IoU'] == 0


@pytest.mark.parametrize('metric_type', ['BinaryIoUMetric', 'BERMetric'])
def test_ignored_pixels_have_no_effect(metric_type):
    rng = np.random.default_rng(2)
    prob, gt = _blob(rng, (12, 15))
    label = gt.astype(np.int64)
    ignored = rng.random(label.shape) < 0.3
    label[ignored] = 255
    noisy = prob.copy()
    noisy[ignored] = rng.random(np.count_nonzero(ignored))  # anything may be predicted there
    kept = ~ignored
    flat = _sample(prob[kept][None], gt[kept][None].astype(np.int64))  # only the valid pixels
    expected = _evaluate(METRICS.build(dict(type=metric_type)), [flat])
    for p in (prob, noisy):
        assert _evaluate(METRICS.build(dict(type=metric_type)), [_sample(p, label)]) == pytest.approx(
            expected
        )
    all_ignored = _sample(prob, np.full(label.shape, 255))
    out = _evaluate(METRICS.build(dict(type=metric_type)), [_sample(prob, label), all_ignored])
    assert out == pytest.approx(expected)  # an image without valid pixels is left out


# --- BERMetric ---------------------------------------------------------------------------------


def test_ber_by_hand_and_threshold():
    label = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])  # 6 shadow, 4 non-shadow pixels
    t = 125 / 255
    prob = np.array([[0.9, 126 / 255, t, 0.0, 0.9], [1.0, 0.6, 0.1, 0.2, t]])
    # > 125/255 (the shadow configs' head threshold): shadow TP 4 (0.9, 126/255, 1.0, 0.6), FN 2 (t itself,
    # 0.1); non-shadow FP 1 (0.9), TN 3
    out = _evaluate(BERMetric(), [_sample(prob, label, threshold=t)])
    assert _evaluate(BERMetric(threshold=t), [_sample(prob, label)]) == pytest.approx(out)
    shadow_err, non_shadow_err = 2 / 6, 1 / 4
    assert out['shadow_err'] == pytest.approx(100 * shadow_err)
    assert out['non_shadow_err'] == pytest.approx(100 * non_shadow_err)
    assert out['BER'] == pytest.approx(100 * (shadow_err + non_shadow_err) / 2)
    assert out['BER_dataset'] == pytest.approx(out['BER'])


def test_ber_image_without_shadow_and_per_image_mean():
    a = _sample(np.array([[0.9, 0.9, 0.0, 0.9]]), np.array([[1, 0, 0, 0]]))  # shadow err 0, non-shadow 2/3
    b = _sample(
        np.array([[0.9, 0.0], [0.0, 0.0]]), np.zeros((2, 2), dtype=np.int64)
    )  # no shadow: non-shadow 1/4
    out = _evaluate(BERMetric(), [a, b])
    assert out['BER'] == pytest.approx(100 * ((0 + 2 / 3) / 2 + 1 / 4) / 2)  # b scores its defined rate
    assert out['shadow_err'] == pytest.approx(0.0)  # only a has shadow pixels
    assert out['non_shadow_err'] == pytest.approx(100 * (2 / 3 + 1 / 4) / 2)
    # pooled: TP 1 / 1 shadow pixel, TN 1 + 3 / 3 + 4 non-shadow pixels
    assert out['BER_dataset'] == pytest.approx(100 * (1 - (1 + 4 / 7) / 2))
    only_b = _evaluate(BERMetric(), [b])
    assert only_b['BER'] == pytest.approx(100 / 4) and np.isnan(only_b['shadow_err'])


# --- SODMetric ---------------------------------------------------------------------------------


def test_sod_mae_by_hand_and_per_image_mean():
    a = (
        np.array([[0.2, 0.6], [1.0, 0.2]]),
        np.array([[0, 1], [1, 0]]),
    )  # min-max: [[0, .5], [1, 0]]: MAE 1/8
    label = np.zeros((4, 4), dtype=np.int64)
    label[:, :2] = 1
    prob = label.astype(np.float64)
    prob[3, 3] = 1.0  # one false pixel of 16: MAE 1/16
    out = _evaluate(SODMetric(), [_sample(*a), _sample(prob, label)])
    assert out['MAE'] == pytest.approx((1 / 8 + 1 / 16) / 2)  # per image; pooled would be 1.5 / 20
    alone = [_evaluate(SODMetric(), [_sample(*a)]), _evaluate(SODMetric(), [_sample(prob, label)])]
    for key in ('Sm', 'wFm', 'adpEm', 'adpFm'):
        assert out[key] == pytest.approx((alone[0][key] + alone[1][key]) / 2), key


def test_sod_perfect_prediction():
    label = np.zeros((6, 9), dtype=np.int64)
    label[1:4, 2:6] = 1  # 12 of N = 54 pixels
    n = label.size
    out = _evaluate(SODMetric(), [_sample(label.astype(np.float64), label)])
    assert out['Sm'] == pytest.approx(1.0)
    assert out['wFm'] == pytest.approx(1.0)
    assert out['MAE'] == 0
    # E-measure sums the enhanced alignment (1 per pixel when perfect) over N - 1: N / (N - 1) at
    # the 255 thresholds >= 1/255; at threshold 0 every pixel is foreground: alignment 0, 1/4 each.
    assert out['maxEm'] == pytest.approx(n / (n - 1))
    assert out['adpEm'] == pytest.approx(n / (n - 1))
    assert out['meanEm'] == pytest.approx((255 * n / (n - 1) + n / 4 / (n - 1)) / 256)
    assert out['maxFm'] == pytest.approx(1.0) and out['adpFm'] == pytest.approx(1.0)


def test_sod_uniform_ground_truth():
    prob = np.array([[0.0, 0.5, 1.0], [0.25, 0.0, 0.0]])  # already min-max normalised; float maps
    n = prob.size
    background = _evaluate(
        SODMetric(protocol='conv_lora'), [_sample(prob, np.zeros(prob.shape, dtype=np.int64))]
    )
    assert background['Sm'] == pytest.approx(1 - prob.mean())
    assert background['wFm'] == 0  # pysodmetrics' convention without foreground
    # all-background GT: E-measure = predicted-background pixels / (N - 1); the k non-zero pixels
    # are foreground at the thresholds <= their value, all pixels at threshold 0
    thresholds = np.arange(255, -1, -1) / 255
    em_curve = [np.count_nonzero(~(np.floor(prob * 255) / 255 >= t)) / (n - 1) for t in thresholds]
    assert background['meanEm'] == pytest.approx(np.mean(em_curve))
    assert background['maxEm'] == pytest.approx(1.0)  # at 255/255 only the 1.0 pixel: (N - 1) / (N - 1)
    foreground = _evaluate(
        SODMetric(protocol='conv_lora'), [_sample(prob, np.ones(prob.shape, dtype=np.int64))]
    )
    assert foreground['Sm'] == pytest.approx(prob.mean())


@pytest.mark.parametrize('seed', range(4))
def test_sod_matches_independent_smeasure_and_mae(seed):
    rng = np.random.default_rng(seed)
    prob, gt = _blob(rng, (int(rng.integers(15, 40)), int(rng.integers(15, 40))))
    prob = 0.2 + 0.6 * prob  # min-max normalisation matters
    out = _evaluate(SODMetric(protocol='conv_lora'), [_sample(prob, gt)])
    assert out['Sm'] == pytest.approx(_ref_smeasure(prob, gt), rel=1e-9)
    assert out['MAE'] == pytest.approx(_ref_mae(prob, gt), rel=1e-9)
    assert _evaluate(SODMetric(protocol='conv_lora', alpha=0.2), [_sample(prob, gt)])['Sm'] == pytest.approx(
        _ref_smeasure(prob, gt, alpha=0.2), rel=1e-9
    )


def _sod_keys(sm, wfm, em, mae, fm) -> dict[str, float]:
    """The metric's keys from pysodmetrics objects that saw every image."""
    em_res, fm_res = em.get_results()['em'], fm.get_results()['fm']
    return {
        'Sm': sm.get_results()['sm'],
        'wFm': wfm.get_results()['wfm'],
        'MAE': mae.get_results()['mae'],
        'meanEm': em_res['curve'].mean(),
        'maxEm': em_res['curve'].max(),
        'adpEm': em_res['adp'],
        'meanFm': fm_res['curve'].mean(),
        'maxFm': fm_res['curve'].max(),
        'adpFm': fm_res['adp'],
    }


def _sod_samples(seed: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(0.1 + 0.7 * p, g) for p, g in (_blob(rng, (21, 34)), _blob(rng, (30, 18)), _blob(rng, (25, 25)))]


def test_sod_field_protocol_matches_the_toolboxes(tmp_path):
    """As the camouflage / polyp / saliency toolboxes evaluate: 8-bit PNGs read back, default objects."""
    samples = _sod_samples()
    objects = (
        py_sod_metrics.Smeasure(),
        py_sod_metrics.WeightedFmeasure(),  # beta^2 = 1
        py_sod_metrics.Emeasure(),
        py_sod_metrics.MAE(),
        py_sod_metrics.Fmeasure(),  # beta^2 = 0.3
    )
    for i, (prob, gt) in enumerate(samples):
        Image.fromarray(np.rint(prob * 255).astype(np.uint8)).save(tmp_path / f'pred{i}.png')
        Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / f'gt{i}.png')
        pred = cv2.imread(str(tmp_path / f'pred{i}.png'), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(tmp_path / f'gt{i}.png'), cv2.IMREAD_GRAYSCALE)
        for metric in objects:
            metric.step(pred=pred, gt=mask)
    expected = _sod_keys(*objects)
    out = _evaluate(SODMetric(), [_sample(p, g) for p, g in samples])
    assert out == pytest.approx(expected, rel=1e-12, abs=1e-12)
    conv_lora = _evaluate(SODMetric(protocol='conv_lora'), [_sample(p, g) for p, g in samples])
    for key in ('wFm', 'meanFm', 'meanEm'):  # the betas, and the 8-bit rounding, move them
        assert conv_lora[key] != pytest.approx(out[key], rel=1e-6), key


def test_sod_conv_lora_protocol_matches_the_reference_recipe():
    """AutoGluon's semantic_seg_metrics.py: float prob * 255 and label * 255, WeightedFmeasure(beta=0.3),
    Fmeasure(beta=1.0), pysodmetrics' own normalisation."""
    samples = _sod_samples()
    objects = (
        py_sod_metrics.Smeasure(),
        py_sod_metrics.WeightedFmeasure(beta=0.3),
        py_sod_metrics.Emeasure(),
        py_sod_metrics.MAE(),
        py_sod_metrics.Fmeasure(beta=1.0),
    )
    for prob, gt in samples:
        for metric in objects:
            metric.step(prob * 255, gt.astype(np.uint8) * 255)
    out = _evaluate(SODMetric(protocol='conv_lora'), [_sample(p, g) for p, g in samples])
    assert out == pytest.approx(_sod_keys(*objects), rel=1e-9, abs=1e-12)


def test_sod_ignored_border_is_cropped_and_inner_ignore_raises():
    rng = np.random.default_rng(3)
    prob, gt = _blob(rng, (14, 19))
    expected = _evaluate(SODMetric(), [_sample(prob, gt)])
    padded_prob = np.pad(prob, ((0, 5), (0, 3)), constant_values=1.0)  # would change the min-max
    padded_label = np.pad(gt.astype(np.int64), ((0, 5), (0, 3)), constant_values=255)
    assert _evaluate(SODMetric(), [_sample(padded_prob, padded_label)]) == pytest.approx(expected)
    padded_label[4, 4] = 255
    with pytest.raises(ValueError, match=r'1 ignore_index=255 pixels lie inside the valid region \(14, 19\)'):
        SODMetric().process(None, [_sample(padded_prob, padded_label)])
    all_ignored = _sample(prob, np.full(gt.shape, 255))
    assert _evaluate(SODMetric(), [_sample(prob, gt), all_ignored]) == pytest.approx(expected)


def test_dataset_iou_matches_mmseg_iou_metric_on_the_foreground_class():
    from mmseg.evaluation import IoUMetric

    rng = np.random.default_rng(4)
    samples = [_sample(*_blob(rng, shape)) for shape in ((13, 22), (30, 17), (9, 9))]
    for s in samples:  # what a 1-channel head's postprocess_result stores next to the probabilities
        s.pred_sem_seg = PixelData(data=(s.seg_logits.data > 0.5).long())
    areas = [
        IoUMetric.intersect_and_union(s.pred_sem_seg.data[0], s.gt_sem_seg.data[0], 2, 255) for s in samples
    ]
    per_class = IoUMetric.total_area_to_metrics(*[sum(a) for a in zip(*areas)], ['mIoU', 'mDice'])
    out = _evaluate(BinaryIoUMetric(), samples)
    assert out['IoU_dataset'] == pytest.approx(100 * per_class['IoU'][1], rel=1e-6)
    assert out['Dice_dataset'] == pytest.approx(100 * per_class['Dice'][1], rel=1e-6)


# --- the model's decision and tools/test.py --out ---------------------------------------------------


@pytest.mark.parametrize('metric_type', ['BinaryIoUMetric', 'BERMetric'])
def test_the_model_decision_is_scored_and_an_explicit_threshold_warns(metric_type):
    prob = np.array([[0.9, 0.4, 0.35, 0.1]])
    label = np.array([[1, 1, 0, 0]])
    # a head with threshold 0.3: pixels 0.4 and 0.35 are foreground (TP 2, FP 1)
    head_03 = _sample(prob, label, threshold=0.3)
    by_decision = _evaluate(METRICS.build(dict(type=metric_type)), [head_03])
    by_prob = _evaluate(METRICS.build(dict(type=metric_type)), [_sample(prob, label, threshold=0.3 + 1e-9)])
    assert by_decision == pytest.approx(by_prob)
    at_half = _evaluate(METRICS.build(dict(type=metric_type)), [_sample(prob, label, threshold=0.5)])
    assert by_decision != pytest.approx(at_half)
    logger = MMLogger.get_current_instance()
    with patch.object(logger, 'warning') as warning:
        explicit = _evaluate(METRICS.build(dict(type=metric_type, threshold=0.5)), [head_03])
    assert explicit == pytest.approx(at_half)
    [(message,), _] = warning.call_args
    assert "differs from the model's decision (decode_head.threshold)" in message


@pytest.mark.parametrize('metric_type', ['BinaryIoUMetric', 'BERMetric', 'SODMetric'])
def test_output_dir_writes_label_maps_and_probabilities(tmp_path, metric_type):
    rng = np.random.default_rng(3)
    samples = []
    for name in ('a', 'b'):
        sample = _sample(*_blob(rng, (9, 13)))
        sample.set_metainfo(dict(img_path=f'/data/images/val/{name}.jpg'))
        samples.append(sample)
    metric = METRICS.build(dict(type=metric_type, output_dir=str(tmp_path), keep_results=True))
    assert _evaluate(metric, samples)
    for name, sample in zip(('a', 'b'), samples):
        labels = np.asarray(Image.open(tmp_path / f'{name}.png'))
        np.testing.assert_array_equal(labels, sample.pred_sem_seg.data[0].numpy())
        probs = np.asarray(Image.open(tmp_path / 'probabilities' / f'{name}.png'))
        np.testing.assert_array_equal(probs, np.rint(sample.seg_logits.data[0].numpy() * 255))
    only = METRICS.build(dict(type=metric_type, output_dir=str(tmp_path / 'only'), format_only=True))
    unlabelled = _sample(*_blob(rng, (9, 13)))
    unlabelled.set_metainfo(dict(img_path='c.png'))
    del unlabelled.gt_sem_seg
    assert _evaluate(only, [unlabelled]) == {}
    assert (tmp_path / 'only/c.png').is_file()
