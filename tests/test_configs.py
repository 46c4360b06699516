"""The configs in configs/: each builds and predicts with the tiny SAM swapped in, and each
folder's README.md lists exactly its configs with their true trainable-parameter counts."""

import json
import re
from functools import cache
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_sam  # noqa: F401
from mmseg_sam.models.decode_heads import SAMPromptedHead
from mmseg_sam.models.peft.presets import grid_presets
from tests.conftest import REPO, fast_sample, tiny_model_cfg

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
MODEL_BASES = sorted((REPO / 'configs/_base_/models').glob('*.py'))
FOLDERS = sorted(p for p in (REPO / 'configs').iterdir() if p.is_dir() and p.name != '_base_')
# Besides one folder per method of the benchmark grid (the PEFT presets name them): the demos,
# the demos' old names, SAM on mmseg's dataset bases, SAM's encoder under mmseg's UPerHead, the
# SAM 2.1 grid and the prompted (COBOT box protocol) configs.
OTHER_FOLDERS = {'demo', 'sam_lora', 'sam_mask_cls', 'mmseg_datasets', 'upernet', 'sam2', 'prompted'}
# A README row that lists a config: | [name.py](name.py) | cell | ... |
_ROW = re.compile(r'^\| \[([\w.-]+\.py)\]\(\1\) \|(.*)\|$')


