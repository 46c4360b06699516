"""SAM2Hiera: equal to sam2's own image encoder, official and Hugging Face weights, bad input."""

import pytest
import torch
from hydra import compose
from hydra.utils import instantiate

from mmseg_sam.models.backbones import SAM2_ARCHS, SAM2Hiera
from mmseg_sam.utils.sam2_checkpoint import hf_to_sam2_state_dict, load_sam2_component

from .sam2_fixtures import TINY_SAM2_ARCH, hf_sam2_model, official_checkpoint, randomize, sam2_image_encoder

# Registry name -> the sam2 package's own config of that size.
_OFFICIAL_CONFIGS = {
    'tiny': 'sam2.1_hiera_t',
    'small': 'sam2.1_hiera_s',
    'base_plus': 'sam2.1_hiera_b+',
    'large': 'sam2.1_hiera_l',
}


@pytest.mark.parametrize('size', [(64, 64), (96, 64), (64, 160)])
def test_outputs_and_gradients_equal_sam2_image_encoder(size):
    """Same random weights: SAM2Hiera's FPN levels equal sam2's ImageEncoder's backbone_fpn (fp32)."""
    reference = randomize(sam2_image_encoder())
    model = SAM2Hiera(TINY_SAM2_ARCH, frozen=False)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    x_ref = x.clone().requires_grad_(True)
    x_ours = x.clone().requires_grad_(True)
    expected = reference(x_ref)['backbone_fpn']
    got = model(x_ours)
    assert len(got) == 3 and model.strides == (4, 8, 16)
    for level, (a, b, stride) in enumerate(zip(got, expected, model.strides, strict=True)):
        assert a.shape == (2, 32, size[0] // stride, size[1] // stride), level
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    weights = [torch.randn_like(o) for o in got]
    sum((o * w).sum() for o, w in zip(got, weights, strict=True)).backward()
    sum((o * w).sum() for o, w in zip(expected, weights, strict=True)).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    ref_grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        if ref_grads[name].grad is None:  # the dropped stride-32 FPN conv gets none in sam2 either
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize('arch', sorted(SAM2_ARCHS))
def test_official_sizes_have_the_official_parameter_names_and_shapes(arch):
    """Each size's state dict equals what sam2's own SAM 2.1 config builds (the checkpoints' key list)."""
    reference = instantiate(
        compose(config_name=f'configs/sam2.1/{_OFFICIAL_CONFIGS[arch]}.yaml').model.image_encoder
    )
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in SAM2Hiera(arch).state_dict().items()}
    assert got == expected


def test_official_and_hugging_face_checkpoints_load_strictly_and_agree(tmp_path):
    """An HF Sam2Model folder and the same weights in the official layout give the same outputs,
    and both equal HF's own vision encoder."""
    hf = hf_sam2_model()
    folder = tmp_path / 'hf'
    hf.save_pretrained(folder)
    official = {'model': hf_to_sam2_state_dict(hf.state_dict())}
    official['model']['maskmem_tpos_enc'] = torch.zeros(7, 1, 1, 16)  # video-only tensor: ignored
    torch.save(official, tmp_path / 'sam2.1_tiny.pt')

    from_hf = SAM2Hiera(TINY_SAM2_ARCH, checkpoint=str(folder)).eval()
    from_official = SAM2Hiera(TINY_SAM2_ARCH, checkpoint=str(tmp_path / 'sam2.1_tiny.pt')).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = from_hf(x), from_official(x)
        expected = hf.vision_encoder(x).fpn_hidden_states
    for ours, other, theirs in zip(a, b, expected, strict=True):
        torch.testing.assert_close(ours, other, atol=0, rtol=0)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_hugging_face_decoder_names_map_onto_sam2_modules():
    """Every HF tensor maps to a sam2 name with the same shape; nothing is left over or missing."""
    from .sam2_fixtures import sam2_heads

    converted = hf_to_sam2_state_dict(hf_sam2_model().state_dict())
    prompt_encoder, decoder = sam2_heads()
    for prefix, module in (('sam_prompt_encoder.', prompt_encoder), ('sam_mask_decoder.', decoder)):
        part = {k[len(prefix) :]: tuple(v.shape) for k, v in converted.items() if k.startswith(prefix)}
        assert part == {k: tuple(v.shape) for k, v in module.state_dict().items()}, prefix
    assert converted['no_mem_embed'].shape == (1, 1, 32)


