"""SAM 2 through the real tools: train from an official-layout SAM 2.1 checkpoint, then test its checkpoint."""

import pytest
import torch

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import run_tool, write_train_config
from tests.models.sam2_fixtures import TINY_SAM2_ARCH, official_checkpoint


@pytest.mark.slow
def test_train_from_official_sam2_checkpoint_then_test(tmp_path):
    data = tmp_path / 'data'
    generate_synthetic_dataset(data, num_train=2, num_val=2, img_size=64, mode='binary')
    sam2 = tmp_path / 'sam2.1_tiny.pt'
    official_checkpoint(sam2)
    cfg = write_train_config(
        tmp_path / 'sam2_lora.py',
        'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py',
        data,
        f'sam_checkpoint={str(sam2)!r}, backbone=dict(arch={TINY_SAM2_ARCH!r}), '
        'decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64)',
        iters=2,
    )
    assert not run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'work')
    saved = torch.load(tmp_path / 'work/iter_2.pth', map_location='cpu', weights_only=False)
    keys = set(saved['state_dict'])
    # trainable-only: LoRA and the head are saved, the frozen SAM 2.1 encoder comes from sam_checkpoint
    assert any('lora_A' in k for k in keys) and 'decode_head.no_mem_embed' in keys
    assert not any(k.startswith('backbone.trunk.') and 'lora_' not in k for k in keys)
    assert saved['meta']['mmseg_sam']['sam_checkpoints'] == [str(sam2)]
    assert not run_tool(
        'tools/test.py',
        cfg,
        tmp_path / 'work/iter_2.pth',
        '--work-dir',
        tmp_path / 'test',
        '--out',
        tmp_path / 'preds',
    )
    assert len(list((tmp_path / 'preds').glob('*.png'))) == 2
