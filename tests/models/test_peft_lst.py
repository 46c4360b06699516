import copy
import pickle

import pytest
import torch

import mmseg_sam.models.peft.lst  # noqa: F401  (registers LST)
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft.lst import LadderSideNetwork
from tests.conftest import TINY_IMG, perturb_

# Small side network for the tiny arch (C 32, J 1): D 12, 3 heads.
SIDE = dict(side_dims=12, side_heads=3)


def _model(arch, peft=True, **cfg):
    lst = dict(type='LST', **{**SIDE, **cfg}) if peft else None
    return SAMViT(arch=arch, img_size=TINY_IMG, peft=lst).eval()


def _base_and_lst(arch, **cfg):
    """A plain tiny SAMViT and an LST-injected one with the same (perturbed) SAM weights."""
    base = perturb_(_model(arch, peft=False), seed=3)
    model = _model(arch, **cfg)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert all(k.startswith('side_network.') for k in missing) and not unexpected
    return base, model


def _image(h=TINY_IMG, w=TINY_IMG, seed=0):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_output_equals_frozen_model_at_init(tiny_arch):
    base, model = _base_and_lst(tiny_arch)
    x = _image()
    with torch.no_grad():
        assert torch.equal(model(x)[-1], base(x)[-1])
        perturb_(model.side_network.up, std=0.1)
        assert not torch.allclose(model(x)[-1], base(x)[-1])  # the check above is not vacuous


def test_gradients_reach_lst_only_even_with_sam_trainable(tiny_arch):
    model = _model(tiny_arch).train()
    perturb_(model.side_network.up, std=0.1)
    for name, p in model.named_parameters():
        if not name.startswith('side_network.'):
            p.requires_grad_(True)  # the detach, not requires_grad, must stop the gradient
    model(_image())[-1].square().mean().backward()
    lst_names = [n for n, _ in model.named_parameters() if n.startswith('side_network.')]
    assert 'side_network.alpha' in lst_names and 'side_network.up.weight' in lst_names
    for name, p in model.named_parameters():
        if name.startswith('side_network.'):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        elif name.startswith('neck.'):  # after the fusion: trained whenever requires_grad is set
            assert p.grad is not None, name
        else:  # patch_embed, pos_embed, blocks: the encoder is skipped by backprop
            assert p.grad is None, name


def test_shapes_square_and_non_square(tiny_arch):
    model = _model(tiny_arch)
    perturb_(model.side_network.up, std=0.1)
    with torch.no_grad():
        assert model(_image())[-1].shape == (1, 32, 4, 4)
        assert model(_image(64, 96))[-1].shape == (1, 32, 4, 6)
        assert model(torch.randn(2, 3, 64, 96))[-1].shape == (2, 32, 4, 6)


def test_state_dict_round_trip_and_base_keys(tiny_arch):
    model = _model(tiny_arch)
    perturb_(model, std=0.05)
    other = _model(tiny_arch)
    other.load_state_dict(model.state_dict(), strict=True)
    x = _image()
    with torch.no_grad():
        assert torch.equal(model(x)[-1], other(x)[-1])
    base_keys = set(_model(tiny_arch, peft=False).state_dict())
    keys = set(model.state_dict())
    assert {k for k in keys if not k.startswith('side_network.')} == base_keys
    assert {k.split('.')[1] for k in keys - base_keys} == {'down', 'alpha', 'stages', 'up'}


def test_trainable_parameter_count_by_hand(tiny_arch):
    model = _model(tiny_arch)
    c, d, j = 32, 12, 1
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = (j + 1) * (c * d + d) + j + j * block + (d * c + c)
    assert expected == 3093
    assert model.peft_report.trainable['LST'] == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    deeper = _model(tiny_arch, side_depth_per_stage=2)
    assert deeper.peft_report.trainable['LST'] == expected + block
    assert len(deeper.side_network.stages[0]) == 2


