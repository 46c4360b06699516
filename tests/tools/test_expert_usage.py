"""tools/analysis_tools/expert_usage.py on a tiny Conv-LoRA model and a generated dataset."""

import json
from pathlib import Path

import matplotlib.image
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import REPO, load_tool
from tests.tools.sam2_tool_configs import sam2_trained

DEMO_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
tool = load_tool('tools/analysis_tools/expert_usage.py', 'expert_usage_tool')

# The tiny arch's 64x64 input is a 4x4 token grid; window 3 pads it to 6x6: 4 windows.
WINDOWS_PER_IMAGE = 4


def _config(tmp_path: Path, data_root: Path, checkpoint: Path, peft: dict) -> Path:
    cfg = tmp_path / 'tiny_conv_lora.py'
    cfg.write_text(f"""
_base_ = [{str(DEMO_CONFIG)!r}]
data_root = {str(data_root)!r}
model = dict(
    sam_checkpoint={str(checkpoint)!r},
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, global_attn_indexes=(1,),
                            window_size=3, out_channels=32), img_size=64, peft=dict(_delete_=True, **{peft!r})),
    decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64))
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
""")
    return cfg


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / 'data'
    generate_synthetic_dataset(root, num_train=2, num_val=2, img_size=64)
    return root


def _checkpoint(tmp_path: Path, cfg: Path) -> Path:
    """A full checkpoint whose gates are random, so that routing spreads over the experts."""
    torch.manual_seed(0)
    model = MODELS.build(tool.Config.fromfile(cfg).model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('gate.w_gate'):
                p.normal_(std=3.0)
    path = tmp_path / 'conv_lora.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return path


@pytest.mark.parametrize('max_images', [None, 1])
def test_counts_heatmap_and_json(tmp_path, data_root, sam_checkpoint, max_images, capsys):
    cfg = _config(tmp_path, data_root, sam_checkpoint, dict(type='ConvLoRA', num_experts=3))
    ckpt = _checkpoint(tmp_path, cfg)
    png, js = tmp_path / 'out/usage.png', tmp_path / 'out/usage.json'
    extra = [] if max_images is None else ['--max-images', str(max_images)]
    assert tool.main([str(cfg), str(ckpt), '--out-png', str(png), '--out-json', str(js), *extra]) == 0
    images = 2 if max_images is None else max_images
    assert f'{images} images, 2 Conv-LoRA layers' in capsys.readouterr().out

    report = json.loads(js.read_text())
    assert report['num_images'] == images and report['split'] == 'val'
    windowed, global_ = report['layers']
    assert (windowed['name'], windowed['attention'], windowed['routed_per']) == (
        'backbone.blocks.0.attn.qkv',
        'windowed',
        'window',
    )
    assert (global_['name'], global_['attention'], global_['routed_per']) == (
        'backbone.blocks.1.attn.qkv',
        'global',
        'image',
    )
    assert windowed['decisions'] == sum(windowed['counts']) == images * WINDOWS_PER_IMAGE
    assert global_['decisions'] == sum(global_['counts']) == images
    for layer in report['layers']:
        assert len(layer['counts']) == len(layer['fractions']) == 3 and layer['scales'] == [1.0, 2.0, 3.0]
        assert sum(layer['fractions']) == pytest.approx(1.0)
    if max_images is None:
        assert sum(c > 0 for c in windowed['counts']) > 1  # the gates do spread the windows

    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    pixels = matplotlib.image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_model_without_conv_lora_is_refused(tmp_path, data_root, sam_checkpoint, capsys):
    cfg = _config(tmp_path, data_root, sam_checkpoint, dict(type='LoRA', rank=2))
    torch.manual_seed(0)
    model = MODELS.build(tool.Config.fromfile(cfg).model)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'lora.pth')
    png = tmp_path / 'usage.png'
    assert tool.main([str(cfg), str(tmp_path / 'lora.pth'), '--out-png', str(png)]) == 1
    err = capsys.readouterr().err
    assert 'error: SAMEncoderDecoder has no Conv-LoRA layer (ConvLoRALinear)' in err, err
    assert not png.exists()


@pytest.mark.slow
def test_sam2_hiera_blocks(tmp_path, capsys):
    """Conv-LoRA in a tiny Hiera: layers under trunk.blocks, routing per window or per image as each block attends."""
    root = tmp_path / 'data'
    generate_synthetic_dataset(root, num_train=1, num_val=2, img_size=128)
    run = sam2_trained(tmp_path, dict(type='ConvLoRA', num_experts=3), data_root=root, std=0.1)
    js = tmp_path / 'usage.json'
    argv = [str(run.cfg), str(run.checkpoint), '--out-json', str(js), '--out-png', str(tmp_path / 'u.png')]
    assert tool.main(argv) == 0
    assert '2 images, 6 Conv-LoRA layers' in capsys.readouterr().out
    layers = json.loads(js.read_text())['layers']
    assert [layer['name'] for layer in layers] == [f'backbone.trunk.blocks.{i}.attn.qkv' for i in range(6)]
    # The demo pipeline feeds 128x128: 32x32 tokens after the stride-4 patch embedding. A block
    # attends in windows of its own window_size on its input grid (pooling blocks: the previous
    # stage's grid and window); block 4 is global.
    grid, windows = [32, 32, 16, 16, 8, 8], [4, 4, 2, 2, 0, 2]
    for layer, size, window in zip(layers, grid, windows, strict=True):
        if window:
            assert (layer['attention'], layer['routed_per']) == ('windowed', 'window')
            assert layer['decisions'] == 2 * (size // window) ** 2, layer
        else:
            assert (layer['attention'], layer['routed_per'], layer['decisions']) == ('global', 'image', 2)
    counts = [layer['counts'] for layer in layers]
    assert any(sum(c > 0 for c in row) > 1 for row in counts), counts  # the gates spread the routing
