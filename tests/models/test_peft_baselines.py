"""BitFit, SSF, Adapter and AdaptFormer on the tiny SAM ViT: one table for what they share."""

import copy
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmseg_sam.models.peft.adapter  # noqa: F401  (registers Adapter)
import mmseg_sam.models.peft.adaptformer  # noqa: F401  (registers AdaptFormer)
import mmseg_sam.models.peft.bitfit  # noqa: F401  (registers BitFit)
import mmseg_sam.models.peft.ssf  # noqa: F401  (registers SSF)
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import inject_peft
from mmseg_sam.models.peft.adapter import AdapterLayer
from mmseg_sam.models.peft.adaptformer import AdaptFormerLayer
from mmseg_sam.models.peft.bottleneck import BottleneckAdapter
from mmseg_sam.models.peft.ssf import SSFLayerNorm, SSFLinear
from mmseg_sam.models.sam_modeling import window_partition, window_unpartition
from tests.conftest import TINY_IMG, perturb_, tiny_vit
from tests.peft_tiny import tiny

_BLOCK_BIASES = r'blocks\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.lin[12]|norm[12])\.bias'
# id -> (config: the package preset at the tiny arch, full-match pattern of the method's parameter names)
METHODS = {
    'BitFit': (tiny('bitfit')['peft'], rf'{_BLOCK_BIASES}|patch_embed\.proj\.bias|neck\.[13]\.bias'),
    'SSF': (
        tiny('ssf')['peft'],
        r'blocks\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.lin[12]|norm[12])\.ssf_(?:scale|shift)',
    ),
    'Adapter': (
        tiny('adapter-b64')['peft'],
        r'blocks\.\d+\.(?:attn|mlp)_adapter\.(?:down|up)\.(?:weight|bias)',
    ),
    'AdaptFormer': (
        tiny('adaptformer-b16')['peft'],
        r'blocks\.\d+\.mlp_parallel\.(?:norm|down|up)\.(?:weight|bias)',
    ),
}
ALL = pytest.mark.parametrize('method', list(METHODS))


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny ops: torch's thread pool costs ~100x on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _perturb_trainable(model, seed=1, std=0.2):
    """Non-zero values for the method's parameters (zero `up` makes down's gradient 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in _trainable(model).values():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


def _image(h=TINY_IMG, w=TINY_IMG, seed=0):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- common table


@ALL
def test_forward_square_and_non_square(tiny_arch, method):
    model = tiny_vit(tiny_arch, METHODS[method][0])
    with torch.no_grad():
        assert model(_image())[-1].shape == (1, 32, 4, 4)
        assert model(_image(64, 96))[-1].shape == (1, 32, 4, 6)


@ALL
def test_only_method_parameters_train_and_get_gradients(tiny_arch, method):
    cfg, pattern = METHODS[method]
    model = _perturb_trainable(tiny_vit(tiny_arch, cfg).train())
    trainable = _trainable(model)
    assert trainable and all(re.fullmatch(pattern, n) for n in trainable), sorted(trainable)
    assert sorted(trainable) == model.peft_report.parameter_names[method]
    if method == 'BitFit':  # every bias of SAM's encoder, nothing else
        assert set(trainable) == {n for n, _ in model.named_parameters() if n.endswith('.bias')}
    model(_image(64, 96))[-1].square().mean().backward()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@ALL
def test_base_keys_unchanged_and_strict_round_trip(reference_sam, tiny_arch, method):
    cfg, pattern = METHODS[method]
    model = _perturb_trainable(tiny_vit(tiny_arch, cfg))
    state = model.state_dict()
    base = reference_sam.image_encoder.state_dict()
    assert set(base) <= set(state)
    assert all(re.fullmatch(pattern, k) for k in set(state) - set(base)), sorted(set(state) - set(base))
    # An official encoder checkpoint loads by key into an injected model.
    other = tiny_vit(tiny_arch, cfg)
    result = other.load_state_dict(base, strict=False)
    assert not result.unexpected_keys
    assert all(re.fullmatch(pattern, k) for k in result.missing_keys), result.missing_keys
    other.load_state_dict(state, strict=True)
    x = _image()
    with torch.no_grad():
        assert torch.equal(model(x)[-1], other(x)[-1])


@ALL
def test_identity_gives_base_output(sam_checkpoint, tiny_arch, method):
    """Zero `up` (Adapter, AdaptFormer), untouched biases (BitFit), gamma=1/beta=0 (SSF)."""
    base = tiny_vit(tiny_arch, checkpoint=str(sam_checkpoint))
    model = tiny_vit(tiny_arch, METHODS[method][0], checkpoint=str(sam_checkpoint))
    if method == 'SSF':
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, SSFLinear | SSFLayerNorm):
                    assert not torch.equal(m.ssf_scale, torch.ones_like(m.ssf_scale))  # N(1, 0.02)
                    m.ssf_scale.fill_(1.0)
                    m.ssf_shift.zero_()
    x = _image(64, 96)
    with torch.no_grad():
        assert torch.equal(base(x)[-1], model(x)[-1])
        _perturb_trainable(model)
        assert not torch.allclose(base(x)[-1], model(x)[-1], atol=1e-4)


@ALL
def test_deepcopy_and_pickle_keep_the_method(tiny_arch, method):
    model = _perturb_trainable(tiny_vit(tiny_arch, METHODS[method][0]))
    x = _image()
    with torch.no_grad():
        out = model(x)[-1]
        clone = copy.deepcopy(model)
        assert torch.equal(clone(x)[-1], out)
        assert torch.equal(pickle.loads(pickle.dumps(model))(x)[-1], out)
        # The clone's hooks use the clone's modules: changing them changes the clone only.
        _perturb_trainable(clone, seed=2)
        assert not torch.allclose(clone(x)[-1], out, atol=1e-4)
        assert torch.equal(model(x)[-1], out)


@pytest.mark.parametrize(
    'method, message',
    [
        ('BitFit', r'blocks\.0\.norm1\.bias is already trained by BitFit'),
        ('SSF', r'blocks\.0\.attn\.qkv is already adapted by SSF'),
        ('Adapter', r'blocks\.0\.attn_adapter is already adapted by AdapterLayer'),
        ('AdaptFormer', r'blocks\.0\.mlp_parallel is already adapted by AdaptFormerLayer'),
    ],
)
def test_double_injection_is_refused(tiny_arch, method, message):
    model = tiny_vit(tiny_arch, METHODS[method][0])
    with pytest.raises(ValueError, match=message):
        inject_peft(model, METHODS[method][0])


@ALL
def test_blocks_option(tiny_arch, method):
    cfg, pattern = METHODS[method]
    model = tiny_vit(tiny_arch, {**cfg, 'blocks': [1]})
    names = [n for n in _trainable(model) if n.startswith('blocks.')]
    assert names and all(n.startswith('blocks.1.') for n in names)
    with pytest.raises(ValueError, match=r'blocks \[7\] matched no'):
        tiny_vit(tiny_arch, {**cfg, 'blocks': (1, 7)})
    with pytest.raises(ValueError, match='found no'):
        tiny_vit(tiny_arch, {**cfg, 'blocks': (7,)})


@pytest.mark.parametrize(
    'cfg, message',
    [
        (dict(type='BitFit', targets=('qkv', 'fc1')), r"BitFit targets \['fc1'\] not allowed"),
        (dict(type='BitFit', targets=()), r"BitFit targets must name at least one of \['qkv'"),
        (
            dict(type='BitFit', blocks=(-1,)),
            r'BitFit blocks must be None \(every block\) or a non-empty list .* got \(-1,\)',
        ),
        (dict(type='SSF', targets=('norm3',)), r"SSF targets \['norm3'\] not allowed"),
        (
            dict(type='SSF', blocks=()),
            r'SSF blocks must be None \(every block\) or a non-empty list .* got \(\)',
        ),
        (dict(type='Adapter', bottleneck=0), 'Adapter bottleneck must be a positive int, got 0'),
        (dict(type='Adapter', targets=('attn', 'ffn')), r"Adapter targets \['ffn'\] not allowed"),
        (dict(type='Adapter', act='tanh'), r"Adapter act \['tanh'\] not allowed"),
        (dict(type='AdaptFormer', bottleneck=0), 'AdaptFormer bottleneck must be a positive int, got 0'),
        (dict(type='AdaptFormer', dropout=1.0), r'AdaptFormer dropout must be in \[0, 1\), got 1.0'),
        (dict(type='AdaptFormer', dropout=-0.1), r'AdaptFormer dropout must be in \[0, 1\), got -0.1'),
        (dict(type='AdaptFormer', scale=float('nan')), 'AdaptFormer scale must be a finite number, got nan'),
    ],
)
def test_bad_config(tiny_arch, cfg, message):
    with pytest.raises(ValueError, match=message):
        tiny_vit(tiny_arch, cfg)


# ---------------------------------------------------------------- BitFit


def test_bitfit_targets_and_neck_flag(tiny_arch):
    model = tiny_vit(
        tiny_arch, dict(type='BitFit', targets=('qkv', 'norm2'), include_neck_and_patch_embed=False)
    )
    expected = {f'blocks.{b}.{path}.bias' for b in (0, 1) for path in ('attn.qkv', 'norm2')}
    assert set(_trainable(model)) == expected
    assert model.peft_report.trainable == {'BitFit': 2 * (3 * 32 + 32)}


# ---------------------------------------------------------------- SSF


def test_ssf_wraps_only_its_targets_and_keeps_weights(tiny_arch):
    model = tiny_vit(tiny_arch)
    norm1 = model.blocks[0].norm1
    report = inject_peft(model, dict(type='SSF', targets=('norm1', 'lin2'), blocks=(0,)))
    block = model.blocks[0]
    assert isinstance(block.norm1, SSFLayerNorm) and isinstance(block.mlp.lin2, SSFLinear)
    assert type(block.attn.qkv) is nn.Linear and type(model.blocks[1].norm1) is nn.LayerNorm
    assert block.norm1.weight is norm1.weight and block.norm1.bias is norm1.bias  # taken over
    assert report.trainable == {'SSF': 2 * (32 + 32)}  # (gamma, beta) of width 32 on 2 layers


def _ssf_layers(model):
    return [m for m in model.modules() if isinstance(m, SSFLinear | SSFLayerNorm)]


def test_ssf_merge_unmerge_parity(tiny_arch):
    torch.manual_seed(0)  # the base weights too: unmerge divides by gamma, so the rounding depends on them
    model = _perturb_trainable(tiny_vit(tiny_arch, dict(type='SSF')), std=0.3)  # gamma ~ 1 +- 0.3
    weights = {n: p.clone() for n, p in model.named_parameters() if 'ssf_' not in n}
    x = _image(64, 96)
    with torch.no_grad():
        before = model(x)[-1]
        for m in _ssf_layers(model):
            m.merge()
        merged = model(x)[-1]
        changed = [n for n, p in model.named_parameters() if n in weights and not torch.equal(p, weights[n])]
        for m in _ssf_layers(model):
            m.unmerge()
        after = model(x)[-1]
    assert len(changed) == 2 * 6 * 2  # weight and bias of 6 layers in 2 blocks were folded into
    assert torch.allclose(before, merged, atol=1e-5)
    assert torch.allclose(before, after, atol=1e-6)
    for n, p in model.named_parameters():
        if n in weights:
            assert torch.allclose(p, weights[n], atol=1e-6), n


def test_ssf_merged_layer_skips_scale_and_shift():
    layer = SSFLinear(nn.Linear(4, 3))
    with torch.no_grad():
        layer.ssf_scale.copy_(torch.tensor([2.0, -1.0, 0.5]))
        layer.ssf_shift.copy_(torch.tensor([0.1, 0.2, 0.3]))
        x = torch.randn(5, 4)
        expected = F.linear(x, layer.weight, layer.bias) * layer.ssf_scale + layer.ssf_shift
        assert torch.allclose(layer(x), expected)
        layer.merge()
        assert layer.merged and torch.allclose(F.linear(x, layer.weight, layer.bias), expected, atol=1e-6)
        assert torch.allclose(layer(x), expected, atol=1e-6)


def test_ssf_merge_errors():
    no_bias = SSFLinear(nn.Linear(4, 3, bias=False))
    with pytest.raises(ValueError, match='cannot merge SSF into a SSFLinear without a bias'):
        no_bias.merge()
    layer = SSFLayerNorm(nn.LayerNorm(3))
    with torch.no_grad():
        layer.ssf_scale[1] = 0.0
    with pytest.raises(ValueError, match='ssf_scale has 1 zero entries'):
        layer.merge()
    assert not layer.merged
    with torch.no_grad():
        layer.ssf_scale[1] = 1.0
        layer.merge()
        layer.ssf_scale[1] = 0.0
    with pytest.raises(ValueError, match='not invertible'):
        layer.unmerge()


def test_ssf_refuses_layers_of_other_methods(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='LoRA', targets=('qkv',)))
    with pytest.raises(ValueError, match=r'blocks\.0\.attn\.qkv is already adapted by LoRALinear'):
        inject_peft(model, dict(type='SSF', targets=('proj', 'qkv')))
    assert type(model.blocks[0].attn.proj) is nn.Linear  # refused before wrapping anything
    model = tiny_vit(tiny_arch, dict(type='AdaptFormer'))  # fills a place: the norms stay free for SSF
    inject_peft(model, dict(type='SSF', targets=('norm1', 'norm2')))


# ---------------------------------------------------------------- Adapter and AdaptFormer


def test_adapter_parameter_count(tiny_arch):
    per_adapter = 32 * 8 + 8 + 8 * 32 + 32  # down (C r + r) + up (r C + C), C = 32, r = 8
    model = tiny_vit(tiny_arch, dict(type='Adapter', bottleneck=8))
    assert model.peft_report.trainable == {'Adapter': 2 * 2 * per_adapter}
    model = tiny_vit(tiny_arch, dict(type='Adapter', bottleneck=8, targets=('mlp',), blocks=(1,)))
    assert model.peft_report.trainable == {'Adapter': per_adapter}


@pytest.mark.slow
def test_adaptformer_vit_b_parameter_count():
    model = SAMViT(arch='vit_b', img_size=64, peft=dict(type='AdaptFormer'))
    assert model.peft_report.trainable['AdaptFormer'] == 322_752  # 12 x 26,896


def _block_reference(block, x, attn_out=lambda f: f, mlp_out=lambda f, x, h: f):
    """segment_anything's Block.forward with a function on each sub-layer's output."""
    shortcut = x
    h = block.norm1(x)
    hw = h.shape[1:3]
    h, pad_hw = window_partition(h, block.window_size) if block.window_size else (h, None)
    h = block.attn(h)
    h = window_unpartition(h, block.window_size, pad_hw, hw) if block.window_size else h
    x = shortcut + attn_out(h)
    normed = block.norm2(x)
    return x + mlp_out(block.mlp(normed), x, normed)


def test_adapter_is_serial_on_the_sub_layer_output(tiny_arch):
    model = _perturb_trainable(tiny_vit(tiny_arch, dict(type='Adapter', bottleneck=4, act='relu')))
    for block in model.blocks:  # windowed (padded) and global
        a, m = block.attn_adapter, block.mlp_adapter
        x = torch.randn(2, 4, 4, 32)
        with torch.no_grad():
            expected = _block_reference(
                block,
                x,
                attn_out=lambda f, a=a: f + a.up(torch.relu(a.down(f))),
                mlp_out=lambda f, *_, m=m: f + m.up(torch.relu(m.down(f))),
            )
            torch.testing.assert_close(block(x), expected, atol=1e-6, rtol=0)


def test_adaptformer_is_parallel_to_the_mlp(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='AdaptFormer', bottleneck=4, scale=0.5))
    model = _perturb_trainable(model)
    block = model.blocks[0]
    layer = block.mlp_parallel
    perturb_(block.norm2, std=0.5)  # an identity-like norm2 would hide LN_a(norm2(x)) for LN_a(x)
    x = torch.randn(2, 4, 4, 32)
    with torch.no_grad():
        expected = _block_reference(
            block, x, mlp_out=lambda f, x, h: f + 0.5 * layer.up(torch.relu(layer.down(layer.norm(x))))
        )
        torch.testing.assert_close(block(x), expected, atol=1e-6, rtol=0)


def test_adaptformer_branch_input_is_pinned_on_identical_weights(tiny_arch):
    """'block': the branch reads x (AdaptFormer's code); 'mlp': norm2(x) (SAM-COBOT's Adapter wraps the MLP)."""
    models = {}
    for where in ('block', 'mlp'):
        torch.manual_seed(0)
        models[where] = tiny_vit(
            tiny_arch, dict(type='AdaptFormer', bottleneck=4, scale=0.5, branch_input=where)
        )
    _perturb_trainable(models['block'])
    perturb_(models['block'].blocks[0].norm2, std=0.5)
    models['mlp'].load_state_dict(models['block'].state_dict())  # identical weights, strict
    x = torch.randn(2, 4, 4, 32)  # a block input, (B, H, W, C)
    outputs = {}
    for where, model in models.items():
        block = model.blocks[0]
        layer = block.mlp_parallel
        assert f"branch_input='{where}'" in repr(layer)
        with torch.no_grad():
            expected = _block_reference(
                block,
                x,
                mlp_out=lambda f, x, h, layer=layer, where=where: (
                    f + 0.5 * layer.up(torch.relu(layer.down(layer.norm(x if where == 'block' else h))))
                ),
            )
            outputs[where] = block(x)
        torch.testing.assert_close(outputs[where], expected, atol=1e-6, rtol=0)
    assert (outputs['block'] - outputs['mlp']).abs().max() > 1e-3  # same parameters, another function
    image = _image()
    with torch.no_grad():
        assert not torch.allclose(models['block'](image)[-1], models['mlp'](image)[-1], atol=1e-4)
    with pytest.raises(ValueError, match=r"branch_input must be one of \('block', 'mlp'\), got 'norm1'"):
        tiny_vit(tiny_arch, dict(type='AdaptFormer', branch_input='norm1'))


def test_adaptformer_dropout_acts_in_training(tiny_arch):
    model = _perturb_trainable(tiny_vit(tiny_arch, dict(type='AdaptFormer', dropout=0.5)))
    x = _image()
    with torch.no_grad():
        evals = model(x)[-1], model(x)[-1]
        model.train()
        torch.manual_seed(0)
        train = model(x)[-1]
    assert torch.equal(*evals) and not torch.allclose(train, evals[0], atol=1e-4)


class _Scale(nn.Module):
    """A slot transform ``z -> c z``."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, z):
        return self.c * z


