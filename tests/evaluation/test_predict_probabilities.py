"""The binary metrics receive foreground probabilities at the original image size from the real predict path."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.transforms import Compose
from mmengine.evaluator import Evaluator

from mmseg_sam.evaluation import BinaryIoUMetric, SODMetric
from mmseg_sam.models.segmentors import SAMEncoderDecoder
from tests.conftest import TINY_ARCH, TINY_HEAD, TINY_IMG, perturb_

ORI = (40, 72)  # non-square original image, resized to the 64x64 model input


def _segmentor(head: dict, pad: bool) -> SAMEncoderDecoder:
    preprocessor = dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        size=(TINY_IMG, TINY_IMG),
        test_cfg=dict(size=(TINY_IMG, TINY_IMG)) if pad else None,
    )
    torch.manual_seed(0)
    model = SAMEncoderDecoder(
        data_preprocessor=preprocessor,
        backbone=dict(type='SAMViT', arch=TINY_ARCH, img_size=TINY_IMG),
        decode_head=dict(type='SAMMaskDecoderHead', **TINY_HEAD, **head),
    )
    return perturb_(model, std=0.2).eval()  # default inits give a nearly constant map


def _batch(tmp_path, pad: bool) -> tuple[dict, np.ndarray]:
    """One image through a real test pipeline: Resize (stretched, or keep-ratio + padding), then labels."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*ORI, 3), dtype=np.uint8)
    label = np.zeros(ORI, dtype=np.uint8)
    label[8:30, 20:60] = 1
    cv2.imwrite(str(tmp_path / 'img.png'), img)
    cv2.imwrite(str(tmp_path / 'label.png'), label)
    pipeline = Compose(
        [
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(TINY_IMG, TINY_IMG), keep_ratio=pad),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs'),
        ]
    )
    packed = pipeline(
        dict(
            img_path=str(tmp_path / 'img.png'),
            seg_map_path=str(tmp_path / 'label.png'),
            seg_fields=[],
            reduce_zero_label=False,
        )
    )
    return dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]), label


def _expected_scores(model: SAMEncoderDecoder, data: dict) -> torch.Tensor:
    """What the stored seg_logits must be, derived here from the head's raw output."""
    inputs = model.data_preprocessor(data, False)['inputs']  # (1, 3, 64, 64)
    img_h, img_w = data['data_samples'][0].img_shape  # without the padding
    out = model.decode_head(model.extract_feat(inputs))

    def to_input(x):  # head output -> model input size
        return F.interpolate(x, size=inputs.shape[-2:], mode='bilinear', align_corners=False)

    if isinstance(out, tuple):  # mask classification: class-weighted mask probabilities
        cls_logits, mask_logits = out
        scores = torch.einsum(
            'bqc,bqhw->bchw', cls_logits.softmax(-1)[..., :-1], to_input(mask_logits).sigmoid()
        )
    else:
        scores = to_input(out)
    scores = F.interpolate(scores[..., :img_h, :img_w], size=ORI, mode='bilinear', align_corners=False)[0]
    return scores.sigmoid() if scores.shape[0] == 1 else scores


def _min_max(p):
    return (p - p.min()) / (p.max() - p.min())


@pytest.mark.parametrize('pad', [False, True], ids=['resized', 'keep-ratio-padded'])
@pytest.mark.parametrize(
    'head',
    [
        dict(
            num_classes=2,
            out_channels=1,
            threshold=0.5,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
        ),
        dict(
            num_classes=2,
            mode='mask_classification',
            num_queries=4,
            loss_decode=dict(type='MaskClassificationLoss'),
        ),
    ],
    ids=['per-class-token-binary', 'mask-classification-2-classes'],
)
def test_metrics_get_probabilities_at_the_original_size(tmp_path, head, pad):
    model = _segmentor(head, pad)
    data, label = _batch(tmp_path, pad)
    assert data['data_samples'][0].img_shape == ((36, 64) if pad else (TINY_IMG, TINY_IMG))
    with torch.no_grad():
        [result] = model.test_step(data)
        expected = _expected_scores(model, _batch(tmp_path, pad)[0])
    assert result.seg_logits.data.shape == (expected.shape[0], *ORI)
    assert torch.allclose(result.seg_logits.data, expected, atol=1e-5)
    prob = (expected[0] if expected.shape[0] == 1 else expected.double().softmax(0)[1]).double().numpy()
    assert prob.std() > 1e-3  # a non-trivial map, so the checks below can tell maps apart

    threshold = float(np.median(prob))  # splits the map whatever the random weights
    evaluator = Evaluator(
        [BinaryIoUMetric(threshold=threshold), SODMetric(protocol='conv_lora')]
    )  # float maps
    evaluator.process([result])
    out = evaluator.evaluate(1)
    fg = label == 1
    pred = prob > threshold
    assert 0 < pred.mean() < 1
    assert out['IoU'] == pytest.approx(100 * (pred & fg).sum() / (pred | fg).sum(), rel=1e-6)
    mae = np.abs(_min_max(prob) - fg).mean()
    assert out['MAE'] == pytest.approx(mae, rel=1e-5)  # from the probabilities ...
    assert out['MAE'] != pytest.approx((pred != fg).mean(), rel=1e-3)  # ... not from the argmax


def test_multiclass_semantic_scores_reach_seg_logits_and_binary_metrics_refuse_them(tmp_path):
    head = dict(
        num_classes=3,
        mode='mask_classification',
        num_queries=4,
        loss_decode=dict(type='MaskClassificationLoss'),
    )
    model = _segmentor(head, pad=False)
    data, _ = _batch(tmp_path, pad=False)
    with torch.no_grad():
        [result] = model.test_step(data)
        expected = _expected_scores(model, _batch(tmp_path, pad=False)[0])
    assert result.seg_logits.data.shape == (3, *ORI)
    assert torch.allclose(result.seg_logits.data, expected, atol=1e-5)
    assert torch.equal(result.pred_sem_seg.data[0], result.seg_logits.data.argmax(0))
    with pytest.raises(ValueError, match=r'seg_logits of shape \(3, 40, 72\): this metric is binary'):
        Evaluator([BinaryIoUMetric()]).process([result])
