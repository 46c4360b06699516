import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmseg_sam.models.backbones import SAMAttention, SAMViT
from mmseg_sam.models.backbones.sam_vit import resize_pos_embed
from mmseg_sam.models.sam_modeling import ImageEncoderViT
from tests.conftest import TINY_IMG, perturb_


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_tiny_equals_segment_anything(reference_sam, sam_checkpoint, tiny_arch):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(sam_checkpoint)).eval()
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        ours = model(x)[-1]
        ref = reference_sam.image_encoder(x)
    assert ours.shape == (2, 32, 4, 4)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert _n_params(model) == _n_params(reference_sam.image_encoder)


@pytest.mark.slow
def test_vit_b_equals_segment_anything(tmp_path):
    """Official ViT-B sizes (at 256 px to stay fast), encoder-only checkpoint format."""
    torch.manual_seed(0)
    ref = ImageEncoderViT(
        img_size=256,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
    ).eval()
    perturb_(ref, std=0.02)
    path = tmp_path / 'encoder.pth'
    torch.save(ref.state_dict(), path)
    model = SAMViT(arch='vit_b', img_size=256, checkpoint=str(path)).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        diff = (model(x)[-1] - ref(x)).abs().max().item()
    assert diff <= 1e-5
    assert _n_params(model) == _n_params(ref)


@pytest.mark.parametrize(
    'arch, dims, depth, heads, glob',
    [
        ('vit_b', 768, 12, 12, (2, 5, 8, 11)),
    ],
)
def test_official_parameter_counts(arch, dims, depth, heads, glob):
    ref = ImageEncoderViT(
        img_size=1024,
        patch_size=16,
        embed_dim=dims,
        depth=depth,
        num_heads=heads,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=glob,
    )
    assert _n_params(SAMViT(arch=arch)) == _n_params(ref)


@pytest.mark.parametrize('hw', [(64, 64), (96, 64), (32, 80)])
def test_any_input_size(tiny_arch, hw):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, out_indices=(0, 1)).eval()
    outs = model(torch.randn(1, 3, *hw))
    h, w = hw[0] // 16, hw[1] // 16
    assert [tuple(o.shape) for o in outs] == [(1, 32, h, w), (1, 32, h, w), (1, 32, h, w)]


def test_other_input_size_uses_resized_pos_embed(tiny_arch):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG).eval()
    with torch.no_grad():
        model.pos_embed.normal_()
    resized = resize_pos_embed(model.pos_embed, (6, 4))
    expected = F.interpolate(
        model.pos_embed.permute(0, 3, 1, 2), size=(6, 4), mode='bicubic', align_corners=False
    ).permute(0, 2, 3, 1)
    assert torch.allclose(resized, expected)
    assert torch.equal(model._pos_embed_for((4, 4)), model.pos_embed)


def test_input_not_divisible_by_patch(tiny_arch):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG)
    with pytest.raises(ValueError, match='70x64 is not divisible by the patch size 16'):
        model(torch.randn(1, 3, 70, 64))


def test_img_size_resizes_tables_on_load(reference_sam, sam_checkpoint, tiny_arch):
    model = SAMViT(arch=tiny_arch, img_size=96, checkpoint=str(sam_checkpoint))  # 6x6 grid
    src = reference_sam.image_encoder
    assert model.pos_embed.shape == (1, 6, 6, 32)
    assert torch.allclose(model.pos_embed, resize_pos_embed(src.pos_embed, (6, 6)))
    # global block 1: (2*4-1) -> (2*6-1) rows, linear like segment_anything's get_rel_pos
    expected = F.interpolate(src.blocks[1].attn.rel_pos_h.t()[None], size=11, mode='linear')[0].t()
    assert torch.allclose(model.blocks[1].attn.rel_pos_h, expected)
    # windowed block 0: tables depend on the window (3 -> 5 rows) and load unchanged
    assert torch.equal(model.blocks[0].attn.rel_pos_w, src.blocks[0].attn.rel_pos_w)
    assert model(torch.randn(1, 3, 96, 96))[-1].shape == (1, 32, 6, 6)


