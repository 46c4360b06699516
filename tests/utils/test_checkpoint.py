import pickle
import re
from pathlib import Path

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.decode_heads import SAMMaskDecoderHead
from mmseg_sam.utils.checkpoint import (
    detect_format,
    frozen_fingerprint,
    hf_to_sam_state_dict,
    load_sam_component,
    load_state_dict_file,
    to_sam_state_dict,
)
from tests.conftest import (
    TINY_ARCH,
    TINY_HEAD,
    TINY_IMG,
    perturb_,
    tiny_prompted_cfg,
    tiny_segmentor,
    tiny_segmentor_cfg,
)
from tests.models.sam2_fixtures import hf_sam2_model, official_checkpoint


@pytest.fixture(scope='module')
def hf_sam():
    """A tiny Hugging Face SamModel with perturbed weights."""
    import transformers  # a dev requirement: a missing install must fail, not skip

    vision = transformers.SamVisionConfig(
        hidden_size=32,
        output_channels=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_IMG,
        patch_size=16,
        window_size=3,
        global_attn_indexes=[1],
        mlp_dim=128,
        num_pos_feats=16,
    )
    config = transformers.SamConfig(
        vision_config=vision,
        prompt_encoder_config=transformers.SamPromptEncoderConfig(
            hidden_size=32, image_size=TINY_IMG, patch_size=16, mask_input_channels=16
        ),
        mask_decoder_config=transformers.SamMaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    torch.manual_seed(0)
    model = transformers.SamModel(config).eval()
    perturb_(model, std=0.05)
    with torch.no_grad():  # HF keeps a top-level copy of the prompt encoder's matrix
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def test_hf_checkpoint_loads_and_matches_hf_encoder(hf_sam, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / 'model.safetensors'
    save_file({k: v.clone().contiguous() for k, v in hf_sam.state_dict().items()}, str(path))
    assert detect_format(load_state_dict_file(path)) == 'hf'
    encoder = SAMViT(arch=TINY_ARCH, img_size=TINY_IMG, checkpoint=str(tmp_path)).eval()  # HF folder
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        ref = hf_sam.get_image_embeddings(x)
        ours = encoder(x)[-1]
    assert (ours - ref).abs().max().item() <= 1e-5
    # the decoder and prompt encoder load strictly from the same file
    SAMMaskDecoderHead(
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        checkpoint=str(path),
        **TINY_HEAD,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
    )


def test_a_save_pretrained_folder_loads_into_encoder_head_and_segmentor(hf_sam, tmp_path):
    """What ``SamModel.save_pretrained`` itself writes: the tied matrix once, under its top-level name."""
    from mmseg.registry import MODELS
    from safetensors.torch import load_file

    hf_sam.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / 'model.safetensors'))
    assert 'prompt_encoder.shared_embedding.positional_embedding' not in saved  # transformers 5.x
    assert 'shared_image_embedding.positional_embedding' in saved
    cfg = tiny_segmentor_cfg(tmp_path)
    head = MODELS.build(dict(cfg['decode_head'], checkpoint=str(tmp_path)))
    torch.testing.assert_close(
        head.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
        hf_sam.prompt_encoder.shared_embedding.positional_embedding,
        rtol=0,
        atol=0,
    )
    segmentor = MODELS.build(cfg).eval()
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert (segmentor.backbone(x)[-1] - hf_sam.get_image_embeddings(x)).abs().max().item() <= 1e-5
    torch.testing.assert_close(segmentor.decode_head.state_dict(), head.state_dict(), rtol=0, atol=0)


def test_hf_keys_map_onto_official_keys(hf_sam, reference_sam):
    converted = hf_to_sam_state_dict(hf_sam.state_dict())
    official = reference_sam.state_dict()
    assert set(converted) == set(official)
    assert all(converted[k].shape == official[k].shape for k in official)
    tied_once = {
        k: v
        for k, v in hf_sam.state_dict().items()
        if k != 'prompt_encoder.shared_embedding.positional_embedding'
    }
    assert hf_to_sam_state_dict(tied_once).keys() == converted.keys()
    different = dict(hf_sam.state_dict())
    different['shared_image_embedding.positional_embedding'] = (
        different['shared_image_embedding.positional_embedding'] + 1
    )
    with pytest.raises(ValueError, match='shared_image_embedding.positional_embedding differs from'):
        hf_to_sam_state_dict(different)


