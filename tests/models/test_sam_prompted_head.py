"""SAMPromptedHead / SAMPromptedEncoderDecoder: segment_anything's prompted outputs, losses, rounds, errors."""

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_sam.models.decode_heads import PromptSet
from mmseg_sam.models.decode_heads.clicks import next_clicks, sample_error_points
from mmseg_sam.models.losses import PromptedMaskLoss
from tests.conftest import TINY_IMG, tiny_prompted_cfg, tiny_segmentor_cfg

MEAN = torch.tensor([123.675, 116.28, 103.53]).reshape(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).reshape(3, 1, 1)


def _sample(
    masks: torch.Tensor,
    boxes: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
    img_shape: tuple[int, int] = (TINY_IMG, TINY_IMG),
    sem_seg: torch.Tensor | None = None,
) -> SegDataSample:
    """A packed sample with N instances (labels 1) and their prompts in the masks' frame."""
    n, h, w = masks.shape
    sample = SegDataSample(metainfo=dict(img_shape=img_shape, ori_shape=(h, w), img_path='x.png'))
    inst = InstanceData(masks=masks.bool(), labels=torch.ones(n, dtype=torch.long))
    if boxes is not None:
        inst.prompt_boxes = boxes.float()
    if points is not None:
        inst.prompt_points = points.float()
        inst.prompt_point_labels = point_labels.long()
    sample.gt_instances = inst
    if sem_seg is None:
        sem_seg = masks.any(0).long()
    sample.gt_sem_seg = PixelData(data=sem_seg[None])
    return sample


def _blob_masks() -> torch.Tensor:
    masks = torch.zeros(2, TINY_IMG, TINY_IMG, dtype=torch.bool)
    masks[0, 8:30, 10:36] = True
    masks[1, 40:60, 30:58] = True
    return masks


@pytest.fixture(scope='module')
def image() -> torch.Tensor:
    return torch.randint(0, 256, (3, TINY_IMG, TINY_IMG), generator=torch.Generator().manual_seed(3)).float()


def _prompted(sam_checkpoint, **head) -> torch.nn.Module:
    return MODELS.build(tiny_prompted_cfg(sam_checkpoint, head=head))


def test_box_prompt_equals_segment_anything(reference_sam, sam_checkpoint, image):
    """Same weights, same box: Sam.forward's masks, logits and IoU predictions."""
    model = _prompted(sam_checkpoint).eval()
    box = torch.tensor([[10.0, 8.0, 35.0, 29.0], [30.0, 40.0, 57.0, 59.0]])
    with torch.no_grad():
        ref = reference_sam([dict(image=image, original_size=(TINY_IMG, TINY_IMG), boxes=box)], False)[0]
        ref_logits = reference_sam.postprocess_masks(ref['low_res_logits'], (TINY_IMG,) * 2, (TINY_IMG,) * 2)
        inputs = ((image - MEAN) / STD)[None]
        out = model.predict(inputs, [_sample(_blob_masks(), boxes=box)])[0]
        embedding = model.decode_head(model.extract_feat(inputs))
        low_res, iou = model.decode_head.decode(embedding, PromptSet(boxes=box), multimask=False)
    torch.testing.assert_close(low_res, ref['low_res_logits'], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref['iou_predictions'], atol=1e-5, rtol=1e-5)
    logits = model.decode_head.postprocess(low_res, (TINY_IMG,) * 2, (TINY_IMG,) * 2)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    far = (ref_logits.abs() > 1e-4)[:, 0]  # pixels whose sign no rounding can flip
    assert torch.equal(out.pred_instances.box_masks[far], ref['masks'][:, 0][far])
    torch.testing.assert_close(
        out.pred_instances.box_scores, ref['iou_predictions'][:, 0], atol=1e-5, rtol=1e-5
    )


def test_frames_follow_sam_predictor(reference_sam, sam_checkpoint, image):
    """Masks at another size than the input: prompts scaled in, logits resized out as SAM does."""
    model = _prompted(sam_checkpoint).eval()
    small = image[:, :48]  # the resized image (48 x 64) of a 96 x 128 original, padded to 64 x 64
    box_input = torch.tensor([[6.0, 5.0, 40.0, 30.0]])
    with torch.no_grad():
        ref = reference_sam([dict(image=small, original_size=(96, 128), boxes=box_input)], False)[0]
        ref_logits = reference_sam.postprocess_masks(ref['low_res_logits'], (48, 64), (96, 128))
        inputs = ((small - MEAN) / STD)[None]
        masks = torch.zeros(1, 96, 128, dtype=torch.bool)
        masks[0, 10:60, 12:80] = True
        out = model.predict(inputs, [_sample(masks, boxes=box_input * 2, img_shape=(48, 64))])[0]
    far = (ref_logits.abs() > 1e-4)[:, 0]
    assert out.pred_instances.box_masks.shape == (1, 96, 128)
    assert torch.equal(out.pred_instances.box_masks[far], ref['masks'][:, 0][far])