def test_official_checkpoint_components(tmp_path):
    state = official_checkpoint(tmp_path / 'sam2.pt')
    encoder = load_sam2_component(tmp_path / 'sam2.pt', 'image_encoder')
    assert set(encoder) == {k[len('image_encoder.') :] for k in state if k.startswith('image_encoder.')}
    assert torch.equal(
        load_sam2_component(tmp_path / 'sam2.pt', 'no_mem_embed')['no_mem_embed'], state['no_mem_embed']
    )
    model = SAM2Hiera(TINY_SAM2_ARCH, checkpoint=str(tmp_path / 'sam2.pt'))
    assert all(not p.requires_grad for p in model.parameters())  # frozen by default
    torch.testing.assert_close(model.trunk.pos_embed, state['image_encoder.trunk.pos_embed'])


def test_bad_checkpoints_are_named(tmp_path):
    torch.save({'image_encoder.blocks.0.attn.qkv.weight': torch.zeros(3, 1)}, tmp_path / 'sam1.pth')
    with pytest.raises(ValueError, match='SAM 1 ViT checkpoint: use it with SAMViT'):
        SAM2Hiera(TINY_SAM2_ARCH, checkpoint=str(tmp_path / 'sam1.pth'))
    official_checkpoint(tmp_path / 'sam2.pt')
    with pytest.raises(ValueError, match='cannot load .* into SAM2Hiera'):
        SAM2Hiera({**TINY_SAM2_ARCH, 'stages': (1, 2, 3, 1)}, checkpoint=str(tmp_path / 'sam2.pt'))


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        (dict(arch='huge'), ValueError, r"arch must be one of \['base_plus', 'large', 'small', 'tiny'\]"),
        (dict(arch={**TINY_SAM2_ARCH, 'depth': 3}), ValueError, r"unknown arch keys \['depth'\]"),
        (dict(arch={'embed_dims': 16}), ValueError, 'custom arch is missing'),
        (dict(arch={**TINY_SAM2_ARCH, 'stages': (1, 2, 2)}), ValueError, 'stages must be 4 positive ints'),
        (
            dict(arch={**TINY_SAM2_ARCH, 'global_att_blocks': (9,)}),
            ValueError,
            r'global_att_blocks \[9\] out of range',
        ),
        (dict(arch=TINY_SAM2_ARCH, with_cp=1), TypeError, 'with_cp must be a bool'),
        (dict(arch=TINY_SAM2_ARCH, drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\)'),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SAM2Hiera(**kwargs)


def test_input_size_must_fit_the_strides():
    model = SAM2Hiera(TINY_SAM2_ARCH)
    assert model.size_divisor == 32
    with pytest.raises(ValueError, match='input size 80x64 is not a multiple of 32'):
        model(torch.randn(1, 3, 80, 64))


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = SAM2Hiera(TINY_SAM2_ARCH, frozen=False, drop_path_rate=0.0)
    randomize(plain)
    cp = SAM2Hiera(TINY_SAM2_ARCH, frozen=False, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for model in (plain, cp):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), cp.named_parameters(), strict=True):
        if a.grad is None:
            assert b.grad is None, name
        else:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_with_cp_set_after_building_reaches_every_block():
    model = SAM2Hiera(TINY_SAM2_ARCH)
    assert model.with_cp is False
    model.with_cp = True
    assert all(b.with_cp is True for b in model.blocks) and model.with_cp is True
    model.blocks[0].with_cp = False
    assert model.with_cp == 'mixed'
    with pytest.raises(TypeError, match="with_cp must be a bool, got 'selective'"):
        model.with_cp = 'selective'


def test_builds_on_the_meta_device():
    """Shape-only builds (parameter counts, memory estimates) work despite Hiera's .item() on drop-path rates."""
    with torch.device('meta'):
        meta = SAM2Hiera('large', drop_path_rate=0.1, peft=dict(type='LoRA', rank=4))
    assert all(p.is_meta for p in meta.parameters())
    assert (
        sum(p.numel() for p in meta.parameters()) == 212_703_280 + meta.peft_report.total
    )  # sam2.1_hiera_large + LoRA
    assert meta.trunk.blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
