"""tools/train.py then tools/test.py in subprocesses, on generated data, tiny SAM."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import REPO

DEMO_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'


def _tiny_config(tmp_path: Path, data_root: Path, checkpoint: Path) -> Path:
    cfg = tmp_path / 'tiny_e2e.py'
    cfg.write_text(f"""
_base_ = [{str(DEMO_CONFIG)!r}]
data_root = {str(data_root)!r}
model = dict(
    sam_checkpoint={str(checkpoint)!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, global_attn_indexes=(1,),
                            window_size=3, out_channels=32), img_size=64),
    decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64))
pipeline_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=pipeline_size, keep_ratio=False), dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=pipeline_size, keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=4, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
""")
    return cfg


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_then_test(tmp_path, sam_checkpoint):
    data = tmp_path / 'data'
    generate_synthetic_dataset(data, num_train=4, num_val=2, img_size=(64, 80), mode='binary')
    cfg = _tiny_config(tmp_path, data, sam_checkpoint)
    work = tmp_path / 'work'

    log = _run([str(REPO / 'tools/train.py'), str(cfg), '--work-dir', str(work)], cwd=tmp_path)
    ckpt = work / 'iter_4.pth'
    assert ckpt.is_file()
    assert 'SAMViT: loaded image encoder weights from' in log
    assert 'backbone (LoRA)' in log and 'decode_head' in log  # the parameter table
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    state = saved['state_dict']
    assert 'backbone.blocks.0.attn.qkv.lora_A.q.weight' in state
    # trainable-only: the frozen SAM weights come from model.sam_checkpoint
    assert 'backbone.blocks.0.attn.qkv.weight' not in state
    assert saved['meta']['mmseg_sam']['trainable_only']

    out, show = tmp_path / 'pred', tmp_path / 'show'
    log = _run(
        [
            str(REPO / 'tools/test.py'),
            str(cfg),
            str(ckpt),
            '--work-dir',
            str(tmp_path / 'test'),
            '--out',
            str(out),
            '--show-dir',
            str(show),
        ],
        cwd=tmp_path,
    )
    assert 'mIoU' in log
    [scalars] = list((tmp_path / 'test').glob('*/*.json'))
    metrics = json.loads(scalars.read_text().splitlines()[-1])
    assert {'aAcc', 'mIoU', 'mDice'} <= set(metrics)
    preds = sorted(out.glob('*.png'))
    assert len(preds) == 2
    pred = np.array(Image.open(preds[0]))
    assert pred.shape == (64, 80) and set(np.unique(pred)) <= {0, 1}  # original image size
    assert len(list(show.rglob('*.png'))) == 2

    # --tta without a tta_pipeline in the config: flip TTA derived from the test pipeline,
    # merged by SAMSegTTAModel (the default_runtime's tta_model)
    log = _run(
        [str(REPO / 'tools/test.py'), str(cfg), str(ckpt), '--work-dir', str(tmp_path / 'tta'), '--tta'],
        cwd=tmp_path,
    )
    assert "type='TestTimeAug'" in log and "type='SAMSegTTAModel'" in log  # the dumped config
    [scalars] = list((tmp_path / 'tta').glob('*/*.json'))
    metrics = json.loads(scalars.read_text().splitlines()[-1])
    assert 0 <= metrics['mIoU'] <= 100


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_help(tool):
    out = _run([str(REPO / 'tools' / tool), '--help'], cwd=REPO)
    for flag in ('--work-dir', '--cfg-options', '--launcher'):
        assert flag in out


@pytest.mark.slow
def test_mmseg_own_train_tool_uses_custom_imports(tmp_path, sam_checkpoint):
    """mmseg's tools/train.py knows nothing of mmseg_sam: the config's custom_imports do it."""
    import mmseg

    data = tmp_path / 'data'
    generate_synthetic_dataset(data, num_train=2, num_val=1, img_size=64, mode='binary')
    cfg = _tiny_config(tmp_path, data, sam_checkpoint)
    mmseg_train = Path(mmseg.__file__).parent / '.mim/tools/train.py'
    options = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2']
    _run(
        [str(mmseg_train), str(cfg), '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options],
        cwd=tmp_path,
    )
    assert (tmp_path / 'work/iter_2.pth').is_file()


@pytest.mark.slow
def test_resume_from_a_trainable_only_checkpoint(tmp_path, sam_checkpoint):
    data = tmp_path / 'data'
    generate_synthetic_dataset(data, num_train=2, num_val=1, img_size=64, mode='binary')
    cfg = _tiny_config(tmp_path, data, sam_checkpoint)
    work = tmp_path / 'work'
    first = ['train_cfg.max_iters=2', 'train_cfg.val_interval=10', 'default_hooks.checkpoint.interval=2']
    _run(
        [str(REPO / 'tools/train.py'), str(cfg), '--work-dir', str(work), '--cfg-options', *first],
        cwd=tmp_path,
    )
    assert (work / 'iter_2.pth').is_file()
    log = _run([str(REPO / 'tools/train.py'), str(cfg), '--work-dir', str(work), '--resume'], cwd=tmp_path)
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'keep the weights loaded from' in log
    assert (work / 'iter_4.pth').is_file()
