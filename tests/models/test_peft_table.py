"""Every PEFT method (and decoder-only / full fine-tuning) in one table, through the segmentor, on both
backbone families: SAM's ViT and SAM 2.1's Hiera (where SAM2Hiera offers the method's place)."""

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.models.backbones import SAM2Hiera
from mmseg_sam.models.peft import ConvLoRALinear
from mmseg_sam.models.peft.base import refused_places
from mmseg_sam.models.peft.presets import PRESETS
from mmseg_sam.utils.start_weights import save_start_weights
from tests.conftest import (
    TINY_HEAD,
    TINY_IMG,
    assert_trained,
    run_tool,
    tiny_batch,
    tiny_segmentor_cfg,
    write_train_config,
)
from tests.models.sam2_fixtures import TINY_SAM2_ARCH, TINY_SAM2_DECODER
from tests.peft_tiny import tiny

# preset name -> backbone overrides at the tiny arch: every preset of the package's one table
METHODS = {item.key: tiny(item) for item in PRESETS}
# Presets whose methods need a place SAM2Hiera does not offer (tests/models/test_sam2_peft.py checks the refusal).
NOT_ON_HIERA = {item.key for item in PRESETS if refused_places(SAM2Hiera, item.peft)}
CASES = [('sam', name) for name in METHODS] + [('sam2', name) for name in METHODS if name not in NOT_ON_HIERA]


def _segmentor_cfg(family: str, **backbone) -> dict:
    """The tiny binary segmentor of ``family`` with ``backbone`` overrides."""
    if family == 'sam':
        return tiny_segmentor_cfg(**backbone)
    cfg = tiny_segmentor_cfg()
    cfg['backbone'] = dict(type='SAM2Hiera', arch=dict(TINY_SAM2_ARCH), **backbone)
    cfg['decode_head'].update(type='SAM2MaskDecoderHead', **TINY_SAM2_DECODER)
    return cfg


@pytest.mark.parametrize(('family', 'name'), CASES)
def test_method_trains_only_its_parameters(family, name):
    torch.manual_seed(0)
    model = MODELS.build(_segmentor_cfg(family, **METHODS[name])).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone_trainable = {n for n in trainable if n.startswith('backbone.')}
    report = model.backbone.peft_report
    if name == 'full-fine-tuning':
        assert backbone_trainable == {f'backbone.{n}' for n, _ in model.backbone.named_parameters()}
    else:
        expected = {f'backbone.{n}' for names in report.parameter_names.values() for n in names}
        assert backbone_trainable == expected
        assert bool(expected) == (name != 'decoder-only')
    with torch.no_grad():  # zero-initialised up-projections would hide the gradients upstream
        for n, p in model.named_parameters():
            if p.requires_grad and n.startswith('backbone.') and p.abs().sum() == 0:
                p.add_(torch.randn_like(p) * 0.05)
    losses = model.loss(*tiny_batch())
    sum(v for k, v in losses.items() if k.startswith(('decode.loss', 'loss'))).backward()
    # Conv-LoRA experts that no sample was routed to get no gradient (by design)
    unused = {
        f'backbone.{layer_name}.experts.{e}.'
        for layer_name, layer in model.backbone.named_modules()
        if isinstance(layer, ConvLoRALinear)
        for e in set(range(len(layer.experts))) - set(layer.last_routing.flatten().tolist())
    }
    for n, p in model.named_parameters():
        if p.requires_grad and not n.startswith(tuple(unused)):
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    # strict round trip
    other = MODELS.build(_segmentor_cfg(family, **METHODS[name])).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), other(x, mode='tensor'))


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    generate_synthetic_dataset(root, num_train=2, num_val=1, img_size=64, mode='binary')
    return root


_DEMO = {
    'sam': 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py',
    'sam2': 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py',
}


@pytest.mark.slow
@pytest.mark.parametrize(('family', 'name'), CASES)
def test_method_runs_one_iteration_of_tools_train(family, name, demo_data, sam_checkpoint, tmp_path):
    """One real ``tools/train.py`` iteration: a finite loss; only trainable tensors change, the method's
    among them; the checkpoint holds them (on SAM's ViT, from the tiny SAM checkpoint: only them)."""
    backbone = _segmentor_cfg(family, **METHODS[name])['backbone']
    head = dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64)
    model = f'backbone=dict(_delete_=True, **{backbone!r})'
    if family == 'sam':  # the tiny SAM checkpoint supplies the frozen weights
        head = TINY_HEAD
        model += f', sam_checkpoint={str(sam_checkpoint)!r}'
    model += f', decode_head=dict({", ".join(f"{k}={v!r}" for k, v in head.items())})'

    start = save_start_weights(
        write_train_config(tmp_path / 'start.py', _DEMO[family], demo_data, model), tmp_path / 'start.pth'
    )
    cfg = write_train_config(tmp_path / 'method.py', _DEMO[family], demo_data, model, load_from=start.path)
    assert not run_tool('tools/train.py', cfg, '--work-dir', tmp_path / 'w')  # in-process, as a user runs it
    assert_trained(tmp_path / 'w', start)
