import itertools

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_sam.models.decode_heads import SAMMaskDecoderHead
from mmseg_sam.models.decode_heads.sam_mask_decoder_head import semantic_inference
from mmseg_sam.models.losses import MaskClassificationLoss
from mmseg_sam.models.losses.mask_classification_loss import hungarian_match, semantic_targets


def _halves(size=16):
    """Label map: class 1 on top, class 2 at the bottom."""
    label = torch.ones(size, size, dtype=torch.long)
    label[size // 2 :] = 2
    return label


def test_semantic_targets():
    label = _halves()
    label[0, 0] = 255
    classes, masks, valid = semantic_targets(label, num_classes=3, ignore_index=255)
    assert classes.tolist() == [1, 2]
    assert torch.equal(masks[0].bool(), label == 1) and torch.equal(masks[1].bool(), label == 2)
    assert valid.sum() == 255
    with pytest.raises(ValueError, match=r'labels \[3\] are outside \[0, 3\)'):
        semantic_targets(torch.full((4, 4), 3), num_classes=3, ignore_index=255)


@pytest.mark.parametrize('order', list(itertools.permutations(range(3))))
def test_matching_picks_the_optimal_assignment(order):
    label = _halves()
    classes, masks, valid = semantic_targets(label, 3, 255)
    top, bottom = (label == 1).float() * 20 - 10, (label == 2).float() * 20 - 10
    # query 0 -> bottom / class 2, query 1 -> junk / no object, query 2 -> top / class 1
    queries = [
        (bottom, [0.0, 0.0, 5.0, 0.0]),
        (torch.zeros(16, 16), [0.0, 0.0, 0.0, 5.0]),
        (top, [0.0, 5.0, 0.0, 0.0]),
    ]
    queries = [queries[i] for i in order]
    mask_logits = torch.stack([q[0] for q in queries])
    cls_logits = torch.tensor([q[1] for q in queries])
    torch.manual_seed(0)
    rows, cols = hungarian_match(cls_logits, mask_logits, classes, masks, valid, num_points=2048)
    assignment = {order[r]: classes[c].item() for r, c in zip(rows.tolist(), cols.tolist())}
    assert assignment == {0: 2, 2: 1}


def test_class_loss_by_hand_and_mask_terms():
    label = torch.ones(1, 16, 16, dtype=torch.long)  # one class present: 1
    good = torch.full((16, 16), 20.0)
    cls_logits = torch.tensor([[[0.5, 2.0, -1.0, 0.3], [0.1, -0.4, 0.2, 1.5]]])  # Q=2, C=3 + no-object
    loss = MaskClassificationLoss(num_classes=3, num_points=1024)
    torch.manual_seed(0)
    out = loss(cls_logits, torch.stack([good, -good])[None], label)
    # query 0 matches class 1 (better class and mask); query 1 -> no object, weight 0.1
    logp = cls_logits[0].log_softmax(-1)
    expected = -(1.0 * logp[0, 1] + 0.1 * logp[1, 3]) / 1.1
    assert out['loss_cls'].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out['loss_mask'].item() < 1e-6 and out['loss_dice'].item() < 1e-3
    torch.manual_seed(0)
    wrong = loss(cls_logits, torch.stack([-good, -good])[None], label)
    assert wrong['loss_mask'].item() == pytest.approx(5 * 20.0, rel=1e-3)  # mask_weight * BCE of a -20 logit
    assert wrong['loss_dice'].item() > 4.9


def test_loss_weights_are_applied():
    torch.manual_seed(0)
    args = (torch.randn(2, 4, 4), torch.randn(2, 4, 16, 16), torch.randint(0, 3, (2, 16, 16)))
    torch.manual_seed(1)
    base = MaskClassificationLoss(3, class_weight=1, mask_weight=1, dice_weight=1, num_points=256)(*args)
    torch.manual_seed(1)
    scaled = MaskClassificationLoss(3, class_weight=2, mask_weight=3, dice_weight=4, num_points=256)(*args)
    for name, factor in (('loss_cls', 2), ('loss_mask', 3), ('loss_dice', 4)):
        assert scaled[name].item() == pytest.approx(factor * base[name].item(), rel=1e-6)


def test_ignored_pixels_contribute_nothing():
    label = _halves()[None].clone()
    label[:, 4:12, 4:12] = 255
    torch.manual_seed(0)
    cls_logits, mask_logits = torch.randn(1, 3, 4), torch.randn(1, 3, 16, 16)
    changed = mask_logits.clone()
    changed[:, :, 4:12, 4:12] = torch.randn(1, 3, 8, 8) * 50
    loss = MaskClassificationLoss(3, num_points=512)
    torch.manual_seed(1)
    before = loss(cls_logits, mask_logits, label)
    torch.manual_seed(1)
    after = loss(cls_logits, changed, label)
    for name in before:
        assert before[name].item() == pytest.approx(after[name].item(), rel=1e-6), name
    torch.manual_seed(1)
    moved = loss(cls_logits, mask_logits + 0.5, label)
    assert moved['loss_mask'].item() != pytest.approx(before['loss_mask'].item(), rel=1e-6)


def test_absent_classes_and_fully_ignored_images():
    loss = MaskClassificationLoss(5, num_points=64)
    label = torch.full((2, 8, 8), 255)
    label[0, :4] = 3  # image 0 has only class 3; image 1 is fully ignored
    mask_logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = loss(torch.randn(2, 4, 6, requires_grad=True), mask_logits, label)
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert mask_logits.grad[1].abs().sum() == 0 and mask_logits.grad[0].abs().sum() > 0


def test_semantic_inference_by_hand():
    cls_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]]])  # Q=2, C=2 + no-object
    mask_logits = torch.tensor([[[[0.0, 3.0]], [[-2.0, 1.0]]]])  # (1, 2, 1, 2)
    out = semantic_inference(cls_logits, mask_logits)
    p, s = cls_logits[0].softmax(-1), mask_logits[0].sigmoid()
    for c in range(2):
        for x in range(2):
            expected = p[0, c] * s[0, 0, x] + p[1, c] * s[1, 0, x]
            assert out[0, c, 0, x].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.shape == (1, 2, 1, 2)