@pytest.mark.parametrize('method, layer_type', [('Adapter', AdapterLayer), ('AdaptFormer', AdaptFormerLayer)])
def test_slot_transforms(tiny_arch, method, layer_type):
    model = _perturb_trainable(tiny_vit(tiny_arch, METHODS[method][0]))
    layers = [m for m in model.modules() if isinstance(m, BottleneckAdapter)]
    assert layers and all(type(m) is layer_type and m.bottleneck_slots() == {'adapter': 8} for m in layers)
    x = _image()
    t = torch.randn(4, 32)
    with torch.no_grad():
        plain = model(x)[-1]
        for m in layers:
            m.slot_transforms['adapter'] = _Scale(3.0)
        transformed = model(x)[-1]
        layer = layers[0]
        expected = layer.up(layer.act(3.0 * layer.down(layer.norm(t)))) * layer.scale
        assert torch.allclose(BottleneckAdapter.forward(layer, t), expected, atol=1e-6)  # the branch alone
    assert not torch.allclose(plain, transformed, atol=1e-4)


@pytest.mark.parametrize('method', ['Adapter', 'AdaptFormer'])
def test_merge_is_not_supported(tiny_arch, method):
    model = tiny_vit(tiny_arch, METHODS[method][0])
    layer = next(m for m in model.modules() if isinstance(m, BottleneckAdapter))
    with pytest.raises(NotImplementedError, match=f'{method} is not linear in its input'):
        layer.merge()
    layer.unmerge()  # nothing to undo


@pytest.mark.parametrize('host', ['Adapter', 'AdaptFormer'])
def test_cobot_orchestrates_the_adapter_slots(tiny_arch, host):
    model = tiny_vit(tiny_arch, dict(type='COBOT', host=METHODS[host][0]))
    layers = [m for m in model.modules() if isinstance(m, BottleneckAdapter)]
    assert len(layers) == (4 if host == 'Adapter' else 2)
    assert all('adapter' in m.slot_transforms for m in layers)
    with torch.no_grad():
        assert model(_image(64, 96))[-1].shape == (1, 32, 4, 6)