def readme_table(folder: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The config table of ``folder/README.md``: its header cells and, per config, its cells by header."""
    lines = (folder / 'README.md').read_text().splitlines()
    rows = [i for i, line in enumerate(lines) if _ROW.match(line)]
    assert rows, f'{folder}/README.md has no row | [<config>.py](<config>.py) | ... |'
    header = [c.strip() for c in lines[rows[0] - 2].strip('|').split('|')]
    table = {}
    for i in rows:
        name, rest = _ROW.match(lines[i]).groups()
        table[name] = dict(zip(header[1:], (c.strip() for c in rest.split('|')), strict=True))
    return header, table


def test_every_config_folder_lists_exactly_its_configs():
    """The folder READMEs are the catalogue: every config is listed once, in its own folder."""
    assert {p.name for p in FOLDERS} == {folder for folder, _ in grid_presets()} | OTHER_FOLDERS
    listed = []
    for folder in FOLDERS:
        _, table = readme_table(folder)
        assert set(table) == {p.name for p in folder.glob('*.py')}, folder.name
        listed += [folder / name for name in table]
    assert sorted(listed) == CONFIGS


@cache
def _trainable(part_cfg: str) -> int:
    """Trainable parameters of a backbone or decode head config, built on the meta device."""
    register_all_modules(init_default_scope=True)
    with torch.device('meta'):
        module = MODELS.build(json.loads(part_cfg))
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# the folders whose check took over 5 s on the development machine run in `make test` only
README_SLOW = {'cobot', 'mmseg_datasets', 'sam2', 'upernet'}


@pytest.mark.parametrize(
    'folder',
    [pytest.param(f, marks=pytest.mark.slow) if f.name in README_SLOW else f for f in FOLDERS],
    ids=lambda p: p.name,
)
def test_readme_trainable_parameters_are_the_configs(folder):
    """'trainable: encoder' / 'trainable: total' cells equal the counts of the config's own model
    (total: the encoder, the decode head and, where the config has them, neck and auxiliary head)."""
    header, table = readme_table(folder)
    if 'trainable: encoder' not in header:
        assert folder.name in OTHER_FOLDERS - {'demo'}  # old names: a table of forwards only
        return
    for name, cells in table.items():
        cfg = Config.fromfile(folder / name)
        model = cfg.model.to_dict()
        encoder = _trainable(json.dumps(model['backbone'], sort_keys=True))
        rest = sum(
            _trainable(json.dumps(model[part], sort_keys=True))
            for part in ('decode_head', 'neck', 'auxiliary_head')
            if model.get(part)
        )
        assert cells['trainable: encoder'] == f'{encoder:,}', name
        assert cells['trainable: total'] == f'{encoder + rest:,}', name
        if 'epochs' in cells:  # epoch-based (the length follows the dataset)
            assert cells['epochs'] == str(cfg.train_cfg.max_epochs), name
            continue
        iterations = cells.get('iterations (epochs)') or cells['iterations']
        assert iterations.split()[0] == f'{cfg.train_cfg.max_iters:,}', name


# one config per folder in the fast tier
@pytest.mark.parametrize('path', fast_sample(CONFIGS + MODEL_BASES, lambda p: p.parent), ids=lambda p: p.name)
def test_config_builds_and_runs(path):
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(path)
    if path not in MODEL_BASES:
        assert cfg.custom_imports['imports'] == ['mmseg_sam']
    model_cfg = tiny_model_cfg(cfg.model, img_size=64)
    model = MODELS.build(model_cfg).eval()
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
    if isinstance(model.decode_head, SAMPromptedHead):  # prompts in, per-instance masks out (SAM 2's too)
        return _prompted_config_predicts(model, sample)
    with torch.no_grad():
        [result] = model(torch.randn(1, 3, 64, 64), [sample], mode='predict')
    num_classes = model_cfg.decode_head.num_classes
    scores = result.seg_logits.data
    assert scores.shape == (1 if model.decode_head.out_channels == 1 else num_classes, 64, 64)
    assert result.pred_sem_seg.data.shape == (1, 64, 64)
    assert int(result.pred_sem_seg.data.max()) < num_classes


def _prompted_config_predicts(model: torch.nn.Module, sample: SegDataSample) -> None:
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 4:20, 6:30], masks[1, 30:60, 30:50] = True, True
    sample.gt_instances = InstanceData(
        masks=masks,
        labels=torch.ones(2, dtype=torch.long),
        prompt_boxes=torch.tensor([[6.0, 4, 29, 19], [30, 30, 49, 59]]),
    )
    sample.gt_sem_seg = PixelData(data=masks.any(0, keepdim=True).long())
    with torch.no_grad():
        [result] = model(torch.randn(1, 3, 64, 64), [sample], mode='predict')
    pred = result.pred_instances
    if model.decode_head.test_prompting['box']:
        assert pred.box_masks.shape == (2, 64, 64) and pred.box_scores.shape == (2,)
    clicks = model.decode_head.test_prompting['clicks']
    if clicks:
        assert pred.click_masks.shape == (2, clicks, 64, 64)
    assert result.pred_sem_seg.data.shape == (1, 64, 64)


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


@pytest.mark.parametrize('model', ['sam-vit-small', 'sam-vit-small-maskcls', 'sam-vit-small-upernet'])
def test_many_class_demo_configs_match_the_generator(model):
    """The 24-class comparison configs name the generator's classes and palette, at one schedule."""
    from mmseg_sam.datasets.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE

    cfg = Config.fromfile(REPO / 'configs/demo' / f'{model}_lora-qv-r4_300_demo-multiclass-many-128x128.py')
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.data_root == 'data/demo_multiclass_many'
        assert tuple(loader.dataset.metainfo.classes) == SYNTHETIC_CLASSES['multiclass_many']
        assert [list(c) for c in loader.dataset.metainfo.palette] == SYNTHETIC_PALETTE['multiclass_many']
    assert cfg.model.decode_head.num_classes == len(SYNTHETIC_CLASSES['multiclass_many']) == 25
    assert cfg.train_cfg.max_iters == cfg.param_scheduler[0].end == 300


@pytest.mark.parametrize('model', ['sam-vit-small', 'sam-vit-small-maskcls'])
def test_hue_demo_configs_match_the_generator(model):
    """The many-class demo configs name the generator's classes and palette, in its order."""
    from mmseg_sam.datasets.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE

    cfg = Config.fromfile(REPO / 'configs/demo' / f'{model}_lora-qv-r4_2k_demo-multiclass-hue-128x128.py')
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.data_root == 'data/demo_multiclass_hue'
        assert tuple(loader.dataset.metainfo.classes) == SYNTHETIC_CLASSES['multiclass_hue']
        assert [list(c) for c in loader.dataset.metainfo.palette] == SYNTHETIC_PALETTE['multiclass_hue']
    assert cfg.model.decode_head.num_classes == len(SYNTHETIC_CLASSES['multiclass_hue'])
    assert cfg.train_cfg.max_iters == cfg.param_scheduler[0].end == 2000


# Old names of the demo configs, kept for mmseg_sam 0.1.x: old path -> configs/demo/ name.
RENAMED = {
    'sam_lora/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py': 'sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py',
    'sam_lora/sam-vit-b_lora-qv-r4_1k_demo-binary-256x256.py': 'sam-vit-b_lora-qv-r4_1k_demo-binary-256x256.py',
    'sam_lora/sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py': (
        'sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py'
    ),
    'sam_lora/sam-vit-small_lora-qv-r4_2k_demo-multiclass-hue-128x128.py': (
        'sam-vit-small_lora-qv-r4_2k_demo-multiclass-hue-128x128.py'
    ),
    'sam_mask_cls/sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py': (
        'sam-vit-small-maskcls_lora-qv-r4_1k_demo-multiclass-128x128.py'
    ),
    'sam_mask_cls/sam-vit-small_lora-qv-r4_2k_demo-multiclass-hue-128x128.py': (
        'sam-vit-small-maskcls_lora-qv-r4_2k_demo-multiclass-hue-128x128.py'
    ),
}


def test_old_config_folders_hold_only_the_renamed_configs():
    old = {
        f'{p.parent.name}/{p.name}'
        for folder in ('sam_lora', 'sam_mask_cls')
        for p in (REPO / 'configs' / folder).glob('*.py')
    }
    assert old == set(RENAMED)


@pytest.mark.parametrize('old', sorted(RENAMED))
def test_old_config_name_resolves_to_its_new_name_and_warns(old):
    new = REPO / 'configs/demo' / RENAMED[old]
    with pytest.warns(FutureWarning, match=f'configs/{old} is renamed configs/demo/{RENAMED[old]}'):
        forwarded = Config.fromfile(REPO / 'configs' / old)
    assert forwarded.to_dict() == Config.fromfile(new).to_dict()