def _maskcls_head(tiny_head, checkpoint=None, num_classes=3, num_queries=5):
    return SAMMaskDecoderHead(
        num_classes=num_classes,
        mode='mask_classification',
        num_queries=num_queries,
        loss_decode=dict(type='MaskClassificationLoss', num_points=256),  # num_classes from the head
        checkpoint=checkpoint and str(checkpoint),
        **tiny_head,
    )


def test_head_mask_classification_mode(reference_sam, sam_checkpoint, tiny_head):
    head = _maskcls_head(tiny_head, sam_checkpoint).eval()
    sam_decoder = reference_sam.mask_decoder
    assert len(head.mask_decoder.output_hypernetworks_mlps) == 1  # shared
    assert torch.equal(head.mask_decoder.mask_tokens.weight, sam_decoder.mask_tokens.weight[:1].expand(5, -1))
    for ours, theirs in zip(
        head.mask_decoder.output_hypernetworks_mlps[0].parameters(),
        sam_decoder.output_hypernetworks_mlps[0].parameters(),
    ):
        assert torch.equal(ours, theirs)
    cls_logits, masks = head([torch.randn(2, 32, 4, 5)])
    assert cls_logits.shape == (2, 5, 4) and masks.shape == (2, 5, 16, 20)
    metas = [dict(img_shape=(64, 80), pad_shape=(64, 80))]
    scores = head.predict([torch.randn(1, 32, 4, 5)], metas, test_cfg={})
    assert scores.shape == (1, 3, 64, 80) and (scores >= 0).all()


def test_head_trains_every_trainable_parameter(tiny_head):
    head = _maskcls_head(tiny_head).train()
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 64, 64)))
        samples.append(sample)
    losses = head.loss([torch.randn(2, 32, 4, 4)], samples, train_cfg={})
    assert set(losses) == {'loss_cls', 'loss_mask', 'loss_dice'}
    sum(losses.values()).backward()
    for name, p in head.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_head_mask_classification_errors(tiny_head):
    with pytest.raises(ValueError, match='out_channels must be num_classes=3, got 1'):
        SAMMaskDecoderHead(
            num_classes=3,
            out_channels=1,
            mode='mask_classification',
            **tiny_head,
            loss_decode=dict(type='MaskClassificationLoss', num_classes=3),
        )
    with pytest.raises(
        ValueError, match='MaskClassificationLoss num_classes=4 differs from the head num_classes=3'
    ):
        SAMMaskDecoderHead(
            num_classes=3,
            mode='mask_classification',
            **tiny_head,
            loss_decode=dict(type='MaskClassificationLoss', num_classes=4),
        )
    with pytest.raises(ValueError, match='num_queries must be a positive int, got 0'):
        _maskcls_head(tiny_head, num_queries=0)
    loss = MaskClassificationLoss(4)
    with pytest.raises(ValueError, match='cls_logits have 4 classes, expected num_classes \\+ 1 = 5'):
        loss(torch.randn(1, 2, 4), torch.randn(1, 2, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))


def test_reduce_zero_label_through_mmseg_loading(tmp_path):
    """Labels loaded with reduce_zero_label (0 -> 255, c -> c - 1): old class 0 is ignored."""
    import numpy as np
    from mmcv import imwrite
    from mmseg.datasets.transforms import LoadAnnotations

    raw = np.zeros((16, 16), dtype=np.uint8)  # 0 = "other", reduced away
    raw[:8, :8], raw[8:, 8:] = 1, 3  # classes 1 and 3 -> 0 and 2
    imwrite(raw, str(tmp_path / 'label.png'))
    results = LoadAnnotations(reduce_zero_label=True)(
        dict(seg_map_path=str(tmp_path / 'label.png'), reduce_zero_label=True, seg_fields=[])
    )
    label = torch.from_numpy(results['gt_seg_map']).long()
    assert set(label.unique().tolist()) == {0, 2, 255}
    classes, masks, valid = semantic_targets(label, num_classes=3, ignore_index=255)
    assert classes.tolist() == [0, 2] and valid.sum() == 128
    torch.manual_seed(0)
    cls_logits, mask_logits = torch.randn(1, 3, 4), torch.randn(1, 3, 16, 16)
    changed = mask_logits.clone()
    changed[..., :8, 8:] += 30  # only where the reduced class 0 was (now ignored)
    changed[..., 8:, :8] -= 30
    loss = MaskClassificationLoss(3, num_points=256)
    torch.manual_seed(1)
    before = loss(cls_logits, mask_logits, label[None])
    torch.manual_seed(1)
    after = loss(cls_logits, changed, label[None])
    for name in before:
        assert before[name].item() == pytest.approx(after[name].item(), rel=1e-6), name