def test_frozen_by_default_and_full_finetune(tiny_arch):
    frozen = SAMViT(arch=tiny_arch, img_size=TINY_IMG)
    assert not any(p.requires_grad for p in frozen.parameters())
    full = SAMViT(arch=tiny_arch, img_size=TINY_IMG, frozen=False)
    assert all(p.requires_grad for p in full.parameters())


@pytest.mark.parametrize('attn_impl, with_cp', [('auto', False), ('eager', True), ('folded', True)])
def test_state_dict_keys_are_sams(reference_sam, tiny_arch, attn_impl, with_cp):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, attn_impl=attn_impl, with_cp=with_cp)
    assert set(model.state_dict()) == set(reference_sam.image_encoder.state_dict())
    assert all(type(block.attn) is SAMAttention for block in model.blocks)
    assert all(block.attn.attn_impl != 'auto' and block.with_cp == with_cp for block in model.blocks)


def test_missing_and_unexpected_keys_are_named(reference_sam, tmp_path, tiny_arch):
    state = reference_sam.state_dict()
    del state['image_encoder.blocks.1.attn.rel_pos_h']
    state['image_encoder.blocks.7.mlp.lin1.weight'] = torch.zeros(1)
    path = tmp_path / 'broken.pth'
    torch.save(state, path)
    with pytest.raises(ValueError, match=r'missing keys \(1\): blocks\.1\.attn\.rel_pos_h') as info:
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(path))
    assert 'unexpected keys (1): blocks.7.mlp.lin1.weight' in str(info.value)


def test_checkpoint_of_another_arch(sam_checkpoint, tiny_arch):
    tiny_arch['embed_dims'] = 64
    with pytest.raises(ValueError, match='size mismatch'):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(sam_checkpoint))


@pytest.mark.parametrize(
    'arch, message',
    [
        ('vit_x', r"arch must be one of \['vit_b', 'vit_h', 'vit_l'\]"),
        (dict(embed_dims=32, num_layers=2), r"custom arch is missing \['num_heads'\]"),
        (dict(embed_dims=32, num_layers=2, num_heads=3), 'not divisible by num_heads=3'),
        (dict(embed_dims=32, num_layers=2, num_heads=2, depth=3), r"unknown arch keys \['depth'\]"),
        (dict(embed_dims=32, num_layers=2, num_heads=2, global_attn_indexes=(5,)), r'\[5\] out of range'),
    ],
)
def test_bad_arch(arch, message):
    with pytest.raises(ValueError, match=message):
        SAMViT(arch=arch, img_size=TINY_IMG)


def test_bad_img_size(tiny_arch):
    with pytest.raises(
        ValueError, match='img_size must be a positive multiple of the patch size 16, got 100'
    ):
        SAMViT(arch=tiny_arch, img_size=100)


@pytest.mark.slow
@pytest.mark.parametrize('torchvision_works', [False, True])
def test_segment_anything_import_with_and_without_torchvision(tmp_path, torchvision_works):
    """segment_anything's package init needs torchvision; the modeling code must not."""
    stub = tmp_path / 'torchvision'
    (stub / 'transforms').mkdir(parents=True)
    (stub / '__init__.py').write_text(
        '' if torchvision_works else 'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    (stub / 'transforms' / '__init__.py').write_text('')
    (stub / 'transforms' / 'functional.py').write_text('def resize(*a): pass\ndef to_pil_image(*a): pass\n')
    (stub / 'ops').mkdir()
    (stub / 'ops' / '__init__.py').write_text('')
    (stub / 'ops' / 'boxes.py').write_text('def batched_nms(*a): pass\ndef box_area(*a): pass\n')
    code = textwrap.dedent(f"""
        import sys, warnings
        sys.path.insert(0, {str(tmp_path)!r})
        warnings.simplefilter('ignore')
        from mmseg_sam.models import sam_modeling
        print(sam_modeling.SAM_PACKAGE_INIT_LOADED, sam_modeling.ImageEncoderViT.__module__)
        import segment_anything
        print(hasattr(segment_anything, 'SamPredictor'))
    """)
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(torchvision_works), 'segment_anything.modeling.image_encoder', str(torchvision_works)]
