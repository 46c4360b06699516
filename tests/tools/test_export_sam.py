"""tools/model_converters/export_sam.py: a merged encoder in segment_anything's own format."""

from pathlib import Path

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import merge_peft
from tests.conftest import (
    TINY_ARCH,
    TINY_IMG,
    build_reference_sam,
    load_tool,
    save_perturbed_trainable,
    tiny_segmentor_cfg,
)
from tests.models import test_sam2_prompted_head
from tests.models.sam2_fixtures import official_checkpoint, sam2_heads, sam2_image_encoder
from tests.tools.sam2_tool_configs import sam2_trained

sam2_predictor_cls = test_sam2_prompted_head.sam2_predictor_cls  # a fixture

tool = load_tool('tools/model_converters/export_sam.py', 'export_sam_tool')


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
    path = tmp_path / 'trained.pth'
    return save_perturbed_trainable(model_cfg, path), path


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# SAM 2: the official {'model': ...} layout, loaded strictly by sam2's own modules.


def _sam2_trained(tmp_path: Path, peft, decode_head: dict | None = None) -> tuple:
    extra = (
        ''
        if decode_head is None
        else f'model.update(decode_head=dict(model["decode_head"], **{decode_head!r}))\n'
    )
    run = sam2_trained(tmp_path, peft, extra=extra)
    return run.source, run.original, run.cfg, run.model, run.checkpoint


def _sam2_parts(exported: dict) -> dict[str, dict]:
    """The exported state split by component, prefixes stripped."""
    parts = {}
    for prefix in ('image_encoder.', 'sam_prompt_encoder.', 'sam_mask_decoder.'):
        parts[prefix[:-1]] = {k[len(prefix) :]: v for k, v in exported.items() if k.startswith(prefix)}
    return parts


