"""PEFT on SAM 2.1's Hiera (tiny) beyond the one preset table (tests/models/test_peft_table.py, which trains
every applicable preset on Hiera too): exact merges, refusals with the reason, what the layers see."""

import pytest
import torch

from mmseg_sam.models.backbones import SAM2Hiera
from mmseg_sam.models.peft import ConvLoRALinear, PromptedMultiScaleAttention, merge_peft
from mmseg_sam.models.peft.base import build_peft_method, refused_places
from mmseg_sam.models.peft.presets import PRESETS
from tests.peft_tiny import tiny

from .sam2_fixtures import TINY_SAM2_ARCH

# Presets whose methods need a place SAM2Hiera does not offer: key -> {place: the family's reason}.
REFUSED = {
    item.key: refused_places(SAM2Hiera, item.peft) for item in PRESETS if refused_places(SAM2Hiera, item.peft)
}
METHODS = {item.key: tiny(item) for item in PRESETS if item.key not in REFUSED}
MERGEABLE = [
    key
    for key, settings in METHODS.items()
    if 'peft' in settings and build_peft_method(settings['peft']).mergeable
]


def test_the_declared_refusals_are_sam_adapter_and_lst():
    assert {key: sorted(places) for key, places in REFUSED.items()} == {
        'sam-adapter': ['input_prompts'],
        'lst-d192': ['side_network'],
    }
    assert MERGEABLE == ['bitfit', 'ssf', 'lora-qv-r4', 'dora-qv-r4', 'lora-qkv-r3', 'cobot-lora-qv-r4']


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
        assert merge_peft(backbone) > 0 or name == 'bitfit'
        after = backbone(x)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(('name', 'places'), list(REFUSED.items()))
def test_methods_without_their_place_refuse_with_the_reason(name, places):
    ((place, reason),) = places.items()
    with pytest.raises(
        ValueError, match=rf'needs a backbone with an? {place} place \(SAMViT\), got SAM2Hiera: '
    ) as err:
        SAM2Hiera(TINY_SAM2_ARCH, **tiny(name))
    assert str(err.value).endswith(reason)


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