def test_point_prompt_multimask_equals_segment_anything(reference_sam, sam_checkpoint, image):
    model = _prompted(sam_checkpoint).eval()
    coords, labels = torch.tensor([[[20.0, 18.0]]]), torch.tensor([[1]])
    with torch.no_grad():
        ref = reference_sam(
            [dict(image=image, original_size=(TINY_IMG,) * 2, point_coords=coords, point_labels=labels)], True
        )[0]
        embedding = model.decode_head(model.extract_feat(((image - MEAN) / STD)[None]))
        prompts = PromptSet(points=(coords, labels))
        assert prompts.ambiguous
        low_res, iou = model.decode_head.decode(embedding, prompts, multimask=True)
    assert low_res.shape == (1, 3, 16, 16)
    torch.testing.assert_close(low_res, ref['low_res_logits'], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref['iou_predictions'], atol=1e-5, rtol=1e-5)


def test_head_loads_the_whole_decoder_strictly(reference_sam, sam_checkpoint):
    head = _prompted(sam_checkpoint).decode_head
    for part in ('prompt_encoder', 'mask_decoder'):
        ref = getattr(reference_sam, part).state_dict()
        ours = getattr(head, part).state_dict()
        assert set(ours) == set(ref)
        assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_single_point_loss_keeps_the_lowest_of_three(sam_checkpoint, image):
    """SAM's ambiguity rule: the mask loss is the minimum over the multimask outputs; IoU over all."""
    torch.manual_seed(0)
    model = _prompted(sam_checkpoint, train_prompting=dict(box_prob=0.0)).train()
    masks = _blob_masks()
    points, labels = torch.tensor([[[20.0, 18.0]], [[44.0, 50.0]]]), torch.ones(2, 1, dtype=torch.long)
    sample = _sample(masks, points=points, point_labels=labels)
    inputs = ((image - MEAN) / STD)[None]
    losses = model.loss(inputs, [sample])
    head = model.decode_head
    with torch.no_grad():
        embedding = head(model.extract_feat(inputs))
        low_res, iou = head.decode(embedding, PromptSet(points=(points, labels)), multimask=True)
        logits = head.postprocess(low_res, (TINY_IMG,) * 2, (TINY_IMG,) * 2)
        valid = torch.ones(TINY_IMG, TINY_IMG, dtype=torch.bool)
        terms = head.loss_decode.mask_terms(logits, masks, valid)
        total = sum(terms.values())
        best = total.argmin(dim=1, keepdim=True)
    assert low_res.shape[1] == 3
    for name, value in terms.items():
        torch.testing.assert_close(
            losses[f'decode.{name}'].detach(), value.gather(1, best).mean(), atol=1e-5, rtol=1e-5
        )
    iou_expected = head.loss_decode.iou_term(iou, logits, masks, valid).mean()
    torch.testing.assert_close(losses['decode.loss_iou'].detach(), iou_expected, atol=1e-5, rtol=1e-5)
    assert set(losses) == {'decode.loss_focal', 'decode.loss_dice', 'decode.loss_iou'}


def test_training_gradients_reach_only_trainable_parts(sam_checkpoint, image):
    model = _prompted(sam_checkpoint, freeze=('prompt_encoder',), train_prompting=dict(box_prob=1.0)).train()
    lora = MODELS.build(
        tiny_prompted_cfg(
            sam_checkpoint, head=dict(freeze=('prompt_encoder',)), peft=dict(type='LoRA', rank=2)
        )
    ).train()
    for m in (model, lora):
        masks = _blob_masks()
        sample = _sample(masks, boxes=torch.tensor([[10.0, 8, 35, 29], [30, 40, 57, 59]]))
        loss = sum(m.loss(((image - MEAN) / STD)[None], [sample]).values())
        loss.backward()
        for name, p in m.named_parameters():
            if name.startswith('decode_head.prompt_encoder') or not p.requires_grad:
                assert p.grad is None, name
        decoder_grads = [p.grad for n, p in m.named_parameters() if n.startswith('decode_head.mask_decoder.')]
        assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
    lora_grads = [p.grad for n, p in lora.named_parameters() if 'lora' in n]
    assert lora_grads and all(g is not None for g in lora_grads)


