import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import LoRALinear
from mmseg_sam.models.peft.cobot import COBOTSlot, QuaternionLinear
from tests.conftest import TINY_IMG, perturb_

LORA_QV4 = dict(type='LoRA', rank=4, targets=('q', 'v'), init='xavier')


def _model(arch, img_size=TINY_IMG, **cfg):
    cfg.setdefault('host', LORA_QV4)
    return SAMViT(arch=arch, img_size=img_size, peft=dict(type='COBOT', **cfg))


@pytest.mark.slow
def test_extra_parameters_over_lora_on_vit_b():
    """ViT-B, LoRA rank 4 on q and v: host 147,456, COBOT +864 (C 96 + S 576 + gamma 96 + heads 96)."""
    host = SAMViT(arch='vit_b', img_size=64, peft=LORA_QV4).peft_report.trainable['LoRA']
    total = _model('vit_b', img_size=64).peft_report.trainable['COBOT']
    assert host == 147_456
    assert total - host == 864


@pytest.mark.slow
def test_extra_parameters_over_adaptformer_on_vit_b():
    """ViT-B, AdaptFormer bottleneck 16: host 322,752, COBOT +1,296 (192 + 144 + 192 + 768)."""
    host = dict(type='AdaptFormer', bottleneck=16)
    base = SAMViT(arch='vit_b', img_size=64, peft=host).peft_report.trainable['AdaptFormer']
    total = _model('vit_b', img_size=64, host=host).peft_report.trainable['COBOT']
    assert base == 322_752
    assert total - base == 1_296


def test_quaternion_head_equals_its_kronecker_form():
    head = QuaternionLinear(8)
    p_r, p_i, p_j, p_k = head.components
    h = {
        'r': torch.eye(4),
        'i': torch.tensor([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1], [0, 0, -1, 0]], dtype=torch.float),
        'j': torch.tensor([[0, 0, 1, 0], [0, 0, 0, -1], [-1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float),
        'k': torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0]], dtype=torch.float),
    }
    kron = sum(torch.kron(h[a], p) for a, p in zip('rijk', (p_r, p_i, p_j, p_k)))
    assert torch.equal(head.weight(), kron)
    x = torch.randn(3, 8)
    assert torch.allclose(head(x), x @ kron)
    assert (p_r == 0).all() and (head.components[1:] >= 0).all() and (head.components[1:] < 1).all()


def test_reference_inits_and_slot_order(tiny_arch):
    model = _model(tiny_arch)
    assert torch.equal(model.cobot.C, torch.ones(4, 4)) and torch.equal(model.cobot.S, torch.eye(4))
    slots = [(name, m) for name, m in model.named_modules() if isinstance(m, COBOTSlot)]
    assert [n for n, _ in slots] == [f'blocks.{b}.attn.qkv.slot_transforms.{s}' for b in (0, 1) for s in 'qv']
    assert [m.index for _, m in slots] == [0, 1, 2, 3]
    assert all(torch.equal(m.gamma, torch.ones(4)) for _, m in slots)


def test_slot_forward_is_the_reference_formula(tiny_arch):
    model = _model(tiny_arch)
    perturb_(model.cobot, std=0.3)
    slot = model.blocks[1].attn.qkv.slot_transforms['v']
    perturb_(slot, std=0.3)
    h = torch.randn(5, 4)
    c = (model.cobot.C @ model.cobot.S)[:, 3]
    expected = (h * c + h * slot.gamma) @ slot.cobot_head.weight()
    assert torch.allclose(slot(h), expected, atol=1e-6)


@pytest.mark.parametrize('form', ['summed', 'two_branch'])
@pytest.mark.parametrize('head', ['quaternion', 'linear'])
def test_merge_parity_lora_cobot(tiny_arch, form, head):
    model = _model(tiny_arch, form=form, head=head).eval()
    perturb_(model, std=0.05)  # everything non-trivial, including C, S, gamma and heads
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
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
    assert torch.allclose(before, merged, atol=1e-5)
    assert torch.allclose(before, after, atol=1e-5)


def test_gradients_reach_every_cobot_parameter(tiny_arch):
    model = _model(tiny_arch).train()
    model(torch.randn(1, 3, TINY_IMG, TINY_IMG))[-1].square().mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {'cobot.C', 'cobot.S'} <= trainable
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_state_dict_round_trip(tiny_arch):
    model = _model(tiny_arch)
    perturb_(model, std=0.05)
    other = _model(tiny_arch)
    other.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert torch.equal(model(x)[-1], other(x)[-1])
    assert len([k for k in model.state_dict() if k.endswith('.C') or k.endswith('.S')]) == 2  # stored once


def test_cobot_on_conv_lora(tiny_arch):
    model = _model(tiny_arch, host=dict(type='ConvLoRA', rank=4, num_experts=2)).eval()
    assert model.cobot.C.shape == (4, 2)  # one slot per block
    assert model(torch.randn(1, 3, TINY_IMG, TINY_IMG))[-1].shape == (1, 32, 4, 4)


def test_higher_learning_rate_through_paramwise_cfg(tiny_arch):
    model = _model(tiny_arch)
    optim_cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    wrapper = DefaultOptimWrapperConstructor(optim_cfg, dict(custom_keys={'cobot': dict(lr_mult=100.0)}))(
        model
    )
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    assert lrs['cobot.C'] == lrs['cobot.S'] == pytest.approx(1e-2)
    assert lrs['blocks.0.attn.qkv.slot_transforms.q.cobot_head.components'] == pytest.approx(1e-2)
    assert lrs['blocks.0.attn.qkv.slot_transforms.q.gamma'] == pytest.approx(1e-4)
    assert lrs['blocks.0.attn.qkv.lora_A.q.weight'] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    'cfg, error, message',
    [
        (dict(host=dict(type='ConvLoRA', rank=3)), ValueError, 'slot width .* divisible by 4, got 3'),
        (dict(host=dict(type='LoRA', rank=6)), ValueError, 'divisible by 4, got 6'),
        (dict(host='LoRA'), TypeError, 'COBOT host must be a PEFT config dict'),
        (dict(host=dict(type='Nope')), ValueError, "unknown COBOT host type 'Nope'"),
        (dict(host=dict(type='COBOT', host=LORA_QV4)), ValueError, 'COBOT cannot host itself'),
        (dict(head='octonion'), ValueError, r"COBOT head \['octonion'\] not allowed"),
        (dict(form='three'), ValueError, r"COBOT form \['three'\] not allowed"),
    ],
)
def test_bad_configs(tiny_arch, cfg, error, message):
    with pytest.raises(error, match=message):
        _model(tiny_arch, **cfg)


def test_linear_head_allows_any_width(tiny_arch):
    model = _model(tiny_arch, host=dict(type='LoRA', rank=3, targets=('q',)), head='linear')
    assert model.cobot.C.shape == (3, 2)
