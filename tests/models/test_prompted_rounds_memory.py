"""Prompted training rounds back-propagated one at a time, recomputed, and in instance chunks: the same
gradients as one graph holding every round, on SAM and SAM 2, for SAM's recipe and COBOT's protocol, every
loss preset, with encoder checkpointing and bf16 autocast."""

import random

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS

from tests.conftest import TINY_IMG, tiny_prompted_cfg
from tests.models.sam2_fixtures import official_checkpoint
from tests.models.test_sam2_prompted_head import sam2_prompted_cfg
from tests.models.test_sam_prompted_head import MEAN, STD, _sample

SAM_RECIPE = dict(box_prob=0.5, correction_rounds=8, mask_only_rounds=2)
COBOT_PROTOCOL = dict(box_prob=1.0)
LOSSES = {
    'sam': dict(type='PromptedMaskLoss'),
    'cobot': dict(type='PromptedMaskLoss', focal=0, dice=1, bce=1, iou=0),
    'cobot-medical': dict(type='PromptedMaskLoss', focal=0, dice=1, bce=1, squared_pred=True),
    'sam2-l1': dict(type='PromptedMaskLoss', iou_loss='l1'),
}
LORA = dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v')))


@pytest.fixture(scope='module')
def sam2_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('sam2_rounds') / 'sam2.1_tiny.pt'
    official_checkpoint(path)
    return path


def _batch() -> tuple[torch.Tensor, list]:
    """Two images with 3 and 2 instances, boxes and one point each."""
    images = torch.randint(0, 256, (2, 3, TINY_IMG, TINY_IMG), generator=torch.Generator().manual_seed(6))
    masks = torch.zeros(5, TINY_IMG, TINY_IMG, dtype=torch.bool)
    boxes = torch.tensor(
        [[10, 8, 35, 29], [4, 40, 19, 59], [40, 4, 59, 25], [10, 30, 29, 49], [36, 40, 59, 59]]
    )
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        mask[y0 + 2 : y0 + 5, x0 + 2 : x0 + 5] = False  # a hole: correction clicks find errors
    points = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None].float()
    labels = torch.ones(5, 1, dtype=torch.long)
    samples = [
        _sample(masks[:3], boxes=boxes[:3], points=points[:3], point_labels=labels[:3]),
        _sample(masks[3:], boxes=boxes[3:], points=points[3:], point_labels=labels[3:]),
    ]
    return (images.float() - MEAN) / STD, samples


