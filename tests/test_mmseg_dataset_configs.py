"""The configs on mmseg's own dataset bases (configs/mmseg_datasets/, configs/upernet/): each
trains one iteration and tests one image with the tiny SAM, on files written here in the layout
that mmseg's dataset class reads, at the config's own crop, padding and sliding-window test.

The ViT-H configs equal their ViT-B config once the tiny SAM is swapped in (checked below), so
the ViT-B config's run covers both. ADE20K with the mask-classification head also runs through
``tools/test.py`` and reports a 150-class IoU table.
"""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_sam.models.peft.base import PEFT_METHODS
from tests.conftest import REPO, tiny_model_cfg

FOLDERS = ('mmseg_datasets', 'upernet')
CONFIGS = sorted(p for folder in FOLDERS for p in (REPO / 'configs' / folder).glob('*.py'))
VIT_B = [p for p in CONFIGS if p.name.startswith('sam-vit-b')]
VIT_H = [p for p in CONFIGS if p.name.startswith('sam-vit-h')]
# trained here and tested through tools/test.py below
ADE20K_MASKCLS = REPO / 'configs/mmseg_datasets/sam-vit-b-maskcls_conv-lora-r3_160k_ade20k-512x512.py'

# Per dataset (the name in the config file): the image and mask folders of the train and
# validation splits, the dataset class's suffixes, the label values its masks hold and the
# shape (h, w) of the written images.
LAYOUTS = {
    'ade20k': dict(
        train=('images/training', 'annotations/training'),
        val=('images/validation', 'annotations/validation'),
        suffixes=('.jpg', '.png'),
        labels=range(151),  # 0 = 'other', ignored by reduce_zero_label
        shape=(48, 64),
    ),
    'cityscapes': dict(
        train=('leftImg8bit/train/aachen', 'gtFine/train/aachen'),
        val=('leftImg8bit/val/frankfurt', 'gtFine/val/frankfurt'),
        suffixes=('_leftImg8bit.png', '_gtFine_labelTrainIds.png'),
        labels=[*range(19), 255],
        shape=(32, 64),
    ),
    'isaid': dict(
        train=('img_dir/train', 'ann_dir/train'),
        val=('img_dir/val', 'ann_dir/val'),
        suffixes=('.png', '_instance_color_RGB.png'),
        labels=range(16),
        shape=(64, 64),
    ),
    'loveda': dict(
        train=('img_dir/train', 'ann_dir/train'),
        val=('img_dir/val', 'ann_dir/val'),
        suffixes=('.png', '.png'),
        labels=range(8),  # 0 = no data, ignored by reduce_zero_label
        shape=(64, 64),
    ),
    'potsdam': dict(
        train=('img_dir/train', 'ann_dir/train'),
        val=('img_dir/val', 'ann_dir/val'),
        suffixes=('.png', '.png'),
        labels=range(7),  # 0 = boundary, ignored by reduce_zero_label
        shape=(64, 64),
    ),
    'synapse': dict(
        train=('img_dir/train', 'ann_dir/train'),
        val=('img_dir/val', 'ann_dir/val'),
        suffixes=('.jpg', '.png'),
        labels=range(9),
        shape=(64, 64),
    ),
    'drive': dict(
        train=('images/training', 'annotations/training'),
        val=('images/validation', 'annotations/validation'),
        suffixes=('.png', '_manual1.png'),
        labels=range(2),  # mmseg's binary convention: 0/1
        shape=(56, 54),
    ),
}


def dataset_of(path: Path) -> str:
    """The dataset token of a config name: ``<model>_<peft>_<schedule>_<dataset>-<size>.py``."""
    return path.stem.split('_')[-1].rsplit('-', 1)[0]


