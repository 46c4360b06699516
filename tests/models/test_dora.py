"""DoRA: the formula re-computed by hand, exact merging, the count on ViT-B, and its options."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import merge_peft
from mmseg_sam.models.peft.dora import DoRALinear
from tests.conftest import TINY_IMG


def _layer(**kwargs) -> DoRALinear:
    torch.manual_seed(0)
    base = nn.Linear(8, 12).requires_grad_(False)  # frozen, as the backbone leaves it
    layer = DoRALinear(base, {'q': slice(0, 4), 'v': slice(8, 12)}, rank=2, alpha=3.0, **kwargs)
    with torch.no_grad():  # non-zero B and magnitudes away from the initial norms
        for p in (*layer.lora_B.parameters(), *layer.magnitude.parameters()):
            p.add_(torch.randn_like(p) * 0.3)
    return layer


def test_starts_as_the_frozen_layer():
    torch.manual_seed(0)
    base = nn.Linear(8, 12)
    layer = DoRALinear(base, {'q': slice(0, 4)}, rank=2, alpha=2.0)
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), base(x), atol=1e-6, rtol=0)


def test_equals_the_formula_by_hand():
    layer = _layer()
    x = torch.randn(3, 7, 8)
    weight = layer.weight.detach().clone()
    for name, s in layer.slices.items():  # W' = m * V / ||V||_row, V = W0 + (alpha / r) B A
        v = weight[s] + (layer.lora_B[name].weight @ layer.lora_A[name].weight) * 1.5
        weight[s] = layer.magnitude[name][:, None] * v / v.norm(dim=1, keepdim=True)
    expected = F.linear(x, weight, layer.bias)
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected[..., 4:8], expected[..., 4:8] * 0)  # the unadapted k rows pass


def test_merges_exactly_and_unmerges():
    layer = _layer()
    x = torch.randn(6, 8)
    frozen = layer.weight.detach().clone()
    with torch.no_grad():
        before = layer(x)
        layer.merge()
        merged = layer(x)
        layer.unmerge()
        after = layer(x)
    torch.testing.assert_close(merged, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.weight, frozen, atol=1e-6, rtol=0)


@pytest.mark.parametrize('detach_norm', [True, False])
def test_gradients(detach_norm):
    layer = _layer(detach_norm=detach_norm)
    layer(torch.randn(4, 8)).square().sum().backward()
    trainable = {n: p for n, p in layer.named_parameters() if n.startswith(('lora_', 'magnitude'))}
    assert trainable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    assert layer.weight.grad is None and layer.bias.grad is None


@pytest.mark.slow
def test_backbone_merge_and_vit_b_count(tiny_arch):
    model = SAMViT(
        arch=tiny_arch, img_size=TINY_IMG, peft=dict(type='DoRA', rank=2, targets=('q', 'v', 'lin1'))
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    model.eval()
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        before = model(x)[-1]
        assert merge_peft(model) == 4  # qkv and lin1 of 2 blocks
        torch.testing.assert_close(model(x)[-1], before, atol=1e-5, rtol=0)
    with torch.device('meta'):
        vit_b = SAMViT(arch='vit_b', peft=dict(type='DoRA', rank=4, targets=('q', 'v')))
    assert vit_b.peft_report.trainable['DoRA'] == 147_456 + 2 * 768 * 12


@pytest.mark.parametrize(
    ('cfg', 'message'),
    [
        (dict(rank=0), 'DoRA rank must be a positive int, got 0'),
        (dict(targets=('qkv', 'q')), "'qkv' already covers"),
        (dict(detach_norm='yes'), "DoRA detach_norm must be a bool, got 'yes'"),
        (dict(blocks=(9,)), 'DoRA found no block matching'),
    ],
)
def test_bad_options(tiny_arch, cfg, message):
    with pytest.raises(ValueError, match=message):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(type='DoRA', **cfg))