def _gradients(cfg: dict, amp: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    torch.manual_seed(0)  # the same LoRA initialisation in every model
    model = MODELS.build(cfg).train()
    images, samples = _batch()
    torch.manual_seed(1), random.seed(1), np.random.seed(1)  # the same prompts and clicks
    with torch.autocast('cpu', dtype=amp, enabled=amp is not None):
        losses = model.loss(images, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, {k: float(v.detach()) for k, v in losses.items() if 'loss' in k}


def _assert_same(got, expected, rtol: float = 1e-5) -> None:
    """Losses and every gradient within ``rtol`` relative to the gradient's largest entry; a gradient that is
    zero in exact arithmetic (the attention's key bias: softmax ignores a shift of the keys) holds rounding
    noise, so the scale is at least 1e-3 of the model's largest gradient."""
    (grads, losses), (ref_grads, ref_losses) = got, expected
    floor = 1e-3 * max(float(v.abs().max()) for v in ref_grads.values())
    assert set(grads) == set(ref_grads) and grads
    assert losses.keys() == ref_losses.keys()
    for name, value in losses.items():
        assert value == pytest.approx(ref_losses[name], rel=rtol, abs=1e-7), name
    for name, value in ref_grads.items():
        scale = value.abs().max().clamp_min(floor)
        assert float((grads[name] - value).abs().max() / scale) <= rtol, name


@pytest.mark.parametrize('protocol', [SAM_RECIPE, COBOT_PROTOCOL], ids=['sam-recipe', 'cobot-box'])
@pytest.mark.parametrize('loss', list(LOSSES), ids=list(LOSSES))
def test_checkpointed_rounds_give_the_one_graph_gradients(sam_checkpoint, protocol, loss):
    def cfg(**memory):
        head = dict(train_prompting=protocol, loss_decode=LOSSES[loss], **memory)
        return tiny_prompted_cfg(sam_checkpoint, head=head, **LORA)

    one_graph = _gradients(cfg(round_memory='keep'))
    _assert_same(_gradients(cfg(instance_chunk=2)), one_graph)  # 'backward'
    if loss != 'sam':  # the loss presets differ only in the terms: the other modes once, with SAM's
        return
    _assert_same(_gradients(cfg()), one_graph)
    _assert_same(_gradients(cfg(round_memory='recompute')), one_graph)
    _assert_same(_gradients(cfg(instance_chunk=1)), one_graph)
    _assert_same(_gradients(cfg(instance_chunk=2, round_memory='recompute')), one_graph)
    _assert_same(_gradients(cfg(instance_chunk=2, round_memory='keep')), one_graph)


@pytest.mark.slow  # 4 s: the fast tier keeps the fp32 equality on SAM above
def test_checkpointed_rounds_with_encoder_checkpointing_and_bf16(sam_checkpoint):
    def cfg(**memory):
        head = dict(train_prompting=SAM_RECIPE, **memory)
        return tiny_prompted_cfg(sam_checkpoint, head=head, with_cp=True, **LORA)

    one_graph = _gradients(cfg(round_memory='keep'))
    _assert_same(_gradients(cfg(instance_chunk=2)), one_graph)
    _assert_same(_gradients(cfg(instance_chunk=2, round_memory='recompute')), one_graph)
    bf16 = _gradients(cfg(round_memory='keep'), amp=torch.bfloat16)
    _assert_same(_gradients(cfg(instance_chunk=2, round_memory='recompute'), amp=torch.bfloat16), bf16)
    # 'backward' sums the rounds' decoder-weight gradients in float32, where one graph sums them in bf16
    # (they meet at autocast's cached bf16 cast of each weight): the encoder's gradients agree to 1e-5,
    # the decoder's to that graph's bf16 rounding
    grads, losses = _gradients(cfg(instance_chunk=2), amp=torch.bfloat16)
    encoder = {k: v for k, v in grads.items() if k.startswith('backbone.')}
    _assert_same((encoder, losses), ({k: bf16[0][k] for k in encoder}, bf16[1]))
    decoder = {k: v for k, v in grads.items() if k.startswith('decode_head.')}
    _assert_same((decoder, {}), ({k: bf16[0][k] for k in decoder}, {}), rtol=0.05)


@pytest.mark.slow  # 5 s for both protocols
@pytest.mark.parametrize('protocol', [SAM_RECIPE, COBOT_PROTOCOL], ids=['sam-recipe', 'cobot-box'])
def test_sam2_checkpointed_rounds_give_the_one_graph_gradients(sam2_checkpoint, protocol):
    def cfg(**memory):
        return sam2_prompted_cfg(sam2_checkpoint, head=dict(train_prompting=protocol, **memory), **LORA)

    one_graph = _gradients(cfg(round_memory='keep'))
    assert 'decode.loss_obj' in one_graph[1]
    _assert_same(_gradients(cfg()), one_graph)
    _assert_same(_gradients(cfg(round_memory='recompute')), one_graph)
    _assert_same(_gradients(cfg(instance_chunk=1)), one_graph)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        (
            dict(instance_chunk=0),
            r'instance_chunk must be None \(all instances in one decoder call\) or an int >= 1, got 0',
        ),
        (dict(instance_chunk=-3), r'instance_chunk .* got -3'),
        (dict(instance_chunk=2.5), r'instance_chunk .* got 2\.5'),
        (
            dict(round_memory='save'),
            r"round_memory must be one of \('backward', 'recompute', 'keep'\), got 'save'",
        ),
    ],
)
def test_bad_memory_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(tiny_prompted_cfg(None, head=kwargs))