def test_correction_rounds_feed_points_and_detached_logits(sam_checkpoint, image, monkeypatch):
    model = _prompted(
        sam_checkpoint, train_prompting=dict(box_prob=1.0, correction_rounds=3, mask_only_rounds=2)
    ).train()
    head = model.decode_head
    seen: list[PromptSet] = []
    decode = head.decode

    def recording(embedding, prompts, multimask):
        seen.append(prompts)
        return decode(embedding, prompts, multimask)

    monkeypatch.setattr(head, 'decode', recording)
    sample = _sample(_blob_masks(), boxes=torch.tensor([[10.0, 8, 35, 29], [30, 40, 57, 59]]))
    losses = model.loss(((image - MEAN) / STD)[None], [sample])
    assert len(seen) == 6  # the box, 3 points, 2 mask-only rounds
    assert seen[0].mask_input is None and seen[0].points is None
    assert all(p.mask_input is not None and not p.mask_input.requires_grad for p in seen[1:])
    counts = [0 if p.points is None else p.points[0].shape[1] for p in seen]
    steps = [b - a for a, b in zip(counts, counts[1:])]
    assert sorted(steps) == [0, 0, 1, 1, 1] and steps[-1] == 0  # one mask-only round at the end, one anywhere
    assert all(p.boxes is not None for p in seen)  # the box stays, as in SAM's recipe
    assert all(torch.isfinite(v) for v in losses.values())


def test_prompted_test_step_clicks_and_paint(sam_checkpoint, image):
    model = _prompted(sam_checkpoint, test_prompting=dict(box=True, clicks=3)).eval()
    masks = _blob_masks()
    sem = masks.any(0).long()
    sem[0, :] = 255  # an ignored row
    sample = _sample(masks, boxes=torch.tensor([[10.0, 8, 35, 29], [30, 40, 57, 59]]), sem_seg=sem)
    with torch.no_grad():
        out = model.predict(((image - MEAN) / STD)[None], [sample])[0]
    pred = out.pred_instances
    assert pred.click_masks.shape == (2, 3, TINY_IMG, TINY_IMG)
    assert pred.click_points.shape == (2, 3, 2) and pred.click_labels.shape == (2, 3)
    assert pred.click_labels[:, 0].tolist() == [1, 1]  # the first click: inside the object
    # RITM's first click: the instance's most interior pixel
    for j in range(2):
        x, y = pred.click_points[j, 0].long().tolist()
        assert masks[j, y, x]
    assert out.pred_sem_seg.data.shape == (1, TINY_IMG, TINY_IMG)
    assert set(out.pred_sem_seg.data.unique().tolist()) <= {0, 1}


def test_empty_sample_and_errors(sam_checkpoint, image):
    model = _prompted(sam_checkpoint).eval()
    inputs = ((image - MEAN) / STD)[None]
    empty = _sample(torch.zeros(0, TINY_IMG, TINY_IMG, dtype=torch.bool), boxes=torch.zeros(0, 4))
    out = model.predict(inputs, [empty])[0]
    assert out.pred_instances.box_masks.shape == (0, TINY_IMG, TINY_IMG)
    with pytest.raises(ValueError, match='no instance to prompt in this batch'):
        model.train().loss(inputs, [empty])
    no_prompts = SegDataSample(metainfo=dict(img_path='a.png', img_shape=(64, 64)))
    with pytest.raises(ValueError, match='a.png has no gt_instances'):
        model.predict(inputs, [no_prompts])
    no_box = _sample(_blob_masks())
    with pytest.raises(ValueError, match='no prompt_boxes'):
        model.predict(inputs, [no_box])
    with pytest.raises(ValueError, match='larger than the prompted head image_size=64'):
        model.predict(torch.zeros(1, 3, 80, 64), [no_box])


def test_construction_errors(sam_checkpoint):
    with pytest.raises(ValueError, match="unknown keys \\['rounds'\\]"):
        _prompted(None, train_prompting=dict(rounds=2))
    with pytest.raises(ValueError, match='box_prob must be a probability'):
        _prompted(None, train_prompting=dict(box_prob=2))
    with pytest.raises(ValueError, match='evaluates nothing'):
        _prompted(None, test_prompting=dict(box=False, clicks=0))
    with pytest.raises(ValueError, match='freeze may name'):
        _prompted(None, freeze=('encoder',))
    cfg = tiny_prompted_cfg(None)
    cfg['decode_head']['image_size'] = 128
    with pytest.raises(ValueError, match='backbone img_size=64 differs from the head image_size=128'):
        MODELS.build(cfg)
    cfg = tiny_prompted_cfg(None)
    cfg['decode_head'] = tiny_segmentor_cfg()['decode_head']
    with pytest.raises(ValueError, match='needs a SAMPromptedHead, got SAMMaskDecoderHead'):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='loss_decode must be a PromptedMaskLoss'):
        _prompted(None, loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True))
    with pytest.raises(ValueError, match='iou_loss must be one of'):
        PromptedMaskLoss(iou_loss='l2')
    with pytest.raises(ValueError, match='needs a mask term'):
        PromptedMaskLoss(focal=0, dice=0)


