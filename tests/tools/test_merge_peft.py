from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_sam.engine.hooks import SAMCheckpointHook
from mmseg_sam.models.peft import merge_peft
from mmseg_sam.utils.checkpoint import detect_format
from tests.conftest import TINY_IMG, load_tool, tiny_segmentor_cfg
from tests.tools.sam2_tool_configs import sam2_trained

tool = load_tool('tools/model_converters/merge_peft.py', 'merge_peft_tool')


def _write_config(tmp_path, peft, checkpoint) -> Path:
    model = tiny_segmentor_cfg(checkpoint, peft=peft)
    path = tmp_path / 'cfg.py'
    path.write_text(f'default_scope = "mmseg"\nmodel = {model!r}\n')
    return path


def _trained_model(cfg: Path) -> torch.nn.Module:
    """The model of ``cfg`` in eval mode, its trainable parameters moved as training would."""
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(cfg).model).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize(
    'peft',
    [
        dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')),
        dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('q', 'v'))),
        dict(type='SSF'),
        dict(type='BitFit'),
    ],
    ids=lambda p: p['type'],
)
def test_merged_checkpoint_predicts_like_the_peft_model(tmp_path, sam_checkpoint, peft):
    cfg = _write_config(tmp_path, peft, sam_checkpoint)
    model = _trained_model(cfg)
    checkpoint = {'state_dict': dict(model.state_dict()), 'meta': {}}
    SAMCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model), checkpoint)  # trainable-only
    assert 'backbone.blocks.0.attn.qkv.weight' not in checkpoint['state_dict']
    torch.save(checkpoint, tmp_path / 'trained.pth')
    assert tool.main([str(cfg), str(tmp_path / 'trained.pth'), str(tmp_path / 'merged.pth')]) == 0

    plain_cfg = Config.fromfile(cfg).model
    plain_cfg.backbone.peft = None
    plain = MODELS.build(plain_cfg).eval()
    merged = torch.load(tmp_path / 'merged.pth', weights_only=True)
    plain.load_state_dict(merged['state_dict'], strict=True)
    assert merged['meta']['mmseg_sam']['merged_methods'] == [peft['type']]
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert torch.allclose(model(x, mode='tensor'), plain(x, mode='tensor'), atol=1e-5)


@pytest.mark.parametrize(
    'peft',
    [
        dict(type='ConvLoRA', num_experts=2),
        dict(type='Adapter', bottleneck=4),
        dict(type='COBOT', host=dict(type='AdaptFormer', bottleneck=4)),
        dict(type='VPT', num_tokens=2),
    ],
    ids=lambda p: p['type'] + ('-' + p['host']['type'] if 'host' in p else ''),
)
def test_non_linear_methods_are_refused(tmp_path, sam_checkpoint, peft, capsys):
    cfg = _write_config(tmp_path, peft, sam_checkpoint)
    model = MODELS.build(Config.fromfile(cfg).model)
    with pytest.raises(ValueError, match=rf"cannot merge \['{peft['type']}'\]: only methods linear"):
        merge_peft(model.backbone)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'full.pth')
    assert tool.main([str(cfg), str(tmp_path / 'full.pth'), str(tmp_path / 'out.pth')]) == 1
    assert 'cannot merge' in capsys.readouterr().err
    assert not (tmp_path / 'out.pth').exists()


def test_merged_model_is_a_sam_checkpoint_for_the_next_fine_tune(tmp_path, sam_checkpoint):
    """A merged binary model starts a mask-classification model: encoder and decoder carried over."""
    cfg = _write_config(tmp_path, dict(type='LoRA', rank=2, targets=('q', 'v')), sam_checkpoint)
    binary = _trained_model(cfg)
    torch.save({'state_dict': binary.state_dict(), 'meta': {}}, tmp_path / 'trained.pth')
    # unmerged: the SAM encoder has no place for LoRA weights, and the strict load names them
    next_cfg = Config.fromfile(cfg).model
    next_cfg.sam_checkpoint = str(tmp_path / 'trained.pth')
    next_cfg.decode_head.update(
        num_classes=3,
        out_channels=3,
        threshold=None,
        mode='mask_classification',
        num_queries=4,
    )
    next_cfg.decode_head.loss_decode = dict(type='MaskClassificationLoss')  # replaced, not merged
    with pytest.raises(ValueError, match=r'lora_A'):
        MODELS.build(next_cfg)

    assert tool.main([str(cfg), str(tmp_path / 'trained.pth'), str(tmp_path / 'merged.pth')]) == 0
    merge_peft(binary.backbone)
    next_cfg.sam_checkpoint = str(tmp_path / 'merged.pth')
    nxt = MODELS.build(next_cfg).eval()
    assert detect_format(torch.load(tmp_path / 'merged.pth', weights_only=True)['state_dict']) == 'mmseg_sam'
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():  # the new model's frozen encoder is the merged fine-tuned one
        assert torch.allclose(nxt.backbone(x)[0], binary.backbone(x)[0], atol=1e-5)
    source, target = binary.decode_head.mask_decoder, nxt.decode_head.mask_decoder
    for name, value in source.transformer.state_dict().items():
        assert torch.equal(target.transformer.state_dict()[name], value), name
    assert torch.equal(target.mask_tokens.weight, source.mask_tokens.weight[:1].expand(4, -1))
    for mlp in target.output_hypernetworks_mlps:  # one shared MLP, from the binary token's
        for name, value in source.output_hypernetworks_mlps[0].state_dict().items():
            assert torch.equal(mlp.state_dict()[name], value), name


@pytest.mark.slow
@pytest.mark.parametrize(
    'peft',
    [dict(type='LoRA', rank=2, targets=('q', 'v', 'proj')), [dict(type='DoRA', rank=2), dict(type='BitFit')]],
    ids=['LoRA', 'DoRA+BitFit'],
)
def test_sam2_merged_checkpoint_predicts_like_the_peft_model(tmp_path, peft):
    run = sam2_trained(tmp_path, peft)
    assert tool.main([str(run.cfg), str(run.checkpoint), str(tmp_path / 'merged.pth')]) == 0
    plain_cfg = Config.fromfile(run.cfg).model
    plain_cfg.backbone.peft = None
    plain = MODELS.build(plain_cfg).eval()
    merged = torch.load(tmp_path / 'merged.pth', weights_only=True)
    plain.load_state_dict(merged['state_dict'], strict=True)
    assert 'backbone.trunk.blocks.1.attn.qkv.weight' in merged['state_dict']
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = run.model(x, mode='tensor')
        torch.testing.assert_close(plain(x, mode='tensor'), expected, atol=1e-5, rtol=0)
        original = MODELS.build(plain_cfg).eval()  # the SAM 2 checkpoint's encoder, the trained head
        original.decode_head.load_state_dict(plain.decode_head.state_dict())
        assert (original(x, mode='tensor') - expected).abs().max() > 1e-3  # the merge changed the encoder
