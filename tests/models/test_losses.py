import math

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.models.losses import BalancedBCELoss, StructureLoss

IGNORE = 255
LOSSES = [
    pytest.param(lambda: StructureLoss(), id='structure'),
    pytest.param(lambda: StructureLoss(weighted_bce=False), id='structure_unweighted_bce'),
    pytest.param(lambda: BalancedBCELoss(), id='balanced_bce'),
]


def _inputs(shape=(2, 24, 40), seed=0, ignore=True):
    """Random logits and a target with a foreground rectangle per image (plus ignored pixels)."""
    gen = torch.Generator().manual_seed(seed)
    b, h, w = shape
    pred = torch.randn(b, 1, h, w, generator=gen) * 2
    target = torch.zeros(b, h, w, dtype=torch.long)
    target[0, h // 4 : h // 2, w // 3 : w - 2] = 1
    if b > 1:
        target[1, 1 : h - 3, 2:6] = 1
        target[1, h - 2, :] = 1
    if ignore:
        target[0, :2, :5] = IGNORE
        target[0, h // 2 - 1, w // 2 : w // 2 + 4] = IGNORE  # on the foreground boundary
        target[-1, :, -1] = IGNORE
    return pred, target


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _box_average_31(y):
    """31x31 average with zero padding 15, always divided by 31*31 (count_include_pad=True)."""
    h, w = y.shape
    padded = np.zeros((h + 30, w + 30))
    padded[15 : 15 + h, 15 : 15 + w] = y
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            total = 0.0
            for di in range(31):
                total += padded[i + di, j : j + 31].sum()
            out[i, j] = total / (31 * 31)
    return out


def _structure_reference(pred, target, weighted_bce=True):
    """PraNet's structure loss in float64 numpy, ignored pixels as background with weight 0."""
    p = pred.detach()[:, 0].double().numpy()
    t = target.numpy()
    bce_all, valid_all, terms = [], [], []
    for b in range(p.shape[0]):
        valid = (t[b] != IGNORE).astype(np.float64)
        y = (t[b] == 1).astype(np.float64)
        w = (1 + 5 * np.abs(_box_average_31(y) - y)) * valid
        s = _sigmoid(p[b])
        bce = -(y * np.log(s) + (1 - y) * np.log(1 - s))
        bce_all.append(bce * valid)
        valid_all.append(valid)
        wbce = (w * bce).sum() / w.sum() if w.sum() > 0 else 0.0
        inter = (w * s * y).sum()
        union = (w * (s + y)).sum()
        wiou = 1 - (inter + 1) / (union - inter + 1)
        terms.append((wbce, wiou))
    if weighted_bce:
        return float(np.mean([wbce + wiou for wbce, wiou in terms]))
    n_valid = sum(v.sum() for v in valid_all)
    plain_bce = sum(x.sum() for x in bce_all) / n_valid if n_valid else 0.0
    return float(np.mean([plain_bce + wiou for _, wiou in terms]))


def _balanced_reference(pred, target):
    p = pred.detach()[:, 0].double().numpy()
    t = target.numpy()
    pos = neg = 0
    total = 0.0
    for y_val in t.ravel():
        if y_val == IGNORE:
            continue
        pos += y_val == 1
        neg += y_val == 0
    if pos == 0:
        return 0.0
    pos_weight = neg / pos
    for y_val, logit in zip(t.ravel(), p.ravel()):
        if y_val == IGNORE:
            continue
        y = float(y_val)
        s = _sigmoid(logit)
        total += -(pos_weight * y * math.log(s) + (1 - y) * math.log(1 - s))
    return pos / (pos + neg) * total / (pos + neg)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize('ignore', [False, True])
@pytest.mark.parametrize('weighted_bce', [True, False])
@pytest.mark.parametrize('shape', [(2, 8, 8), (2, 24, 40)])
def test_structure_loss_matches_reference(shape, weighted_bce, ignore):
    pred, target = _inputs(shape, ignore=ignore)
    loss = StructureLoss(weighted_bce=weighted_bce)(pred, target)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_structure_reference(pred, target, weighted_bce), rel=1e-5)


@pytest.mark.parametrize('ignore', [False, True])
@pytest.mark.parametrize('shape', [(2, 8, 8), (3, 24, 40)])
def test_balanced_bce_matches_reference(shape, ignore):
    pred, target = _inputs(shape, ignore=ignore)
    loss = BalancedBCELoss()(pred, target)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_balanced_reference(pred, target), rel=1e-5)


