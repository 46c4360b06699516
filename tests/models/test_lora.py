import pytest
import torch

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import LoRALinear, inject_peft
from tests.conftest import TINY_IMG, perturb_, tiny_vit


def _randomize_lora(model, seed=1):
    for m in model.modules():
        if isinstance(m, LoRALinear):
            for name in m.slices:
                perturb_(m.lora_B[name], seed=seed, std=0.2)


def test_only_lora_parameters_train(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', rank=4, targets=('q', 'v')))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f'blocks.{b}.attn.qkv.lora_{ab}.{s}.weight' for b in (0, 1) for ab in 'AB' for s in 'qv'}
    assert trainable == expected
    # 2 blocks x 2 slices x (A: 32x4 + B: 4x32)
    assert model.peft_report.trainable == {'LoRA': 2 * 2 * (32 * 4 + 4 * 32)}


def test_zero_init_b_gives_base_output(sam_checkpoint, tiny_arch):
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    base = tiny_vit(tiny_arch, checkpoint=str(sam_checkpoint))
    lora = tiny_vit(
        tiny_arch, dict(type='LoRA', targets=('qkv', 'proj', 'lin1', 'lin2')), str(sam_checkpoint)
    )
    with torch.no_grad():
        assert torch.equal(base(x)[-1], lora(x)[-1])


def test_gradients_reach_lora_only(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', rank=2, targets=('q', 'v'))).train()
    _randomize_lora(model)
    model(torch.randn(1, 3, TINY_IMG, TINY_IMG))[-1].square().mean().backward()
    for name, p in model.named_parameters():
        if 'lora_' in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_slices_update_only_their_part(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', targets=('k',)))
    layer = model.blocks[0].attn.qkv
    _randomize_lora(model)
    x = torch.randn(5, 32)
    with torch.no_grad():
        out = layer(x)
        base = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.equal(out[:, :32], base[:, :32]) and torch.equal(out[:, 64:], base[:, 64:])
    assert not torch.allclose(out[:, 32:64], base[:, 32:64])


@pytest.mark.parametrize('targets', [('q', 'v'), ('qkv', 'proj'), ('lin1', 'lin2', 'k')])
def test_merge_unmerge_parity(tiny_arch, targets):
    model = tiny_vit(tiny_arch, dict(type='LoRA', rank=3, alpha=6, targets=targets))
    _randomize_lora(model)
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    weights = {n: p.clone() for n, p in model.named_parameters() if not n.count('lora_')}
    with torch.no_grad():
        before = model(x)[-1]
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.merge()
        merged = model(x)[-1]
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.unmerge()
        after = model(x)[-1]
    assert not torch.allclose(before, tiny_vit(tiny_arch)(x)[-1]), 'updates must be non-zero'
    assert torch.allclose(before, merged, atol=1e-5)
    assert torch.allclose(before, after, atol=1e-6)
    for n, p in model.named_parameters():
        if n in weights:
            assert torch.allclose(p, weights[n], atol=1e-6), n


def test_state_dict_round_trip_and_base_keys_unchanged(reference_sam, sam_checkpoint, tiny_arch):
    cfg = dict(type='LoRA', targets=('q', 'v'), init='xavier')
    model = tiny_vit(tiny_arch, cfg)
    state = model.state_dict()
    base_keys = set(reference_sam.image_encoder.state_dict())
    assert base_keys <= set(state)
    assert all('lora_' in k for k in set(state) - base_keys)
    other = tiny_vit(tiny_arch, cfg)
    other.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert torch.equal(model(x)[-1], other(x)[-1])


def test_xavier_init_is_nonzero(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', targets=('q',), init='xavier'))
    assert model.blocks[0].attn.qkv.lora_B['q'].weight.abs().sum() > 0


@pytest.mark.parametrize(
    'cfg, error, message',
    [
        (dict(type='LoRA', rank=0), ValueError, 'LoRA rank must be a positive int, got 0'),
        (dict(type='LoRA', rank=2.5), ValueError, 'LoRA rank must be a positive int, got 2.5'),
        (dict(type='LoRA', targets=('q', 'o')), ValueError, r"LoRA targets \['o'\] not allowed"),
        (dict(type='LoRA', targets=('qkv', 'q')), ValueError, "'qkv' already covers"),
        (dict(type='LoRA', dropout=1.0), ValueError, r'dropout must be in \[0, 1\), got 1.0'),
        (dict(type='LoRA', init='normal'), ValueError, r"LoRA init \['normal'\] not allowed"),
        (dict(type='LoRA', blocks=(7,)), ValueError, 'LoRA found no block matching'),
        (dict(type='LoRA', blocks=(1, 7)), ValueError, r'LoRA blocks \[7\] matched no block'),
        (dict(type='LoRAX'), ValueError, "unknown PEFT type 'LoRAX'; registered: .*'LoRA'"),
        (dict(rank=4), TypeError, 'must be a dict with a "type" key'),
    ],
)
def test_bad_config(tiny_arch, cfg, error, message):
    with pytest.raises(error, match=message):
        tiny_vit(tiny_arch, cfg)


def test_double_injection_is_refused(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', targets=('q',)))
    with pytest.raises(ValueError, match='blocks.0.attn.qkv is already adapted by LoRALinear'):
        inject_peft(model, dict(type='LoRA', targets=('v',)))


def test_blocks_option(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', targets=('q',), blocks=(1,)))
    assert isinstance(model.blocks[1].attn.qkv, LoRALinear)
    assert not isinstance(model.blocks[0].attn.qkv, LoRALinear)


class _Scale(torch.nn.Module):
    """A linear slot transform, as COBOT installs them."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.m = torch.nn.Parameter(torch.randn(width, width))

    def forward(self, z):
        return z @ self.m.T

    def matrix(self):
        return self.m


def test_slot_transforms_apply_and_merge(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', rank=3, targets=('q', 'v')))
    _randomize_lora(model)
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        plain = model(x)[-1]
        for m in model.modules():
            if isinstance(m, LoRALinear):
                assert m.bottleneck_slots() == {'q': 3, 'v': 3}
                for name in m.slices:
                    m.slot_transforms[name] = _Scale(3)
        transformed = model(x)[-1]
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.merge()
        merged = model(x)[-1]
    assert not torch.allclose(plain, transformed)
    assert torch.allclose(transformed, merged, atol=1e-5)


def test_lora_refuses_to_replace_another_methods_wrapper(tiny_arch):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(type='SSF', targets=('qkv',)))
    with pytest.raises(ValueError, match='blocks.0.attn.qkv is already adapted by SSFLinear'):
        inject_peft(model, dict(type='LoRA', targets=('q',)))
