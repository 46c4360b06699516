"""tools/model_converters/export_sam.py: a merged encoder in segment_anything's own format."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.engine.hooks import SAMCheckpointHook
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import merge_peft
from tests.conftest import TINY_ARCH, TINY_IMG, build_reference_sam, tiny_segmentor_cfg

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    'export_sam_tool', REPO / 'tools/model_converters/export_sam.py'
)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def _write_config(tmp_path: Path, backbone: dict, checkpoint: Path | None, img_size: int = TINY_IMG) -> Path:
    model = tiny_segmentor_cfg(checkpoint, img_size, **backbone)
    path = tmp_path / 'cfg.py'
    path.write_text(f'default_scope = "mmseg"\nmodel = {model!r}\n')
    return path


def _train_and_save(
    tmp_path: Path, cfg: Path, sam_checkpoint: Path | None = None
) -> tuple[torch.nn.Module, Path]:
    """Build the model, move every trainable parameter, save a trainable-only checkpoint."""
    model_cfg = tool.Config.fromfile(cfg).model
    if sam_checkpoint is not None:
        model_cfg.sam_checkpoint = str(sam_checkpoint)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    checkpoint = {'state_dict': dict(model.state_dict()), 'meta': {}}
    SAMCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model), checkpoint)  # trainable-only
    path = tmp_path / 'trained.pth'
    torch.save(checkpoint, path)
    return model, path


@pytest.mark.parametrize(
    'peft',
    [
        dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')),
        dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('q', 'v'))),
        dict(type='SSF'),
        [dict(type='LoRA', rank=2, targets=('qkv',)), dict(type='BitFit')],
    ],
    ids=['LoRA', 'COBOT-LoRA', 'SSF', 'LoRA+BitFit'],
)
def test_exported_checkpoint_loads_into_segment_anything(tmp_path, sam_checkpoint, reference_sam, peft):
    cfg = _write_config(tmp_path, dict(peft=peft), sam_checkpoint)
    model, trained = _train_and_save(tmp_path, cfg)
    assert 'backbone.blocks.0.attn.qkv.weight' not in torch.load(trained, weights_only=True)['state_dict']
    out = tmp_path / 'export/sam_finetuned.pth'
    assert tool.main([str(cfg), str(trained), str(out)]) == 0

    exported = torch.load(out, map_location='cpu', weights_only=True)
    original = reference_sam.state_dict()
    assert set(exported) == set(original)
    assert all(exported[k].shape == original[k].shape for k in original)
    sam = build_reference_sam(seed=1)  # other weights: everything must come from the file
    sam.load_state_dict(exported, strict=True)
    for key in original:
        if key.startswith(('prompt_encoder.', 'mask_decoder.')):
            assert torch.equal(exported[key], original[key]), key

    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        peft_out = model.backbone(x)[-1]
        merge_peft(model.backbone)
        merged_out = model.backbone(x)[-1]
        exported_out = sam.image_encoder(x)
        original_out = reference_sam.image_encoder(x)
    torch.testing.assert_close(exported_out, merged_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(exported_out, peft_out, atol=1e-4, rtol=0)
    assert (exported_out - original_out).abs().max() > 1e-3  # the fine-tuning is in the file


@pytest.mark.parametrize(
    'peft, refused',
    [
        (dict(type='ConvLoRA', rank=4, num_experts=2), 'ConvLoRA'),
        (dict(type='VPT', num_tokens=2), 'VPT'),
        (dict(type='SAMAdapter', scale_factor=4), 'SAMAdapter'),
        (dict(type='LST', side_dims=12, side_heads=3), 'LST'),
        ([dict(type='LoRA', rank=2), dict(type='Adapter', bottleneck=4)], 'Adapter'),
    ],
    ids=['ConvLoRA', 'VPT', 'SAMAdapter', 'LST', 'LoRA+Adapter'],
)
def test_methods_that_do_not_merge_are_refused(tmp_path, sam_checkpoint, capsys, peft, refused):
    cfg = _write_config(tmp_path, dict(peft=peft), sam_checkpoint)
    _, trained = _train_and_save(tmp_path, cfg)
    out = tmp_path / 'out.pth'
    assert tool.main([str(cfg), str(trained), str(out)]) == 1
    assert f"cannot merge ['{refused}']: only methods linear" in capsys.readouterr().err
    assert not out.exists()


def test_training_size_differs_from_the_sam_checkpoint(tmp_path):
    """Trained at 64 on a SAM saved at 96: the file has the 96 tables and loads into a 96 SAM."""
    sam96 = build_reference_sam(img_size=96, seed=2)
    source = tmp_path / 'sam96.pth'
    torch.save(sam96.state_dict(), source)
    peft = dict(type='LoRA', rank=2, targets=('q', 'v'))
    cfg = _write_config(tmp_path, dict(peft=peft), checkpoint=None)  # --sam-checkpoint supplies it
    model, trained = _train_and_save(tmp_path, cfg, sam_checkpoint=source)
    out = tmp_path / 'exported.pth'
    assert tool.main([str(cfg), str(trained), str(out), '--sam-checkpoint', str(source)]) == 0

    exported = torch.load(out, weights_only=True)
    build_reference_sam(img_size=96, seed=3).load_state_dict(exported, strict=True)
    for key in ('pos_embed', 'blocks.1.attn.rel_pos_h', 'blocks.1.attn.rel_pos_w'):  # frozen: SAM's own
        assert torch.equal(exported[f'image_encoder.{key}'], sam96.image_encoder.state_dict()[key]), key
    # At the training size, the exported encoder computes what the fine-tuned one does.
    encoder = SAMViT(arch=TINY_ARCH, img_size=96).eval()
    encoder.load_state_dict(
        {k[len('image_encoder.') :]: v for k, v in exported.items() if 'image_encoder' in k}
    )
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        expected = model.backbone(x)[-1]
        torch.testing.assert_close(encoder(x)[-1], expected, atol=1e-5, rtol=0)


def test_trained_position_tables_are_resized_back(tmp_path, capsys):
    sam96 = build_reference_sam(img_size=96, seed=2)
    source = tmp_path / 'sam96.pth'
    torch.save(sam96.state_dict(), source)
    cfg = _write_config(tmp_path, dict(frozen=False), checkpoint=source)  # full fine-tuning, no PEFT
    _, trained = _train_and_save(tmp_path, cfg)
    out = tmp_path / 'exported.pth'
    assert tool.main([str(cfg), str(trained), str(out)]) == 0
    log = capsys.readouterr().out
    assert 'no PEFT' in log
    assert "resized back to the SAM checkpoint size: ['image_encoder.pos_embed'" in log
    exported = torch.load(out, weights_only=True)
    build_reference_sam(img_size=96, seed=3).load_state_dict(exported, strict=True)
    assert not torch.equal(exported['image_encoder.pos_embed'], sam96.image_encoder.pos_embed)


def test_missing_sam_checkpoint_is_an_error(tmp_path, capsys):
    cfg = _write_config(tmp_path, dict(peft=dict(type='BitFit')), checkpoint=None)
    model = MODELS.build(tool.Config.fromfile(cfg).model)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'full.pth')
    assert tool.main([str(cfg), str(tmp_path / 'full.pth'), str(tmp_path / 'out.pth')]) == 1
    assert 'no SAM checkpoint: set model.sam_checkpoint in the config or pass --sam-checkpoint' in (
        capsys.readouterr().err
    )
    assert not (tmp_path / 'out.pth').exists()