def write_layout(root: Path, layout: dict, seed: int = 0) -> None:
    """Two training and one validation image with blocky masks, in the dataset's folders."""
    rng = np.random.default_rng(seed)
    img_suffix, seg_suffix = layout['suffixes']
    h, w = layout['shape']
    labels = np.array(list(layout['labels']), dtype=np.uint8)
    for split, count in (('train', 2), ('val', 1)):
        img_dir, seg_dir = (root / d for d in layout[split])
        img_dir.mkdir(parents=True, exist_ok=True)
        seg_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f'{split}{i}'
            cv2.imwrite(str(img_dir / f'{name}{img_suffix}'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            blocks = rng.choice(labels, size=(-(-h // 8), -(-w // 8)))  # 8x8-pixel regions of one class
            mask = np.kron(blocks, np.ones((8, 8), np.uint8))[:h, :w]
            cv2.imwrite(str(seg_dir / f'{name}{seg_suffix}'), mask)


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory) -> dict[str, Path]:
    roots = {}
    for name, layout in LAYOUTS.items():
        roots[name] = tmp_path_factory.mktemp(name)
        write_layout(roots[name], layout)
    return roots


@pytest.fixture
def no_yapf(monkeypatch):
    """Config text unformatted: the Runner formats its config with yapf 6 times, ~3 s per run."""
    monkeypatch.setattr('mmengine.config.config.FormatCode', lambda text, **kwargs: (text, None))


def tiny_run_cfg(path: Path, data_root: Path, work_dir: Path) -> Config:
    """The config with the tiny SAM, one training iteration, the written data, no worker processes."""
    cfg = Config.fromfile(path)
    tiny_model_cfg(cfg.model, img_size=None)  # the config's own crop, padding and slide
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = 1
    cfg.train_cfg.val_begin = 2  # no validation after the last iteration: the test runs once
    cfg.default_hooks.logger.interval = 1
    cfg.visualizer.name = f'visualizer_{path.stem}'
    cfg.train_dataloader.batch_size = 2  # BatchNorm of the UPerHead configs needs two samples
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.num_workers = 0
        loader.persistent_workers = False
        dataset = loader.dataset.dataset if loader.dataset.type == 'RepeatDataset' else loader.dataset
        dataset.data_root = str(data_root)
    return cfg


def test_every_dataset_has_a_layout():
    assert {dataset_of(p) for p in CONFIGS} == set(LAYOUTS)


@pytest.mark.slow
@pytest.mark.parametrize('path', VIT_H, ids=lambda p: p.name)
def test_vit_h_config_is_its_vit_b_config_with_another_encoder(path):
    """Once the tiny SAM is swapped in, nothing but the encoder tells a ViT-H config from its ViT-B one."""
    h = Config.fromfile(path)
    b = Config.fromfile(path.with_name(path.name.replace('sam-vit-h', 'sam-vit-b')))
    assert h.model.backbone.arch == 'vit_h' and b.model.backbone.arch == 'vit_b'
    assert h.model.sam_checkpoint == 'checkpoints/sam_vit_h_4b8939.pth'
    for cfg in (h, b):
        tiny_model_cfg(cfg.model, img_size=None)
    assert h.to_dict() == b.to_dict()


@pytest.mark.slow
@pytest.mark.parametrize('path', [p for p in VIT_B if p != ADE20K_MASKCLS], ids=lambda p: p.name)
def test_config_trains_and_tests_on_its_mmseg_layout(path, data_roots, tmp_path, no_yapf):
    cfg = tiny_run_cfg(path, data_roots[dataset_of(path)], tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss)
    metrics = runner.test()
    [metric] = cfg.test_evaluator.iou_metrics  # mIoU, or mDice (Synapse, DRIVE)
    assert 0 <= metrics[metric] <= 100
    assert len(runner.test_dataloader.dataset) == 1
    model = runner.model
    assert model.test_cfg.mode == 'slide'
    assert model.decode_head.num_classes == len(runner.test_dataloader.dataset.metainfo['classes'])


@pytest.mark.slow
def test_ade20k_mask_classification_slide_test_with_tools_test(data_roots, tmp_path, no_yapf):
    """tools/test.py on the ADE20K mask-classification config: slide mode, a 150-class IoU table."""
    cfg = tiny_run_cfg(ADE20K_MASKCLS, data_roots['ade20k'], tmp_path / 'train')
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    checkpoint = tmp_path / 'train' / 'iter_1.pth'
    assert checkpoint.is_file()
    config = tmp_path / 'ade20k_tiny.py'
    cfg.dump(str(config))
    result = subprocess.run(
        [sys.executable, 'tools/test.py', str(config), str(checkpoint), '--work-dir', str(tmp_path / 'test')],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert Config.fromfile(config).model.test_cfg.mode == 'slide'
    # IoUMetric's per-class table: one row per ADE20K class
    table = log[log.index('per class results') :]
    classes = re.findall(
        r'^\|\s+(\S[^|]*?)\s+\|\s+(?:[\d.]+|nan)\s+\|\s+(?:[\d.]+|nan)\s+\|$', table, flags=re.M
    )
    assert len(classes) == 150, table[:2000]
    assert classes[0] == 'wall' and classes[-1] == 'flag'
    assert re.search(r'mIoU: [\d.]+', log)


def test_readme_mmseg_dataset_recipe_is_the_ade20k_config(tmp_path):
    """The README's five lines build the ADE20K config of configs/mmseg_datasets/ (Conv-LoRA's defaults)."""
    name = 'configs/my_project/sam-vit-b-maskcls_conv-lora-r3_160k_ade20k-512x512.py'
    blocks = re.findall(r'^```python\n(.*?)^```', (REPO / 'README.md').read_text(), flags=re.S | re.M)
    [recipe] = [b for b in blocks if b.startswith(f'# {name}')]
    assert len([line for line in recipe.splitlines() if not line.startswith('#')]) == 5
    (tmp_path / 'configs/my_project').mkdir(parents=True)
    (tmp_path / 'configs/_base_').symlink_to(REPO / 'configs/_base_')
    (tmp_path / name).write_text(recipe)
    readme, ours = Config.fromfile(tmp_path / name), Config.fromfile(ADE20K_MASKCLS)
    assert readme.model.backbone.pop('peft') == dict(type='ConvLoRA')
    peft = ours.model.backbone.pop('peft')
    defaults = inspect.signature(PEFT_METHODS.get(peft.pop('type'))).parameters
    assert peft and all(defaults[k].default == v for k, v in peft.items())  # the config states the defaults
    ours.pop('find_unused_parameters')
    assert readme.to_dict() == ours.to_dict()