def test_formats(reference_sam, tmp_path):
    full = reference_sam.state_dict()
    encoder_only = reference_sam.image_encoder.state_dict()
    assert detect_format(full) == 'sam'
    assert detect_format(encoder_only) == 'sam_encoder'
    assert to_sam_state_dict(encoder_only).keys() == {f'image_encoder.{k}' for k in encoder_only}
    with pytest.raises(ValueError, match='unrecognised checkpoint layout'):
        detect_format({'backbone.layers.0.weight': torch.zeros(1)})
    # a model trained with mmseg_sam: SAM's three components renamed, other head weights left out
    trained = {
        f'backbone.{k[len("image_encoder.") :]}': v for k, v in full.items() if k.startswith('image_encoder.')
    }
    for k, v in full.items():
        if k.startswith(('prompt_encoder.', 'mask_decoder.')):
            trained[f'decode_head.{k}'] = v
    trained['decode_head.cls_embed.weight'] = torch.zeros(4, 32)
    assert detect_format(trained) == 'mmseg_sam'
    assert to_sam_state_dict(trained).keys() == full.keys()
    with pytest.raises(ValueError, match=r'no SAM mask decoder \(decode_head.mask_decoder.\*\)'):
        to_sam_state_dict(
            {'backbone.pos_embed': torch.zeros(1), 'decode_head.conv_seg.weight': torch.zeros(1)}
        )
    torch.save({'state_dict': full, 'meta': {}}, tmp_path / 'wrapped.pth')
    assert load_state_dict_file(tmp_path / 'wrapped.pth').keys() == full.keys()


def test_unreadable_checkpoints(tmp_path):
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match=f'cannot read checkpoint {bad}'):
        load_state_dict_file(bad)
    with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
        load_state_dict_file(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='holds none of'):
        load_state_dict_file(tmp_path)
    with pytest.raises(ValueError, match='component must be one of'):
        load_sam_component(bad, 'neck')


class _Exploit:
    def __reduce__(self):
        return (print, ('pwned',))


def test_code_running_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'image_encoder.pos_embed': _Exploit()}, f)
    with pytest.raises(ValueError, match='cannot read checkpoint .*evil.pth.*Unpickl'):
        load_state_dict_file(path)


@pytest.fixture(scope='module')
def sam2_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny SAM 2.1 checkpoint in the official layout, encoder only, and as a Hugging Face Sam2Model."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp('sam2')
    state = official_checkpoint(root / 'sam2.1_hiera_tiny.pt')
    encoder = {k[len('image_encoder.') :]: v for k, v in state.items() if k.startswith('image_encoder.')}
    torch.save(encoder, root / 'sam2.1_encoder.pth')
    hf = {k: v.clone().contiguous() for k, v in hf_sam2_model().state_dict().items()}
    save_file(hf, str(root / 'sam2.1_hf.safetensors'))
    return {p.name: p for p in root.iterdir()}


@pytest.mark.parametrize('name', ['sam2.1_hiera_tiny.pt', 'sam2.1_encoder.pth', 'sam2.1_hf.safetensors'])
@pytest.mark.parametrize('part', ['encoder', 'head', 'segmentor', 'prompted segmentor'])
def test_a_sam2_checkpoint_for_a_sam_vit_config_is_named_as_one(sam2_files, name, part):
    """SAM ViT parts refuse SAM 2 weights saying so and naming the family that reads them (SAM2Hiera
    refuses SAM 1 weights the same way)."""
    path = str(sam2_files[name])
    build = {
        'encoder': lambda: SAMViT(arch=TINY_ARCH, img_size=TINY_IMG, checkpoint=path),
        'head': lambda: SAMMaskDecoderHead(
            num_classes=2,
            out_channels=1,
            threshold=0.5,
            checkpoint=path,
            **TINY_HEAD,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
        ),
        'segmentor': lambda: tiny_segmentor(path),
        'prompted segmentor': lambda: MODELS.build(tiny_prompted_cfg(path)),
    }[part]
    with pytest.raises(
        ValueError,
        match=rf'checkpoint {re.escape(path)}: this looks like a SAM 2 checkpoint \(keys such as \[.*\]\), '
        r'not a SAM 1 ViT one: use it with a SAM 2 config \(backbone SAM2Hiera with SAM2MaskDecoderHead',
    ):
        build()


def test_frozen_fingerprint_sees_every_bit_name_shape_and_dtype():
    gen = torch.Generator().manual_seed(0)
    base = {'a.weight': torch.randn(3, 4, generator=gen), 'b.bias': torch.randn(4, generator=gen)}
    fingerprint = frozen_fingerprint(base)
    assert re.fullmatch(r'sha256:[0-9a-f]{64}', fingerprint)
    assert frozen_fingerprint(dict(reversed(base.items()))) == fingerprint  # name order, not dict order
    column_major = base['a.weight'].t().contiguous().t()  # the same values in another memory layout
    assert frozen_fingerprint(dict(base, **{'a.weight': column_major})) == fingerprint
    one_bit = base['a.weight'].clone()
    one_bit.view(torch.int32)[2, 3] ^= 1  # the last bit of one float
    variants = {
        'one bit': dict(base, **{'a.weight': one_bit}),
        'a name': {'a.weight2': base['a.weight'], 'b.bias': base['b.bias']},
        'a shape': dict(base, **{'a.weight': base['a.weight'].reshape(4, 3)}),
        'a dtype': dict(base, **{'b.bias': base['b.bias'].view(torch.int32)}),  # the same bytes
        'a tensor less': {'a.weight': base['a.weight']},
    }
    assert all(frozen_fingerprint(v) != fingerprint for v in variants.values())
    assert frozen_fingerprint({'m': torch.tensor([True, False]), 'h': torch.ones(2, dtype=torch.bfloat16)})
