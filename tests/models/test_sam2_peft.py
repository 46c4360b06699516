"""Every PEFT preset on SAM 2.1's Hiera (tiny): trains only its parameters, merges exactly, runs tools/train.py,
or refuses by name and says why."""

import importlib.util
from pathlib import Path

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.models.backbones import SAM2Hiera
from mmseg_sam.models.peft import ConvLoRALinear, PromptedMultiScaleAttention, merge_peft
from mmseg_sam.models.peft.presets import PRESETS
from tests.conftest import tiny_batch

from .sam2_fixtures import TINY_SAM2_ARCH, TINY_SAM2_DECODER

REPO = Path(__file__).resolve().parents[2]
# Methods whose place SAM2Hiera does not offer, and the reason the refusal must give.
REFUSED = {
    'SAM-Adapter (scale 32)': 'input_prompts place .* blocks change resolution and width between stages',
    'LST (side 192)': 'side_network place .* FPN neck takes four stage outputs of different widths',
}
METHODS = {item.name: dict(item.tiny) for item in PRESETS if item.name not in REFUSED}
MERGEABLE = [
    'BitFit',
    'SSF',
    'LoRA (r 4, q v)',
    'DoRA (r 4, q v)',
    'LoRA (r 3, qkv)',
    'COBOT + LoRA (r 4, q v)',
]


def _segmentor_cfg(**backbone) -> dict:
    return dict(
        type='SAMEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
        backbone=dict(type='SAM2Hiera', arch=dict(TINY_SAM2_ARCH), **backbone),
        decode_head=dict(
            type='SAM2MaskDecoderHead',
            num_classes=2,
            out_channels=1,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
            **TINY_SAM2_DECODER,
        ),
    )


