"""The Conv-LoRA experiment grid in configs/: complete, trained as the reference, and runnable.

Every config under configs/ (except _base_) is loaded, built with the tiny SAM swapped in and
trained for one step on a random 64x64 batch. The grid configs (one folder per method, one
file per benchmark) are also checked against the reference settings tabulated below (the
benchmarks, written out from the specs) and the PEFT presets of the package (the methods).
"""

import copy
import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_sam  # noqa: F401
from mmseg_sam.models.peft.presets import grid_presets
from tests.conftest import REPO, TINY_ARCH, TINY_HEAD, fast_sample, load_tool, tiny_model_cfg

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
BENCHMARK_BASES = sorted((REPO / 'configs/_base_/benchmarks').glob('*.py'))

_download = load_tool('tools/download_sam_checkpoint.py', 'download_sam_checkpoint')
SAM_CHECKPOINTS = _download.SAM_CHECKPOINTS


class Benchmark(NamedTuple):
    base: str  # configs/_base_/benchmarks/<base>_1024x1024.py (and the dataset base of that name)
    num_train_images: int
    epochs: int
    lr: float
    evaluator: str
    loss: str
    num_classes: int


_STRUCTURE = 'StructureLoss'
_BBCE = 'BalancedBCELoss'
_MASKCLS = 'MaskClassificationLoss'
# Conv-LoRA reference: 30 epochs (20 camouflage and roads, 10 shadows), lr 1e-4 (3e-4 leaf
# disease and roads), structure loss for binary benchmarks except balanced BCE for shadows,
# mask classification for multi-class. Keys are the benchmark names used in file names.
BENCHMARKS = {
    'camouflage': Benchmark('camouflage', 3040 + 1000, 20, 1e-4, 'SODMetric', _STRUCTURE, 2),
    'sbu': Benchmark('sbu', 4089, 10, 1e-4, 'BERMetric', _BBCE, 2),
    'istd': Benchmark('istd', 1330, 10, 1e-4, 'BERMetric', _BBCE, 2),
    'polyp': Benchmark('polyp', 900 + 550, 30, 1e-4, 'SODMetric', _STRUCTURE, 2),
    'isic2017': Benchmark('isic2017', 2000, 30, 1e-4, 'BinaryIoUMetric', _STRUCTURE, 2),
    'leaf-disease': Benchmark('leaf_disease', 498, 30, 3e-4, 'BinaryIoUMetric', _STRUCTURE, 2),
    'massachusetts-roads': Benchmark('massachusetts_roads', 1108, 20, 3e-4, 'BinaryIoUMetric', _STRUCTURE, 2),
    'trans10k-v1': Benchmark('trans10k_v1', 5000, 30, 1e-4, 'IoUMetric', _MASKCLS, 3),
    'trans10k-v2': Benchmark('trans10k_v2', 5000, 30, 1e-4, 'IoUMetric', _MASKCLS, 12),
}
# Single-dataset polyp alternatives: a benchmark base each, no method config.
EXTRA_BENCHMARKS = {
    'kvasir': Benchmark('kvasir', 900, 30, 1e-4, 'SODMetric', _STRUCTURE, 2),
    'cvc-clinicdb': Benchmark('cvc_clinicdb', 550, 30, 1e-4, 'SODMetric', _STRUCTURE, 2),
}
LOSS_KEYS = {
    _STRUCTURE: {'decode.loss_structure'},
    _BBCE: {'decode.loss_balanced_bce'},
    _MASKCLS: {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice'},
}

# The grid's columns: the package's PEFT presets that name a grid token (one source of truth
# for the configs, count_parameters.py, benchmark.py and the tests).
GRID = grid_presets()  # (folder, method token of the file name) -> preset
GRID_FOLDERS = {folder for folder, _ in GRID}
GRID_NAME = re.compile(
    r'^sam-vit-h_(?P<method>[a-z0-9-]+)_(?P<epochs>\d+)e_(?P<bench>[a-z0-9-]+)-1024x1024\.py$'
)
GRID_CONFIGS = [p for p in CONFIGS if p.parent.name in GRID_FOLDERS]
H_CHECKPOINT = f'checkpoints/{SAM_CHECKPOINTS["vit_h"][0]}'


@cache
def _load(path: Path) -> Config:
    register_all_modules(init_default_scope=True)
    return Config.fromfile(path)


def _plain(value: Any) -> Any:
    """ConfigDicts and tuples -> dicts and lists, for equality with the tables above."""
    return json.loads(json.dumps(value.to_dict() if hasattr(value, 'to_dict') else value))


def _parse(path: Path) -> tuple[str, int, str]:
    match = GRID_NAME.match(path.name)
    assert match, f'{path.name} does not follow sam-vit-h_<method>_<epochs>e_<benchmark>-1024x1024.py'
    return match['method'], int(match['epochs']), match['bench']


def _check_schedule(cfg: Config, bench: Benchmark) -> None:
    iters_per_epoch = math.ceil(bench.num_train_images / 4)
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == iters_per_epoch * bench.epochs
    assert cfg.train_cfg.val_interval == iters_per_epoch
    assert cfg.default_hooks.checkpoint.interval == iters_per_epoch
    optim = cfg.optim_wrapper
    assert optim.type == 'OptimWrapper'  # fp16 AMP comes from `tools/train.py --amp`
    assert _plain(optim.optimizer) == dict(
        type='AdamW', lr=bench.lr, betas=[0.9, 0.999], eps=1e-6, weight_decay=1e-4
    )
    assert _plain(optim.clip_grad) == dict(max_norm=1.0, norm_type=2)
    assert optim.paramwise_cfg.bias_decay_mult == 0.0 and optim.paramwise_cfg.norm_decay_mult == 0.0
    # one scheduler (no warm-up): linear decay to 0 at the last iteration (an absent end is
    # set to max_iters by MMEngine's runner)
    [scheduler] = cfg.param_scheduler
    assert scheduler.type == 'PolyLR' and scheduler.power == 1.0 and scheduler.eta_min == 0.0
    assert scheduler.begin == 0 and scheduler.by_epoch is False
    assert scheduler.get('end', cfg.train_cfg.max_iters) == cfg.train_cfg.max_iters
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == bench.evaluator
    head = cfg.model.decode_head
    assert head.num_classes == bench.num_classes
    assert head.loss_decode.type == bench.loss
    if bench.loss == _STRUCTURE:
        assert head.loss_decode.weighted_bce is False  # the reference code's plain-mean BCE term
    if bench.loss == _MASKCLS:
        assert head.mode == 'mask_classification'
    else:
        assert head.out_channels == 1 and head.get('mode', 'per_class_tokens') != 'mask_classification'
    backbone = cfg.model.backbone
    assert backbone.arch == 'vit_h' and backbone.img_size == 1024 and backbone.frozen is True
    assert cfg.model.sam_checkpoint == H_CHECKPOINT
    assert cfg.custom_imports['imports'] == ['mmseg_sam']


def test_grid_is_complete():
    """One config per (method, benchmark) cell, nothing else in the method folders; one base per benchmark."""
    found = set()
    for path in GRID_CONFIGS:
        method, _, bench = _parse(path)
        found.add((path.parent.name, method, bench))
    expected = {(folder, method, bench) for folder, method in GRID for bench in BENCHMARKS}
    assert found == expected
    assert len(GRID_CONFIGS) == len(GRID) * len(BENCHMARKS)
    all_benchmarks = {**BENCHMARKS, **EXTRA_BENCHMARKS}.values()
    assert {p.name for p in BENCHMARK_BASES} == {f'{b.base}_1024x1024.py' for b in all_benchmarks}


@pytest.mark.slow
@pytest.mark.parametrize('path', BENCHMARK_BASES, ids=lambda p: p.name)
def test_benchmark_base_schedule(path):
    by_base = {b.base: b for b in {**BENCHMARKS, **EXTRA_BENCHMARKS}.values()}
    bench = by_base[path.name.removesuffix('_1024x1024.py')]
    cfg = _load(path)
    _check_schedule(cfg, bench)
    assert cfg.model.backbone.get('peft') is None  # decoder-only until a method config adds one


@pytest.mark.slow
@pytest.mark.parametrize('path', GRID_CONFIGS, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_grid_config_trains_as_the_reference(path):
    method, epochs, bench_name = _parse(path)
    bench = BENCHMARKS[bench_name]
    assert epochs == bench.epochs
    cfg = _load(path)
    _check_schedule(cfg, bench)
    item = GRID[path.parent.name, method]
    peft, lr_mult = _plain(item.peft), item.cobot_lr_mult
    assert _plain(cfg.model.backbone.get('peft')) == peft
    custom_keys = cfg.optim_wrapper.paramwise_cfg.get('custom_keys')
    assert _plain(custom_keys) == (None if lr_mult is None else {'cobot': {'lr_mult': lr_mult}})
    # Conv-LoRA's unrouted experts get no gradient: DDP must be told (docs/peft.md)
    assert cfg.get('find_unused_parameters', False) is ('ConvLoRA' in json.dumps(peft))
    # each method config inherits only its benchmark base: every shared setting lives there
    text = path.read_text()
    assert re.findall(r"_base_ = \['(.*)'\]", text) == [f'../_base_/benchmarks/{bench.base}_1024x1024.py']


@pytest.mark.slow
@pytest.mark.parametrize('size', ['l', 'h'])
@pytest.mark.parametrize('head', ['binary', 'maskcls', 'multiclass'])
def test_model_bases_differ_from_vit_b_by_encoder_and_checkpoint(size, head):
    models = REPO / 'configs/_base_/models'
    base = _load(models / f'sam-vit-b_mask-decoder-{head}.py').model.to_dict()
    model = _load(models / f'sam-vit-{size}_mask-decoder-{head}.py').model.to_dict()
    assert model.pop('sam_checkpoint') == f'checkpoints/{SAM_CHECKPOINTS[f"vit_{size}"][0]}'
    assert model['backbone'].pop('arch') == f'vit_{size}'
    base.pop('sam_checkpoint')
    base['backbone'].pop('arch')
    assert model == base


def _tiny_model_cfg(cfg: Config) -> dict:
    model_cfg = copy.deepcopy(cfg.model)
    prompted = model_cfg.decode_head.type in ('SAMPromptedHead', 'SAM2PromptedHead')
    if prompted or model_cfg.backbone.type == 'SAM2Hiera' or not model_cfg.backbone.get('with_neck', True):
        return tiny_model_cfg(model_cfg, img_size=64)  # SAM 2, or SAM's encoder under mmseg's heads
    model_cfg.sam_checkpoint = None
    model_cfg.backbone.arch = dict(TINY_ARCH)  # assignment, not ConfigDict.update (which merges)
    model_cfg.backbone.img_size = 64
    for k, v in TINY_HEAD.items():
        model_cfg.decode_head[k] = v
    model_cfg.data_preprocessor.size = (64, 64)
    return model_cfg


def _batch(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, list[SegDataSample]]:
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(2):
        # classes in 8x8 patches (so each class has a region), a few ignored pixels
        label = (
            torch.randint(num_classes, (1, 8, 8), generator=gen)
            .repeat_interleave(8, 1)
            .repeat_interleave(8, 2)
        )
        label[:, :2, :2] = 255
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=label)
        # two instances with their boxes and one point each, for the prompted configs
        masks = torch.zeros(2, 64, 64, dtype=torch.bool)
        masks[0, 8:40, 8:40], masks[1, 40:60, 30:62] = True, True
        sample.gt_instances = InstanceData(
            masks=masks,
            labels=torch.ones(2, dtype=torch.long),
            prompt_boxes=torch.tensor([[8.0, 8, 39, 39], [30, 40, 61, 59]]),
            prompt_points=torch.tensor([[[24.0, 24]], [[46, 50]]]),
            prompt_point_labels=torch.ones(2, 1, dtype=torch.long),
        )
        samples.append(sample)
    return torch.randn(2, 3, 64, 64, generator=gen), samples


_STEP_RESULTS: dict[str, set[str]] = {}  # signature of (model, optim_wrapper) -> loss names


def _train_step(model_cfg: dict, optim_cfg: dict, lr_mult: float | None) -> set[str]:
    """Build the model, check its optimizer groups, run loss + backward; return the loss names."""
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).train()
    backbone_trainable = {n: p for n, p in model.backbone.named_parameters() if p.requires_grad}
    if model_cfg['backbone'].get('peft') is None:
        assert not backbone_trainable, 'decoder-only: the encoder must stay frozen'
    else:
        assert backbone_trainable, 'a PEFT method must add or unfreeze encoder parameters'

    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(optim_cfg))
    base_lr = optim_cfg['optimizer']['lr']
    group_of = {id(p): g for g in optim_wrapper.param_groups for p in g['params']}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # (MMEngine's constructor also lists frozen tensors; without a gradient they never change)
    assert set(map(id, trainable.values())) <= set(group_of), 'every trainable parameter must be optimised'
    for name, p in trainable.items():
        group = group_of[id(p)]
        expected = base_lr * (lr_mult if lr_mult is not None and 'cobot' in name else 1.0)
        assert group['lr'] == pytest.approx(expected), name
        if name.endswith('.bias'):
            assert group['weight_decay'] == 0.0, name
    if lr_mult is not None:  # the custom key must reach C, S and the quaternion heads
        assert any('backbone.cobot.' in n for n in trainable) and any('cobot_head' in n for n in trainable)

    inputs, samples = _batch(model_cfg['decode_head']['num_classes'])
    losses = model(inputs, samples, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    total.backward()
    got_grad = [n for n, p in backbone_trainable.items() if p.grad is not None and p.grad.abs().sum() > 0]
    assert bool(got_grad) == bool(backbone_trainable), 'the PEFT parameters must get a gradient'
    head_grad = [p for p in model.decode_head.parameters() if p.requires_grad and p.grad is not None]
    assert head_grad, 'the mask decoder must train'
    return {k for k in losses if 'loss' in k}


# one config per folder in the fast tier
@pytest.mark.parametrize(
    'path', fast_sample(CONFIGS, lambda p: p.parent), ids=lambda p: f'{p.parent.name}/{p.name}'
)
def test_config_trains_one_step(path):
    """Each config's model (tiny encoder) runs a training step; one build per distinct model."""
    cfg = _load(path)
    model_cfg = _tiny_model_cfg(cfg).to_dict()
    optim_cfg = cfg.optim_wrapper.to_dict()
    custom_keys = optim_cfg.get('paramwise_cfg', {}).get('custom_keys', {})
    lr_mult = custom_keys['cobot']['lr_mult'] if 'cobot' in custom_keys else None
    signature = json.dumps([model_cfg, optim_cfg], sort_keys=True, default=str)
    if signature not in _STEP_RESULTS:
        _STEP_RESULTS[signature] = _train_step(model_cfg, optim_cfg, lr_mult)
    loss_names = _STEP_RESULTS[signature]
    if path in GRID_CONFIGS:
        expected = set(LOSS_KEYS[BENCHMARKS[_parse(path)[2]].loss])
        if 'ConvLoRA' in json.dumps(model_cfg['backbone'].get('peft')):
            expected.add('loss_moe')
        assert loss_names == expected
    else:
        assert loss_names


SAM2_GRID_NAME = re.compile(
    r'^sam2\.1-hiera-(?P<size>base-plus|large)_(?P<method>[a-z0-9-]+)_(?P<epochs>\d+)e_(?P<bench>[a-z0-9-]+)'
    r'-1024x1024\.py$'
)
SAM2_GRID_CONFIGS = sorted((REPO / 'configs/sam2').glob('*.py'))
SAM2_GRID_METHODS = ('decoder-only', 'lora-qkv-r3', 'conv-lora-r3', 'cobot-lora-qv-r4')
SAM2_CHECKPOINTS = {
    'base-plus': 'checkpoints/sam2.1_hiera_base_plus.pt',
    'large': 'checkpoints/sam2.1_hiera_large.pt',
}


def test_sam2_grid_is_complete():
    """SAM 2.1 Hiera base+ and large: one config per (method, benchmark) cell of the four methods."""
    found = {tuple(SAM2_GRID_NAME.match(p.name).group('size', 'method', 'bench')) for p in SAM2_GRID_CONFIGS}
    assert found == {(s, m, b) for s in SAM2_CHECKPOINTS for m in SAM2_GRID_METHODS for b in BENCHMARKS}
    assert len(SAM2_GRID_CONFIGS) == len(found)


@pytest.mark.parametrize('path', SAM2_GRID_CONFIGS, ids=lambda p: p.name)
def test_sam2_grid_config_is_the_vit_h_config_with_the_encoder_swapped(path):
    """Everything but the encoder, its checkpoint and the head type equals the ViT-H grid config of the
    same method and benchmark (which the tests above check against the reference)."""
    size, method, epochs, bench = SAM2_GRID_NAME.match(path.name).group('size', 'method', 'epochs', 'bench')
    [(folder, _)] = [key for key in GRID if key[1] == method]
    vit_h = _load(REPO / f'configs/{folder}/sam-vit-h_{method}_{epochs}e_{bench}-1024x1024.py').to_dict()
    cfg = _load(path).to_dict()
    backbone = cfg['model'].pop('backbone')
    assert backbone.pop('type') == 'SAM2Hiera' and backbone.pop('frozen') is True
    assert backbone.pop('arch') == size.replace('-', '_')
    assert backbone.pop('peft', None) == vit_h['model'].pop('backbone').get('peft')
    assert backbone == {}
    assert cfg['model'].pop('sam_checkpoint') == SAM2_CHECKPOINTS[size]
    vit_h['model'].pop('sam_checkpoint')
    assert cfg['model']['decode_head'].pop('type') == 'SAM2MaskDecoderHead'
    vit_h['model']['decode_head'].pop('type')
    cfg.pop('sam2')
    assert _plain(cfg) == _plain(vit_h)