def test_gates_start_at_one_half(tiny_arch):
    model = _model(tiny_arch, temperature=0.1)
    assert model.side_network.alpha.shape == (1,) and torch.equal(model.side_network.alpha, torch.zeros(1))
    assert torch.equal(model.side_network.mu, torch.full((1,), 0.5))
    with torch.no_grad():
        model.side_network.alpha.fill_(0.05)
    assert torch.allclose(model.side_network.mu, torch.sigmoid(torch.tensor([0.5])))  # alpha / T


def test_one_stage_per_global_block(tiny_arch):
    arch = dict(tiny_arch, num_layers=3, global_attn_indexes=(0, 2))
    model = SAMViT(arch=arch, img_size=TINY_IMG, peft=dict(type='LST', **SIDE)).eval()
    assert len(model.side_network.stages) == 2 and len(model.side_network.down) == 3
    perturb_(model.side_network.up, std=0.1)
    with torch.no_grad():
        assert model(_image(64, 96))[-1].shape == (1, 32, 4, 6)


@pytest.mark.parametrize(
    'cfg, message',
    [
        (dict(side_dims=10, side_heads=3), 'side_dims=10 is not divisible by side_heads=3'),
        (dict(side_dims=0), 'side_dims must be a positive int, got 0'),
        (dict(side_heads=0), 'side_heads must be a positive int, got 0'),
        (dict(side_depth_per_stage=0), 'side_depth_per_stage must be a positive int, got 0'),
        (dict(temperature=0.0), 'temperature must be a finite number > 0, got 0.0'),
    ],
)
def test_bad_options(tiny_arch, cfg, message):
    with pytest.raises(ValueError, match=message):
        _model(tiny_arch, **cfg)


def test_no_global_block(tiny_arch):
    arch = dict(tiny_arch, global_attn_indexes=())
    with pytest.raises(ValueError, match='has none among its 2 blocks'):
        SAMViT(arch=arch, img_size=TINY_IMG, peft=dict(type='LST', **SIDE))


def test_double_injection(tiny_arch):
    with pytest.raises(ValueError, match='side_network is already adapted by LadderSideNetwork'):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=[dict(type='LST', **SIDE)] * 2)


def test_refuses_a_trainable_encoder(tiny_arch):
    with pytest.raises(ValueError, match=r"trainable parameters \['pos_embed'"):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, frozen=False, peft=dict(type='LST', **SIDE))
    with pytest.raises(ValueError, match=r'blocks\.0\.attn\.qkv\.lora_A'):
        SAMViT(
            arch=tiny_arch,
            img_size=TINY_IMG,
            peft=[dict(type='LoRA', rank=2, targets=('q',)), dict(type='LST', **SIDE)],
        )


def test_deepcopy_pickle_and_nothing_stored_between_forwards(tiny_arch):
    model = _model(tiny_arch)
    perturb_(model.side_network.up, std=0.1)
    x = _image()
    with torch.no_grad():
        out = model(x)[-1]
    clone = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(clone(x)[-1], out)
        clone.side_network.up.bias.add_(1.0)
        assert not torch.allclose(clone(x)[-1], out)
        assert torch.equal(model(x)[-1], out)
    tensors = [k for k, v in vars(model.side_network).items() if isinstance(v, torch.Tensor)]
    assert tensors == []
    with torch.no_grad():
        assert torch.equal(pickle.loads(pickle.dumps(model))(x)[-1], out)


def test_the_side_network_reads_the_block_0_input_and_the_global_blocks():
    side = LadderSideNetwork(8, (1,), side_dims=6, side_heads=3)
    assert side.tap_blocks == (1,)
    with pytest.raises(AssertionError):
        side([torch.zeros(1, 2, 2, 8)])  # one map; expected the block-0 input and one global block


def test_backprop_skips_the_encoder(tiny_arch):
    """Frozen encoder: the output needs grad (LST), yet no graph leads back to the image."""
    model = _model(tiny_arch).train()
    perturb_(model.side_network.up, std=0.1)
    image = _image().requires_grad_(True)
    out = model(image)[-1]
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), image, allow_unused=True)
    assert grad is None
    with pytest.raises(RuntimeError, match='not have been used in the graph'):
        torch.autograd.grad(model(image)[-1].sum(), image)
