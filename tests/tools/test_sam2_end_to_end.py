"""SAM 2 through the real tools: train from an official-layout SAM 2.1 checkpoint, then test its checkpoint."""

import importlib.util
from pathlib import Path

import torch

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.models.sam2_fixtures import TINY_SAM2_ARCH, official_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _tool(path: str, *argv) -> int:
    spec = importlib.util.spec_from_file_location(f'tool_{Path(path).stem}', REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def test_train_from_official_sam2_checkpoint_then_test(tmp_path):
    data = tmp_path / 'data'
    generate_synthetic_dataset(data, num_train=2, num_val=2, img_size=64, mode='binary')
    sam2 = tmp_path / 'sam2.1_tiny.pt'
    official_checkpoint(sam2)
    cfg = tmp_path / 'sam2_lora.py'
    cfg.write_text(f"""
_base_ = [{str(REPO / 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py')!r}]
data_root = {str(data)!r}
model = dict(
    sam_checkpoint={str(sam2)!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch={TINY_SAM2_ARCH!r}),
    decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=2, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")
    assert not _tool('tools/train.py', cfg, '--work-dir', tmp_path / 'work')
    saved = torch.load(tmp_path / 'work/iter_2.pth', map_location='cpu', weights_only=False)
    keys = set(saved['state_dict'])
    # trainable-only: LoRA and the head are saved, the frozen SAM 2.1 encoder comes from sam_checkpoint
    assert any('lora_A' in k for k in keys) and 'decode_head.no_mem_embed' in keys
    assert not any(k.startswith('backbone.trunk.') and 'lora_' not in k for k in keys)
    assert saved['meta']['mmseg_sam']['sam_checkpoints'] == [str(sam2)]
    assert not _tool(
        'tools/test.py',
        cfg,
        tmp_path / 'work/iter_2.pth',
        '--work-dir',
        tmp_path / 'test',
        '--out',
        tmp_path / 'preds',
    )
    assert len(list((tmp_path / 'preds').glob('*.png'))) == 2