@pytest.mark.parametrize('make_loss', LOSSES)
def test_loss_weight_scales(make_loss):
    pred, target = _inputs()
    base = make_loss()(pred, target).item()
    loss = make_loss()
    loss.loss_weight = 2.5
    assert base > 0
    assert loss(pred, target).item() == pytest.approx(2.5 * base, rel=1e-6)


def test_loss_names():
    assert StructureLoss().loss_name == 'loss_structure'
    assert BalancedBCELoss().loss_name == 'loss_balanced_bce'
    assert StructureLoss(loss_name='loss_aux').loss_name == 'loss_aux'
    assert BalancedBCELoss(loss_name='loss_shadow').loss_name == 'loss_shadow'


def test_build_from_registry():
    pred, target = _inputs()
    structure = MODELS.build(dict(type='StructureLoss', loss_weight=2.0, weighted_bce=False))
    assert isinstance(structure, StructureLoss) and structure.loss_weight == 2.0
    assert structure(pred, target).item() == pytest.approx(
        2.0 * _structure_reference(pred, target, weighted_bce=False), rel=1e-5
    )
    balanced = MODELS.build(dict(type='BalancedBCELoss', loss_weight=0.5, loss_name='loss_shadow'))
    assert isinstance(balanced, BalancedBCELoss) and balanced.loss_name == 'loss_shadow'
    assert balanced(pred, target).item() == pytest.approx(0.5 * _balanced_reference(pred, target), rel=1e-5)