def test_prompted_mask_loss_terms_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])  # (1, 1, 2, 2)
    target = torch.tensor([[[True, False], [False, False]]])
    valid = torch.tensor([[True, True], [True, False]])  # the last pixel is ignored
    loss = PromptedMaskLoss(focal=2.0, dice=1.0, bce=3.0, iou=1.0)
    terms = loss.mask_terms(logits, target, valid)
    x, t = logits[0, 0].flatten()[:3], target[0].flatten()[:3].float()
    p = x.sigmoid()
    ce = -(t * p.log() + (1 - t) * (1 - p).log())
    p_t = p * t + (1 - p) * (1 - t)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * t + 0.75 * (1 - t))).mean()
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    torch.testing.assert_close(terms['loss_bce'][0, 0], 3 * ce.mean())
    torch.testing.assert_close(terms['loss_focal'][0, 0], 2 * focal)
    torch.testing.assert_close(terms['loss_dice'][0, 0], dice)
    # actual IoU of logits > 0 over the valid pixels: {(0,0), (1,0)} vs {(0,0)} -> 1/2
    iou = loss.iou_term(torch.tensor([[0.75]]), logits, target, valid)
    torch.testing.assert_close(iou, torch.tensor([[0.0625]]))
    l1 = PromptedMaskLoss(iou_loss='l1').iou_term(torch.tensor([[0.75]]), logits, target, valid)
    torch.testing.assert_close(l1, torch.tensor([[0.25]]))


def test_next_clicks_follow_ritm():
    gt = torch.zeros(2, 9, 9, dtype=torch.bool)
    # 7 x 5: rows 3, 4 and 5 of column 3 are all 3 px from the boundary; RITM takes the first, (row 3, col 3)
    gt[0, 1:8, 1:6] = True
    gt[1, 0:3, 0:3] = True
    pred = torch.zeros_like(gt)
    pred[1, 0:3, 0:3] = True
    pred[1, 4:9, 4:9] = True  # a false positive block 5 x 5 centred at (6, 6)
    valid = torch.ones(9, 9, dtype=torch.bool)
    points, labels = next_clicks(pred, gt, valid)
    assert points.tolist() == [[[3.0, 3.0]], [[6.0, 6.0]]]
    assert labels.tolist() == [[1], [0]]
    # nothing left to correct: SAM's padding point
    points, labels = next_clicks(gt.clone(), gt, valid)
    assert labels.tolist() == [[-1], [-1]] and points.abs().sum() == 0
    # an ignored region is never clicked
    valid[1:8, 1:6] = False
    points, labels = next_clicks(torch.zeros_like(gt), gt, valid)
    assert labels[0].tolist() == [-1]


def test_sample_error_points_lie_in_the_error_region():
    gt = torch.zeros(3, 8, 8, dtype=torch.bool)
    gt[0, 2:6, 2:6] = True
    gt[1, 0:2, 0:2] = True
    pred = torch.zeros_like(gt)
    pred[1] = True  # every error is a false positive
    pred[2] = False  # gt[2] empty too: no error
    valid = torch.ones(8, 8, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        points, labels = sample_error_points(pred, gt, valid, gen)
        x0, y0 = points[0, 0].long().tolist()
        assert labels[0, 0] == 1 and gt[0, y0, x0]
        x1, y1 = points[1, 0].long().tolist()
        assert labels[1, 0] == 0 and not gt[1, y1, x1]
        assert labels[2, 0] == -1
    assert np.array_equal(sample_error_points(pred[:0], gt[:0], valid)[0].shape, (0, 1, 2))


@pytest.mark.parametrize('with_cp', ['selective', True])
def test_recomputation_gives_the_same_prompted_gradients(sam_checkpoint, image, with_cp):
    """with_cp in the encoder changes what is kept, not the prompted loss or its gradients."""
    lora = dict(type='LoRA', rank=2, init='xavier')
    grads = []
    for level in (False, with_cp):
        torch.manual_seed(0)
        cfg = tiny_prompted_cfg(
            sam_checkpoint, head=dict(train_prompting=dict(box_prob=1.0)), peft=lora, with_cp=level
        )
        model = MODELS.build(cfg).train()
        sample = _sample(_blob_masks(), boxes=torch.tensor([[10.0, 8, 35, 29], [30, 40, 57, 59]]))
        sum(model.loss(((image - MEAN) / STD)[None], [sample]).values()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and any('lora' in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)