@pytest.mark.slow
@pytest.mark.parametrize(
    'peft',
    [
        dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')),
        dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('qkv',))),
        [dict(type='DoRA', rank=2, targets=('q', 'v')), dict(type='BitFit')],
        dict(type='SSF'),
    ],
    ids=['LoRA', 'COBOT-LoRA', 'DoRA+BitFit', 'SSF'],
)
def test_sam2_export_loads_into_sam2_modules(tmp_path, peft):
    source, original, cfg, model, trained = _sam2_trained(tmp_path, peft)
    out = tmp_path / 'sam2_finetuned.pt'
    assert tool.main([str(cfg), str(trained), str(out)]) == 0

    saved = torch.load(out, map_location='cpu', weights_only=True)
    assert set(saved) == {'model'}  # what sam2's build_sam2 reads
    exported = saved['model']
    assert set(exported) == set(original)
    assert all(exported[k].shape == original[k].shape for k in original)
    changed = [
        k for k in original if k.startswith('image_encoder.') and not torch.equal(exported[k], original[k])
    ]
    assert changed  # the fine-tuning is in the file
    parts = _sam2_parts(exported)
    encoder = sam2_image_encoder().eval()
    encoder.load_state_dict(parts['image_encoder'], strict=True)
    prompt_encoder, decoder = sam2_heads()
    prompt_encoder.load_state_dict(parts['sam_prompt_encoder'], strict=True)
    decoder.load_state_dict(parts['sam_mask_decoder'], strict=True)

    head = model.decode_head
    # The head's trained decoder where SAM 2 has it; SAM 2's own parts elsewhere.
    for key in ('transformer.layers.0.self_attn.q_proj.weight', 'iou_token.weight', 'conv_s0.weight'):
        assert torch.equal(exported[f'sam_mask_decoder.{key}'], head.mask_decoder.state_dict()[key]), key
        assert not torch.equal(exported[f'sam_mask_decoder.{key}'], original[f'sam_mask_decoder.{key}']), key
    tokens = exported['sam_mask_decoder.mask_tokens.weight']
    assert torch.equal(tokens[0], head.mask_decoder.mask_tokens.weight[0])
    assert torch.equal(tokens[1:], original['sam_mask_decoder.mask_tokens.weight'][1:])
    mlp0 = head.mask_decoder.output_hypernetworks_mlps[0].layers[2].weight
    assert torch.equal(exported['sam_mask_decoder.output_hypernetworks_mlps.0.layers.2.weight'], mlp0)
    assert torch.equal(exported['no_mem_embed'], head.no_mem_embed)
    kept = (
        'output_hypernetworks_mlps.1.',
        'output_hypernetworks_mlps.3.',
        'iou_prediction_head.',
        'pred_obj_score_head.',
    )
    kept = tuple(f'sam_mask_decoder.{k}' for k in kept) + ('memory_encoder.', 'maskmem_tpos_enc')
    assert any(key.startswith(kept[-2:]) for key in original)  # the video modules are in the fixture
    for key in original:
        if key.startswith(kept):
            assert torch.equal(exported[key], original[key]), key

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        peft_out = model.backbone(x)
        merge_peft(model.backbone)
        merged_out = model.backbone(x)
        exported_out = encoder(x)['backbone_fpn']
    assert len(exported_out) == len(merged_out) == 3
    for got, merged, unmerged in zip(exported_out, merged_out, peft_out, strict=True):
        torch.testing.assert_close(got, merged, atol=1e-5, rtol=0)
        torch.testing.assert_close(got, unmerged, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_sam2_export_keeps_the_original_decoder_on_request(tmp_path, capsys):
    source, original, cfg, model, trained = _sam2_trained(tmp_path, dict(type='BitFit'))
    out = tmp_path / 'sam2_encoder_only.pt'
    assert tool.main([str(cfg), str(trained), str(out), '--original-decoder']) == 0
    exported = torch.load(out, weights_only=True)['model']
    for key in original:
        if not key.startswith('image_encoder.'):
            assert torch.equal(exported[key], original[key]), key
    assert not torch.equal(
        exported['image_encoder.trunk.blocks.0.attn.qkv.bias'],
        original['image_encoder.trunk.blocks.0.attn.qkv.bias'],
    )


@pytest.mark.slow
def test_sam2_multiclass_head_keeps_sam2_mask_tokens(tmp_path, capsys):
    head = dict(
        num_classes=3,
        out_channels=None,
        threshold=None,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False),
    )
    source, original, cfg, model, trained = _sam2_trained(
        tmp_path, dict(type='LoRA', rank=2), decode_head=head
    )
    out = tmp_path / 'sam2_multiclass.pt'
    assert tool.main([str(cfg), str(trained), str(out)]) == 0
    assert 'mask tokens and MLPs: SAM 2 original' in capsys.readouterr().out
    exported = torch.load(out, weights_only=True)['model']
    for key in original:
        if key.startswith(('sam_mask_decoder.mask_tokens', 'sam_mask_decoder.output_hypernetworks_mlps.')):
            assert torch.equal(exported[key], original[key]), key
    key = 'sam_mask_decoder.transformer.final_attn_token_to_image.v_proj.weight'
    assert torch.equal(
        exported[key], model.decode_head.mask_decoder.transformer.final_attn_token_to_image.v_proj.weight
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    'peft, refused',
    [
        (dict(type='ConvLoRA', rank=2, num_experts=2), 'ConvLoRA'),
        (dict(type='Adapter', bottleneck=4), 'Adapter'),
    ],
    ids=['ConvLoRA', 'Adapter'],
)
def test_sam2_methods_that_do_not_merge_are_refused(tmp_path, capsys, peft, refused):
    _, _, cfg, _, trained = _sam2_trained(tmp_path, peft)
    out = tmp_path / 'out.pt'
    assert tool.main([str(cfg), str(trained), str(out)]) == 1
    assert f"cannot merge ['{refused}']: only methods linear" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    'peft', [dict(type='LoRA', rank=2, targets=('q', 'v')), dict(type='SSF')], ids=['LoRA', 'SSF']
)
def test_sam2_prompted_export_gives_the_fine_tuned_masks_in_sam2_image_predictor(
    tmp_path, sam2_predictor_cls, peft, capsys
):
    """A SAM2PromptedHead model, every trainable weight moved, exported: the official key set and shapes,
    the fine-tuned decoder (all four tokens, IoU and object-score heads) and no_mem_embed in the file,
    and SAM2ImagePredictor.predict (features set as set_image sets them) gives the model's box and
    one-point masks, logits and IoU to 1e-5."""
    from mmseg_sam.models.decode_heads import PromptSet
    from tests.models.test_sam2_prompted_head import MEAN, STD, SAM2ImageModel, sam2_prompted_cfg

    source = tmp_path / 'sam2.1_tiny.pt'
    original = official_checkpoint(source)
    model_cfg = sam2_prompted_cfg(source, peft=peft)
    cfg = tmp_path / 'sam2_prompted.py'
    cfg.write_text(f'default_scope = "mmseg"\nmodel = {model_cfg!r}\n')
    model = save_perturbed_trainable(model_cfg, tmp_path / 'trained.pth')
    out = tmp_path / 'sam2_prompted_export.pt'
    assert tool.main([str(cfg), str(tmp_path / 'trained.pth'), str(out)]) == 0
    assert "mask tokens and MLPs: the head's, all four" in capsys.readouterr().out

    exported = torch.load(out, weights_only=True)['model']
    assert set(exported) == set(original)
    assert all(exported[k].shape == original[k].shape for k in original)
    for key in (
        'no_mem_embed',
        'sam_mask_decoder.mask_tokens.weight',
        'sam_mask_decoder.obj_score_token.weight',
    ):
        assert not torch.equal(exported[key], original[key]), key
    ref = SAM2ImageModel()
    ref.load_official(exported)  # strict
    ref.eval()
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(5)).float()
    inputs = ((image - MEAN) / STD)[None]
    predictor = sam2_predictor_cls(ref)
    with torch.no_grad():
        ref.set_features(predictor, inputs)
        box = np.array([10.0, 8.0, 35.0, 29.0])
        point, label = np.array([[20.0, 18.0]]), np.array([1])
        box_masks, box_iou, box_low = predictor.predict(box=box, multimask_output=False, return_logits=True)
        pt_masks, pt_iou, pt_low = predictor.predict(point, label, multimask_output=True, return_logits=True)
        head = model.decode_head
        features = head.image_features(head(model.extract_feat(inputs)), 0)
        for prompts, multimask, (masks, iou, low) in (
            (PromptSet(boxes=torch.tensor(box)[None].float()), False, (box_masks, box_iou, box_low)),
            (
                PromptSet(points=(torch.tensor(point)[None].float(), torch.tensor(label)[None])),
                True,
                (pt_masks, pt_iou, pt_low),
            ),
        ):
            ours_low, ours_iou, _ = head.decode(features, prompts, multimask)
            ours_masks = head.postprocess(ours_low, (64, 64), (64, 64))[0]
            np.testing.assert_allclose(low, ours_low[0].clamp(-32, 32).numpy(), atol=1e-5, rtol=0)
            np.testing.assert_allclose(masks, ours_masks.numpy(), atol=1e-5, rtol=0)
            np.testing.assert_allclose(iou, ours_iou[0].numpy(), atol=1e-5, rtol=0)


def test_sam2_prompted_export_keeps_the_original_decoder_on_request(tmp_path):
    from tests.models.test_sam2_prompted_head import sam2_prompted_cfg

    source = tmp_path / 'sam2.1_tiny.pt'
    original = official_checkpoint(source)
    model_cfg = sam2_prompted_cfg(source, peft=dict(type='BitFit'))
    cfg = tmp_path / 'sam2_prompted.py'
    cfg.write_text(f'default_scope = "mmseg"\nmodel = {model_cfg!r}\n')
    model = MODELS.build(model_cfg).eval()
    with torch.no_grad():
        for p in model.decode_head.parameters():
            p.add_(0.1)
    torch.save({'state_dict': dict(model.state_dict()), 'meta': {}}, tmp_path / 'trained.pth')
    out = tmp_path / 'exported.pt'
    assert tool.main([str(cfg), str(tmp_path / 'trained.pth'), str(out), '--original-decoder']) == 0
    exported = torch.load(out, weights_only=True)['model']
    assert all(
        torch.equal(exported[k], original[k])
        for k in original
        if k.startswith(('sam_prompt_encoder.', 'sam_mask_decoder.', 'no_mem_embed'))
    )