def test_decode_head_loss_by_feat(tiny_head):
    """mmseg's BaseDecodeHead.loss_by_feat calls both losses and names the items after them."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from mmseg_sam.models.decode_heads import SAMMaskDecoderHead

    head = SAMMaskDecoderHead(
        **tiny_head,
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        loss_decode=[dict(type='StructureLoss'), dict(type='BalancedBCELoss', loss_weight=3.0)],
    )
    pred, target = _inputs()
    samples = [SegDataSample(gt_sem_seg=PixelData(data=t[None])) for t in target]
    losses = head.loss_by_feat(pred, samples)
    assert losses['loss_structure'].item() == pytest.approx(_structure_reference(pred, target), rel=1e-5)
    assert losses['loss_balanced_bce'].item() == pytest.approx(
        3.0 * _balanced_reference(pred, target), rel=1e-5
    )


# --------------------------------------------------------------------------- ignore / gradients


@pytest.mark.parametrize('make_loss', LOSSES)
def test_ignored_pixels_contribute_nothing(make_loss):
    pred, target = _inputs()
    ignored = (target == IGNORE).unsqueeze(1)
    assert ignored.any()
    changed = pred.clone()
    changed[ignored] = torch.randn(int(ignored.sum())) * 50
    loss = make_loss()
    assert loss(changed, target).item() == loss(pred, target).item()


@pytest.mark.parametrize('make_loss', LOSSES)
def test_perfect_prediction_beats_inverse(make_loss):
    _, target = _inputs()
    perfect = torch.where(target == 1, 20.0, -20.0).unsqueeze(1)
    loss = make_loss()
    good, bad = loss(perfect, target).item(), loss(-perfect, target).item()
    assert good < 1e-3 and bad > 1.0
    assert good < bad


@pytest.mark.parametrize('make_loss', LOSSES)
def test_gradients_zero_at_ignored_pixels(make_loss):
    pred, target = _inputs()
    pred.requires_grad_(True)
    make_loss()(pred, target).backward()
    grad = pred.grad[:, 0]
    valid = target != IGNORE
    assert torch.isfinite(grad).all()
    assert (grad[valid] != 0).all()
    assert (grad[~valid] == 0).all()


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize('make_loss', LOSSES)
@pytest.mark.parametrize('dtype, rel', [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
def test_low_precision_input_computed_in_float32(make_loss, dtype, rel):
    pred, target = _inputs()
    loss = make_loss()
    reference = loss(pred, target).item()
    low = pred.to(dtype).requires_grad_(True)
    value = loss(low, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(reference, rel=rel)
    # Exactly the float32 computation on the rounded logits.
    assert value.item() == pytest.approx(loss(low.detach().float(), target).item(), rel=1e-6)
    value.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize('make_loss', LOSSES)
def test_rejects_multi_channel_pred(make_loss):
    pred, target = _inputs()
    with pytest.raises(ValueError, match=r'\(2, 2, 24, 40\).*out_channels=1'):
        make_loss()(pred.repeat(1, 2, 1, 1), target)


@pytest.mark.parametrize('make_loss', LOSSES)
def test_rejects_target_shape_mismatch(make_loss):
    pred, target = _inputs()
    with pytest.raises(ValueError, match=r'target of shape .*\(2, 24, 40\).*got \(2, 24, 39\)'):
        make_loss()(pred, target[..., :-1])
    with pytest.raises(ValueError, match=r'got \(2, 1, 24, 40\)'):
        make_loss()(pred, target.unsqueeze(1))


@pytest.mark.parametrize('make_loss', LOSSES)
def test_rejects_weight(make_loss):
    pred, target = _inputs()
    with pytest.raises(ValueError, match='does not support a per-pixel weight'):
        make_loss()(pred, target, weight=torch.ones_like(target, dtype=torch.float))


@pytest.mark.parametrize('make_loss', LOSSES)
def test_rejects_unknown_label_values(make_loss):
    pred, target = _inputs()
    target[0, 0, 0] = 3
    target[1, 0, 0] = -1
    with pytest.raises(ValueError, match=r'ignore_index=255, found \[-1, 3\]'):
        make_loss()(pred, target)
    # 255 is only valid as the ignore index in use.
    with pytest.raises(ValueError, match=r'ignore_index=254, found \[255\]'):
        make_loss()(pred, _inputs()[1], ignore_index=254)


@pytest.mark.parametrize('make_loss', LOSSES)
def test_rejects_integer_pred(make_loss):
    pred, target = _inputs()
    with pytest.raises(TypeError, match='floating-point logits.*torch.int64'):
        make_loss()(pred.long(), target)


# --------------------------------------------------------------------------- edge cases


def test_balanced_bce_without_foreground_is_zero():
    pred, target = _inputs()
    target[target == 1] = 0
    pred.requires_grad_(True)
    loss = BalancedBCELoss()(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize('make_loss', LOSSES)
def test_all_pixels_ignored_gives_zero(make_loss):
    pred, _ = _inputs()
    target = torch.full((2, 24, 40), IGNORE)
    pred.requires_grad_(True)
    loss = make_loss()(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert (pred.grad == 0).all()


@pytest.mark.parametrize('weighted_bce', [True, False])
def test_structure_loss_image_all_ignored(weighted_bce):
    pred, target = _inputs()
    target[1] = IGNORE
    pred.requires_grad_(True)
    loss = StructureLoss(weighted_bce=weighted_bce)(pred, target)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(_structure_reference(pred, target, weighted_bce), rel=1e-5)
    if weighted_bce:
        # The empty image's terms are 0 and it counts in the batch mean.
        alone = StructureLoss()(pred[:1], target[:1]).item()
        assert loss.item() == pytest.approx(alone / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[1] == 0).all()


def test_unweighted_bce_reproduces_reference_code():
    """The reference's literal code, whose legacy reduce='none' makes its BCE a batch mean."""
    import warnings

    import torch.nn.functional as F

    def pranet_structure_loss(pred, mask):
        weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            wbce = F.binary_cross_entropy_with_logits(pred, mask, reduce='none')
        wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
        pred = torch.sigmoid(pred)
        inter = ((pred * mask) * weit).sum(dim=(2, 3))
        union = ((pred + mask) * weit).sum(dim=(2, 3))
        wiou = 1 - (inter + 1) / (union - inter + 1)
        return (wbce + wiou).mean()

    pred, target = _inputs(ignore=False)
    expected = pranet_structure_loss(pred, target.unsqueeze(1).float()).item()
    assert StructureLoss(weighted_bce=False)(pred, target).item() == pytest.approx(expected, rel=1e-5)
    assert StructureLoss(weighted_bce=True)(pred, target).item() != pytest.approx(expected, rel=1e-4)
