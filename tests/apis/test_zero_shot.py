"""The zero-shot baseline (``tools/test.py CONFIG none``) is SAM itself, whatever the PEFT method's initialisation."""

import json

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_sam.apis import zero_shot_config
from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.models.decode_heads import PromptSet
from mmseg_sam.models.peft.presets import PRESETS
from tests.conftest import TINY_IMG, run_tool, tiny_prompted_cfg
from tests.peft_tiny import tiny
from tests.tools.test_prompted_tools import prompted_config

MEAN = torch.tensor([123.675, 116.28, 103.53]).reshape(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).reshape(3, 1, 1)
BOXES = torch.tensor([[10.0, 8.0, 35.0, 29.0], [30.0, 40.0, 57.0, 59.0]])
XAVIER_LORA = dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v'), init='xavier'))
# The papers' random initialisations in place of the tiny presets' zero-update ones.
RANDOM_START = {
    'lora-qv-r4': XAVIER_LORA,
    'cobot-lora-qv-r4': dict(peft=dict(type='COBOT', host=dict(XAVIER_LORA['peft'], rank=4))),
}


def _box_outputs(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        embedding = model.decode_head(model.extract_feat(((image - MEAN) / STD)[None]))
        return model.decode_head.decode(embedding, PromptSet(boxes=BOXES), multimask=False)[:2]


def _reference(reference_sam, image: torch.Tensor) -> dict:
    with torch.no_grad():
        return reference_sam([dict(image=image, original_size=(TINY_IMG, TINY_IMG), boxes=BOXES)], False)[0]


@pytest.fixture(scope='module')
def image() -> torch.Tensor:
    return torch.randint(0, 256, (3, TINY_IMG, TINY_IMG), generator=torch.Generator().manual_seed(5)).float()


@pytest.mark.parametrize('item', PRESETS, ids=lambda p: p.key)
def test_zero_shot_model_is_segment_anything_for_every_preset(item, sam_checkpoint, reference_sam, image):
    backbone = RANDOM_START.get(item.key) or tiny(item)
    cfg = Config(dict(model=tiny_prompted_cfg(sam_checkpoint, **backbone)))
    zero, message = zero_shot_config(cfg)
    assert str(sam_checkpoint) in message
    assert cfg.model.backbone.get('peft') == backbone.get('peft')  # the given config is left as it was
    model = MODELS.build(zero.model).eval()
    assert not any('lora' in n or 'cobot' in n or 'prompt_tokens' in n for n, _ in model.named_parameters())
    low_res, iou = _box_outputs(model, image)
    ref = _reference(reference_sam, image)
    torch.testing.assert_close(low_res, ref['low_res_logits'], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref['iou_predictions'], atol=1e-5, rtol=1e-5)


def test_xavier_lora_as_built_is_not_segment_anything(sam_checkpoint, reference_sam, image):
    """What the baseline would be without zero_shot_config: SAM plus a random update."""
    model = MODELS.build(tiny_prompted_cfg(sam_checkpoint, **XAVIER_LORA)).eval()
    low_res, _ = _box_outputs(model, image)
    assert not torch.allclose(low_res, _reference(reference_sam, image)['low_res_logits'], atol=1e-3)


def test_cobot_on_xavier_lora_as_built_is_not_segment_anything(sam_checkpoint, reference_sam, image):
    """COBOT on the paper's LoRA host (A and B random) moves the outputs before training."""
    peft = dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('q', 'v'), init='xavier'))
    cfg = Config(dict(model=tiny_prompted_cfg(sam_checkpoint, peft=peft)))
    built = MODELS.build(cfg.model).eval()
    ref = _reference(reference_sam, image)['low_res_logits']
    assert not torch.allclose(_box_outputs(built, image)[0], ref, atol=1e-3)
    zero = MODELS.build(zero_shot_config(cfg)[0].model).eval()
    torch.testing.assert_close(_box_outputs(zero, image)[0], ref, atol=1e-5, rtol=1e-5)


def test_zero_shot_refuses_a_config_without_sam_weights():
    cfg = Config(dict(model=tiny_prompted_cfg(None, **XAVIER_LORA)))
    with pytest.raises(
        ValueError, match=r"evaluates SAM's own weights, but the config names none: set model\.sam_checkpoint"
    ):
        zero_shot_config(cfg)


@pytest.mark.slow
def test_test_tool_none_scores_sam_whatever_the_lora_init(tmp_path, sam_checkpoint):
    """Through tools/test.py: the zero-shot scores of an xavier-LoRA config equal those of the config without
    a PEFT method (SAM), and the log says what was evaluated."""
    data_root = tmp_path / 'data'
    generate_synthetic_dataset(data_root, num_train=2, num_val=2, img_size=(64, 80), mode='binary', seed=1)
    scores = {}
    head = dict(test_prompting=dict(box=True, clicks=2))
    for name, backbone in (('xavier', XAVIER_LORA), ('sam', dict(peft=None))):
        cfg = prompted_config(tmp_path / f'{name}.py', data_root, sam_checkpoint, backbone, head)
        run_tool('tools/test.py', cfg, 'none', '--work-dir', tmp_path / name)
        [metrics_file] = list((tmp_path / name).glob('*/*.json'))
        scores[name] = json.loads(metrics_file.read_text().splitlines()[-1])
        [log] = list((tmp_path / name).glob('*/*.log'))
        assert f'zero-shot baseline: the model fine-tuning starts from, the weights of {sam_checkpoint}' in (
            log.read_text()
        )
    keys = ('box_mIoU', 'point_mIoU', 'click_mIoU@2', 'NoC@85')
    assert {k: scores['xavier'][k] for k in keys} == {k: scores['sam'][k] for k in keys}