@pytest.mark.parametrize('name', list(METHODS))
def test_method_trains_only_its_parameters_on_hiera(name):
    torch.manual_seed(0)
    model = MODELS.build(_segmentor_cfg(**METHODS[name])).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith('backbone.')}
    report = model.backbone.peft_report
    if name == 'full fine-tuning':
        assert trainable == {f'backbone.{n}' for n, _ in model.backbone.named_parameters()}
    else:
        assert trainable == {f'backbone.{n}' for names in report.parameter_names.values() for n in names}
        assert bool(trainable) == (name != 'decoder-only')
    with torch.no_grad():  # zero-initialised up-projections would hide the gradients upstream
        for n, p in model.named_parameters():
            if p.requires_grad and n.startswith('backbone.') and p.abs().sum() == 0:
                p.add_(torch.randn_like(p) * 0.05)
    losses = model.loss(*tiny_batch())
    sum(v for k, v in losses.items() if k.startswith(('decode.loss', 'loss'))).backward()
    unused = {  # Conv-LoRA experts no sample was routed to (by design)
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
    base_keys = set(SAM2Hiera(TINY_SAM2_ARCH).state_dict())
    assert base_keys <= set(model.backbone.state_dict())  # sam2's keys unchanged: official weights still load


@pytest.mark.parametrize('name', MERGEABLE)
def test_mergeable_methods_merge_exactly_on_hiera(name):
    torch.manual_seed(0)
    backbone = SAM2Hiera(TINY_SAM2_ARCH, **METHODS[name]).eval()
    with torch.no_grad():  # non-zero updates, or the check is vacuous
        for p in backbone.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = backbone(x)
        assert merge_peft(backbone) > 0 or name == 'BitFit'
        after = backbone(x)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(('name', 'reason'), list(REFUSED.items()))
def test_methods_without_their_place_refuse_with_the_reason(name, reason):
    [item] = [p for p in PRESETS if p.name == name]
    with pytest.raises(ValueError, match=reason):
        SAM2Hiera(TINY_SAM2_ARCH, **item.tiny)


def test_conv_lora_experts_see_each_window_as_a_spatial_map():
    """Hiera's attention gets (B*nW, ws, ws, C) windows (in q-pooling blocks, the previous stage's)."""
    backbone = SAM2Hiera(TINY_SAM2_ARCH, peft=dict(type='ConvLoRA', rank=4, num_experts=2))
    seen = {}

    def record(name: str):
        def hook(module, args, out) -> None:
            seen[name] = tuple(args[0].shape)

        return hook

    hooks = [
        layer.register_forward_hook(record(n))
        for n, layer in backbone.named_modules()
        if isinstance(layer, ConvLoRALinear)
    ]
    backbone(torch.randn(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert seen['trunk.blocks.0.attn.qkv'] == (16, 4, 4, 16)  # 16x16 tokens in 4x4 windows, 16 channels
    # the q-pooling block attends in the previous stage's windows (its queries pool to 2x2 and 32 channels)
    assert seen['trunk.blocks.1.attn.qkv'] == (16, 4, 4, 16)
    assert seen['trunk.blocks.2.attn.qkv'] == (16, 2, 2, 32)  # stage 2: 8x8 tokens in 2x2 windows
    assert seen['trunk.blocks.4.attn.qkv'] == (1, 4, 4, 64)  # a global block of stage 3: the whole map


def _load_tool(path: str):
    spec = importlib.util.spec_from_file_location(f'tool_{Path(path).stem}', REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    generate_synthetic_dataset(root, num_train=2, num_val=1, img_size=64, mode='binary')
    return root


@pytest.mark.parametrize('name', list(METHODS))
def test_method_runs_one_iteration_of_tools_train_on_hiera(name, demo_data, tmp_path):
    cfg = tmp_path / 'method.py'
    cfg.write_text(f"""
_base_ = [{str(REPO / 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py')!r}]
data_root = {str(demo_data)!r}
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(_delete_=True, type='SAM2Hiera', arch={TINY_SAM2_ARCH!r}, **{METHODS[name]!r}),
    decode_head=dict(embed_dims=32, decoder_num_heads=2, decoder_mlp_dims=64))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=1, val_interval=100)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")
    status = _load_tool('tools/train.py').main([str(cfg), '--work-dir', str(tmp_path / 'w')])
    assert not status
    checkpoint = torch.load(tmp_path / 'w/iter_1.pth', map_location='cpu', weights_only=False)
    assert any(k.startswith('decode_head.mask_decoder.') for k in checkpoint['state_dict'])


def test_prompted_hiera_attention_is_attention_over_grid_and_prompt_keys():
    """VPT on a q-pooling Hiera block: the pooled queries attend over the window's keys plus P prompt keys."""
    torch.manual_seed(0)
    backbone = SAM2Hiera(TINY_SAM2_ARCH, peft=dict(type='VPT', num_tokens=3, blocks=[1]))
    attn = backbone.trunk.blocks[1].attn
    assert isinstance(attn, PromptedMultiScaleAttention) and attn.q_pool is not None
    x = torch.randn(2, 8, 8, 16)
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(2, 64, 3, heads, -1)
    q = torch.nn.functional.max_pool2d(
        qkv[:, :, 0].reshape(2, 8, 8, -1).permute(0, 3, 1, 2), 2
    )  # (2, C, 4, 4)
    q = q.permute(0, 2, 3, 1).reshape(2, 16, heads, -1)
    prompt = attn.qkv(attn.prompt_tokens).reshape(3, 3, heads, -1)
    k = torch.cat([qkv[:, :, 1], prompt[None, :, 1].expand(2, -1, -1, -1)], dim=1)  # (2, 64 + 3, nHead, c)
    v = torch.cat([qkv[:, :, 2], prompt[None, :, 2].expand(2, -1, -1, -1)], dim=1)
    scores = torch.einsum('nqhc,nkhc->nhqk', q, k) / q.shape[-1] ** 0.5
    expected = torch.einsum('nhqk,nkhc->nqhc', scores.softmax(-1), v).reshape(2, 4, 4, -1)
    torch.testing.assert_close(attn(x), attn.proj(expected), atol=1e-5, rtol=1e-5)
