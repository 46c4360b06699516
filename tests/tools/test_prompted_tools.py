"""Prompted SAM through the real tools: every preset trains one prompted iteration with tools/train.py,
tools/test.py scores box / point / click IoU (and a zero-shot 'none' checkpoint), the trained model
exports to SAM's format and SamPredictor gives its masks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.models.peft.presets import PRESETS
from tests.conftest import REPO, TINY_ARCH, TINY_PROMPTED_HEAD, build_reference_sam, run_tool
from tests.models.sam2_fixtures import TINY_SAM2_ARCH, TINY_SAM2_DECODER, official_checkpoint
from tests.models.test_sam2_peft import REFUSED as SAM2_REFUSED
from tests.peft_tiny import tiny

DEMO_PROMPTED = REPO / 'configs/demo/sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py'


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('prompted_data')
    generate_synthetic_dataset(root, num_train=4, num_val=2, img_size=(64, 80), mode='binary', seed=0)
    return root


def prompted_config(path: Path, data_root: Path, checkpoint: Path | None, backbone: dict, head: dict) -> Path:
    """The demo's prompted config on the tiny SAM at 64x64, one iteration, ``backbone`` / ``head`` merged in."""
    backbone = dict(
        dict(arch=dict(TINY_ARCH), img_size=64, peft=None),
        **{k: dict(v) if isinstance(v, dict) else v for k, v in backbone.items()},
    )
    for value in backbone.values():  # replace the base's arch and LoRA, do not merge into them
        if isinstance(value, dict):
            value['_delete_'] = True
    head = dict(TINY_PROMPTED_HEAD, **head)
    path.write_text(f"""
_base_ = [{str(DEMO_PROMPTED)!r}]
data_root = {str(data_root)!r}
randomness = dict(seed=0)
# in-process runs, several a second: a logger and a visualizer (instances found by name) of their own
experiment_name = {str(path.parent.name)!r}
visualizer = dict(name={str(path.parent.name)!r})
model = dict(
    sam_checkpoint={str(checkpoint) if checkpoint else None!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone={backbone!r},
    decode_head={head!r})
size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=size, keep_ratio=False),
    dict(type='GenerateInstances', min_area=4, max_instances=4, on_empty='skip'),
    dict(type='SamplePrompts', box_jitter='shift', max_shift=5, num_pos_points=1),
    dict(type='PackPromptedSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=size, keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='GenerateInstances', min_area=4, on_empty='keep'),
    dict(type='SamplePrompts', box_jitter='none', num_pos_points=1, seed=0),
    dict(type='PackPromptedSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=1, val_interval=100)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")
    return path


def _scalars(work: Path) -> list[dict]:
    [log] = list(work.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize('item', PRESETS, ids=lambda p: p.key)
def test_every_preset_trains_one_prompted_iteration(tmp_path, data_root, sam_checkpoint, item):
    """Box or point first prompt, one correction round; only the method's and the decoder's weights are saved
    and trained (the prompt encoder frozen here), every loss finite."""
    head = dict(freeze=('prompt_encoder',), train_prompting=dict(box_prob=0.5, correction_rounds=1))
    cfg = prompted_config(tmp_path / 'cfg.py', data_root, sam_checkpoint, tiny(item), head)
    work = tmp_path / 'work'
    assert run_tool('tools/train.py', cfg, '--work-dir', work) is None
    [step] = [s for s in _scalars(work) if 'loss' in s]
    losses = {k: v for k, v in step.items() if 'loss' in k}
    assert {'decode.loss_focal', 'decode.loss_dice', 'decode.loss_iou'} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values()), losses

    model = MODELS.build(Config.fromfile(cfg).model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=True)['state_dict']
    saved = {k for k in state if k in dict(model.named_parameters())}
    assert saved == trainable  # trainable-only: the frozen SAM weights and prompt encoder are not saved
    assert not any(k.startswith('decode_head.prompt_encoder.') for k in saved)
    encoder = {k for k in trainable if k.startswith('backbone.')}
    assert bool(encoder) == (item.key != 'decoder-only')
    initial = dict(model.named_parameters())
    moved = [k for k in saved if k.startswith('decode_head.') and not torch.equal(state[k], initial[k])]
    assert moved  # the decoder started from the SAM checkpoint and took a step


@pytest.mark.slow
def test_test_tool_scores_boxes_points_and_clicks(tmp_path, data_root, sam_checkpoint, capsys):
    head = dict(test_prompting=dict(box=True, clicks=3))
    cfg = prompted_config(
        tmp_path / 'cfg.py', data_root, sam_checkpoint, dict(peft=dict(type='BitFit')), head
    )
    assert run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'work') is None
    scores = {}
    for name, checkpoint in (('zero-shot', 'none'), ('fine-tuned', tmp_path / 'work/iter_1.pth')):
        capsys.readouterr()
        run_tool('tools/test.py', cfg, checkpoint, '--work-dir', tmp_path / name)
        log = capsys.readouterr().out
        assert 'box IoU' in log and '1-point IoU' in log  # the per-class table
        [metrics_file] = list((tmp_path / name).glob('*/*.json'))
        scores[name] = json.loads(metrics_file.read_text().splitlines()[-1])
    for metrics in scores.values():
        assert {'box_mIoU', 'box_mDice', 'point_mIoU', 'click_mIoU@3', 'NoC@85', 'NoC@90'} <= set(metrics)
        assert metrics['instances'] >= 2 and metrics['images_without_instances'] == 0
        assert 1 <= metrics['NoC@85'] <= 3 and metrics['point_mIoU'] == metrics['click_mIoU@1']
    assert scores['zero-shot']['box_mIoU'] != scores['fine-tuned']['box_mIoU']  # the checkpoint was loaded


@pytest.mark.slow
def test_trained_prompted_model_exports_to_sam_predictor(
    tmp_path, data_root, sam_checkpoint, sam_predictor_cls
):
    """The must-show: train with prompts, export, load with segment_anything, same masks under the same box."""
    lora = dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v')))
    cfg = prompted_config(
        tmp_path / 'cfg.py', data_root, sam_checkpoint, lora, dict(train_prompting=dict(box_prob=1.0))
    )
    assert run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'work') is None
    out = tmp_path / 'sam_exported.pth'
    assert run_tool('tools/model_converters/export_sam.py', cfg, tmp_path / 'work/iter_1.pth', out) == 0
    sam = build_reference_sam(seed=7)
    sam.load_state_dict(torch.load(out, weights_only=True), strict=True)

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    box = np.array([8.0, 10.0, 40.0, 44.0])
    predictor = sam_predictor_cls(sam)
    predictor.set_torch_image(torch.from_numpy(image).permute(2, 0, 1)[None].float(), (64, 64))
    masks, scores, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)

    from mmseg_sam.apis import load_checkpoint
    from mmseg_sam.models.decode_heads import PromptSet

    model = MODELS.build(Config.fromfile(cfg).model).eval()
    load_checkpoint(model, tmp_path / 'work/iter_1.pth')
    rgb = torch.from_numpy(image).permute(2, 0, 1).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).reshape(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).reshape(3, 1, 1)
    with torch.no_grad():
        head = model.decode_head
        low, iou = head.decode(
            head(model.extract_feat(((rgb - mean) / std)[None])),
            PromptSet(boxes=torch.tensor(box)[None].float()),
            False,
        )
        logits = head.postprocess(low, (64, 64), (64, 64))[0]
    np.testing.assert_allclose(masks, logits.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores, iou[0].numpy(), atol=1e-5, rtol=0)


SAM2_DEMO_PROMPTED = REPO / 'configs/demo/sam2.1-hiera-mini_prompted_lora-qv-r4_1k_demo-binary-128x128.py'


def sam2_prompted_config(path: Path, data_root: Path, checkpoint: Path, backbone: dict, head: dict) -> Path:
    """:func:`prompted_config` on the SAM 2 prompted demo with the tiny SAM 2 (SAM2Hiera + SAM2PromptedHead)."""
    prompted_config(path, data_root, checkpoint, {}, head)
    text = path.read_text().replace(repr(str(DEMO_PROMPTED)), repr(str(SAM2_DEMO_PROMPTED)))
    backbone = dict(dict(arch=dict(TINY_SAM2_ARCH), peft=None), **backbone)
    for value in backbone.values():  # replace the demo's arch and LoRA, do not merge into them
        if isinstance(value, dict):
            value['_delete_'] = True
    head = dict(TINY_SAM2_DECODER, iou_head_hidden_dim=32, image_size=64, **head)
    path.write_text(f'{text}model.update(backbone={backbone!r}, decode_head={head!r})\n')
    return path


@pytest.mark.slow
@pytest.mark.parametrize('item', [p for p in PRESETS if p.key not in SAM2_REFUSED], ids=lambda p: p.key)
def test_every_preset_trains_one_prompted_iteration_on_sam2(tmp_path, data_root, item):
    """The SAM 2 family: the same step as on SAM (box or point, one correction round, the prompt encoder
    frozen), with the object-score loss; only the method's and the decoder's weights saved and trained."""
    source = tmp_path / 'sam2.1_tiny.pt'
    official_checkpoint(source)
    head = dict(freeze=('prompt_encoder',), train_prompting=dict(box_prob=0.5, correction_rounds=1))
    backbone = {k: dict(v) if isinstance(v, dict) else v for k, v in tiny(item).items()}
    cfg = sam2_prompted_config(tmp_path / 'cfg.py', data_root, source, backbone, head)
    work = tmp_path / 'work'
    assert run_tool('tools/train.py', cfg, '--work-dir', work) is None
    [step] = [s for s in _scalars(work) if 'loss' in s]
    losses = {k: v for k, v in step.items() if 'loss' in k}
    assert {'decode.loss_focal', 'decode.loss_dice', 'decode.loss_iou', 'decode.loss_obj'} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values()), losses

    model = MODELS.build(Config.fromfile(cfg).model)
    assert type(model.decode_head).__name__ == 'SAM2PromptedHead'
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=True)['state_dict']
    saved = {k for k in state if k in dict(model.named_parameters())}
    assert saved == trainable
    assert not any(k.startswith('decode_head.prompt_encoder.') for k in saved)
    assert bool({k for k in trainable if k.startswith('backbone.')}) == (item.key != 'decoder-only')
    initial = dict(model.named_parameters())
    moved = [k for k in saved if k.startswith('decode_head.') and not torch.equal(state[k], initial[k])]
    assert 'decode_head.no_mem_embed' in saved and moved
