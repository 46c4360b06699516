"""A model fine-tuned with prompts, exported, gives its own masks in segment_anything's SamPredictor."""

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.conftest import (
    TINY_IMG,
    build_reference_sam,
    run_tool,
    save_perturbed_trainable,
    tiny_prompted_cfg,
)
from tests.models.test_sam_prompted_head import MEAN, STD, _blob_masks, _sample

BOX = np.array([10.0, 8.0, 35.0, 29.0])


def _trained_prompted(tmp_path: Path, sam_checkpoint: Path, peft: dict) -> tuple[Path, torch.nn.Module, Path]:
    """A prompted config, its model with every trainable weight moved, and a trainable-only checkpoint."""
    model_cfg = tiny_prompted_cfg(sam_checkpoint, peft=peft)
    cfg = tmp_path / 'prompted.py'
    cfg.write_text(f'default_scope = "mmseg"\nmodel = {model_cfg!r}\n')
    path = tmp_path / 'trained.pth'
    return cfg, save_perturbed_trainable(model_cfg, path), path


@pytest.mark.slow
@pytest.mark.parametrize(
    'peft', [dict(type='LoRA', rank=2, targets=('q', 'v')), dict(type='SSF')], ids=['LoRA', 'SSF']
)
def test_sam_predictor_gives_the_fine_tuned_masks(
    tmp_path, sam_checkpoint, reference_sam, sam_predictor_cls, peft, capsys
):
    cfg, model, trained = _trained_prompted(tmp_path, sam_checkpoint, peft)
    out = tmp_path / 'sam_prompted.pth'
    assert run_tool('tools/model_converters/export_sam.py', cfg, trained, out) == 0
    assert 'prompt encoder and mask decoder from the fine-tuned head' in capsys.readouterr().out

    exported = torch.load(out, weights_only=True)
    sam = build_reference_sam(seed=1)  # other weights: everything must come from the file
    sam.load_state_dict(exported, strict=True)
    original = reference_sam.state_dict()
    for part in ('prompt_encoder.', 'mask_decoder.'):  # the fine-tuned decoder is in the file
        assert any(not torch.equal(exported[k], original[k]) for k in original if k.startswith(part)), part

    image = torch.randint(0, 256, (TINY_IMG, TINY_IMG, 3), generator=torch.Generator().manual_seed(5)).to(
        torch.uint8
    )
    predictor = sam_predictor_cls(sam)
    predictor.set_torch_image(image.permute(2, 0, 1)[None].float(), (TINY_IMG, TINY_IMG))
    masks, scores, low_res = predictor.predict(box=BOX, multimask_output=False, return_logits=True)

    inputs = ((image.permute(2, 0, 1).float() - MEAN) / STD)[None]
    sample = _sample(_blob_masks()[:1], boxes=torch.tensor(BOX)[None])
    with torch.no_grad():
        ours = model.predict(inputs, [sample])[0].pred_instances
        head = model.decode_head
        from mmseg_sam.models.decode_heads import PromptSet

        ours_low, ours_iou = head.decode(
            head(model.extract_feat(inputs)), PromptSet(boxes=torch.tensor(BOX)[None].float()), False
        )
        ours_logits = head.postprocess(ours_low, (TINY_IMG,) * 2, (TINY_IMG,) * 2)[0]
    np.testing.assert_allclose(low_res, ours_low[0].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(masks, ours_logits.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores, ours_iou[0].numpy(), atol=1e-5, rtol=0)
    far = np.abs(masks[0]) > 1e-4
    assert np.array_equal((masks[0] > 0)[far], ours.box_masks[0].numpy()[far])


@pytest.mark.slow
def test_original_decoder_on_request(tmp_path, sam_checkpoint, reference_sam, capsys):
    cfg, _, trained = _trained_prompted(tmp_path, sam_checkpoint, dict(type='BitFit'))
    out = tmp_path / 'sam_original_decoder.pth'
    assert run_tool('tools/model_converters/export_sam.py', cfg, trained, out, '--original-decoder') == 0
    exported = torch.load(out, weights_only=True)
    original = reference_sam.state_dict()
    assert all(
        torch.equal(exported[k], original[k])
        for k in original
        if k.startswith(('prompt_encoder.', 'mask_decoder.'))
    )


@pytest.mark.slow
def test_full_vit_b_layout_loads_in_sam_model_registry(tmp_path, sam_predictor_cls):
    """SAM ViT-B's own layout: the export loads with segment_anything's builder (strict) and SamPredictor's
    box masks, logits and IoU on the fine-tuned decoder equal the project's (one image embedding for both)."""
    from segment_anything.build_sam import sam_model_registry

    from mmseg_sam.models.decode_heads import PromptSet
    from tests.conftest import REPO

    torch.manual_seed(0)
    source = tmp_path / 'sam_vit_b_random.pth'
    torch.save(sam_model_registry['vit_b']().state_dict(), source)
    cfg = tmp_path / 'vit_b_prompted.py'
    cfg.write_text(
        f'_base_ = [{str(REPO / "configs/_base_/models/sam-vit-b_prompted.py")!r}]\ndefault_scope = "mmseg"\n'
        f'model = dict(sam_checkpoint={str(source)!r}, backbone=dict(peft=dict(type="LoRA", rank=4)))\n'
    )
    trained = tmp_path / 'trained.pth'
    model = save_perturbed_trainable(Config.fromfile(cfg).model, trained, std=0.02)
    out = tmp_path / 'sam_vit_b_prompted.pth'
    assert run_tool('tools/model_converters/export_sam.py', cfg, trained, out) == 0
    sam = sam_model_registry['vit_b'](checkpoint=str(out))  # load_state_dict(strict=True) inside

    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    predictor = sam_predictor_cls(sam)
    predictor.features, predictor.is_image_set = embedding, True  # what set_image leaves behind
    predictor.original_size = predictor.input_size = (1024, 1024)
    box = np.array([100.0, 220.0, 640.0, 800.0])
    masks, scores, low_res = predictor.predict(box=box, multimask_output=False, return_logits=True)
    head = model.decode_head
    with torch.no_grad():
        ours_low, ours_iou = head.decode(embedding, PromptSet(boxes=torch.tensor(box)[None].float()), False)[
            :2
        ]
        ours = head.postprocess(ours_low, (1024, 1024), (1024, 1024))[0]
    np.testing.assert_allclose(low_res, ours_low[0].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores, ours_iou[0].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(masks, ours.numpy(), atol=1e-5, rtol=0)
