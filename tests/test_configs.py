"""Every config in configs/ builds and runs a forward pass with the tiny SAM swapped in."""

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_sam  # noqa: F401
from tests.conftest import TINY_ARCH, TINY_HEAD

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
MODEL_BASES = sorted((REPO / 'configs/_base_/models').glob('*.py'))


def test_there_are_configs():
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize('path', CONFIGS + MODEL_BASES, ids=lambda p: p.name)
def test_config_builds_and_runs(path):
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(path)
    if path not in MODEL_BASES:
        assert cfg.custom_imports['imports'] == ['mmseg_sam']
    model_cfg = cfg.model
    model_cfg.sam_checkpoint = None
    # assignment, not ConfigDict.update (which merges nested dicts)
    model_cfg.backbone.arch = dict(TINY_ARCH)
    model_cfg.backbone.img_size = 64
    for k, v in TINY_HEAD.items():
        model_cfg.decode_head[k] = v
    model_cfg.data_preprocessor.size = (64, 64)
    model = MODELS.build(model_cfg).eval()
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
    with torch.no_grad():
        [result] = model(torch.randn(1, 3, 64, 64), [sample], mode='predict')
    num_classes = model_cfg.decode_head.num_classes
    scores = result.seg_logits.data
    assert scores.shape == (1 if model.decode_head.out_channels == 1 else num_classes, 64, 64)
    assert result.pred_sem_seg.data.shape == (1, 64, 64)
    assert int(result.pred_sem_seg.data.max()) < num_classes


def test_binary_base_losses_reward_the_foreground():
    """Each loss of the binary base prefers the right mask over its inverse.

    Guards against mmseg 1.2.2's DiceLoss, which with one output channel scores the
    background mask as the target.
    """
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(REPO / 'configs/_base_/models/sam-vit-b_mask-decoder-binary.py')
    losses = cfg.model.decode_head.loss_decode
    losses = losses if isinstance(losses, list) else [losses]
    label = torch.zeros(2, 16, 16, dtype=torch.long)
    label[:, 4:12, 4:12] = 1
    label[0, 0, 0] = 255  # ignored pixel
    good = (label == 1).float().unsqueeze(1) * 20 - 10  # (B, 1, H, W) logits
    for loss_cfg in losses:
        loss = MODELS.build(loss_cfg)
        # as BaseDecodeHead.loss_by_feat calls it
        assert loss(good, label, ignore_index=255) < loss(-good, label, ignore_index=255), loss_cfg


@pytest.mark.parametrize('head', ['sam_lora', 'sam_mask_cls'])
def test_hue_demo_configs_match_the_generator(head):
    """The many-class demo configs name the generator's classes and palette, in its order."""
    from mmseg_sam.datasets.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE

    cfg = Config.fromfile(
        REPO / 'configs' / head / 'sam-vit-small_lora-qv-r4_2k_demo-multiclass-hue-128x128.py'
    )
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.data_root == 'data/demo_multiclass_hue'
        assert tuple(loader.dataset.metainfo.classes) == SYNTHETIC_CLASSES['multiclass_hue']
        assert [list(c) for c in loader.dataset.metainfo.palette] == SYNTHETIC_PALETTE['multiclass_hue']
    assert cfg.model.decode_head.num_classes == len(SYNTHETIC_CLASSES['multiclass_hue'])
    assert cfg.train_cfg.max_iters == cfg.param_scheduler[0].end == 2000
