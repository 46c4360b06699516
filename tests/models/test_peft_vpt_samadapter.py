"""VPT (prefix prompts in attention) and SAM-Adapter (EVP block prompts) on the tiny SAM ViT."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import mmseg_sam.models.peft.sam_adapter  # noqa: F401  (registers SAMAdapter)
import mmseg_sam.models.peft.vpt  # noqa: F401  (registers VPT)
from mmseg_sam.models.backbones import SAMAttention
from mmseg_sam.models.peft import vpt as vpt_module
from mmseg_sam.models.peft.sam_adapter import SAMAdapter, high_frequency_component
from mmseg_sam.models.peft.vpt import (
    VPT,
    PromptedAttention,
    prompted_attention_class,
    register_prompted_attention,
)
from mmseg_sam.models.sam_modeling import Attention
from tests.conftest import TINY_IMG, perturb_, tiny_vit

ADAPTER = dict(type='SAMAdapter', scale_factor=4)  # r = 32 // 4 = 8 on the tiny arch


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny ops: torch's thread pool costs ~100x on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image(h=TINY_IMG, w=TINY_IMG, batch=1, seed=0):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _check_gradients(model, image):
    model.train()
    model(image)[-1].square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def _check_state_dict(tiny_arch, peft, new_keys):
    base_keys = set(tiny_vit(tiny_arch).state_dict())
    model = tiny_vit(tiny_arch, peft)
    assert set(model.state_dict()) == base_keys | set(new_keys)
    perturb_(model, seed=3)
    other = tiny_vit(tiny_arch, peft)
    other.load_state_dict(model.state_dict(), strict=True)
    x = _image()
    with torch.no_grad():
        assert torch.equal(model(x)[-1], other(x)[-1])


# ------------------------------------------------------------------------- VPT


@pytest.mark.parametrize('size', [(TINY_IMG, TINY_IMG), (TINY_IMG, 96)])
def test_vpt_grid_attention_equals_sam(tiny_arch, sam_checkpoint, size):
    """Without prompt tokens, the windowed (padded) and global blocks compute exactly SAM's attention."""
    base = tiny_vit(tiny_arch, checkpoint=sam_checkpoint)
    model = tiny_vit(tiny_arch, dict(type='VPT', num_tokens=3), checkpoint=sam_checkpoint)
    x = _image(*size, batch=2)
    with torch.no_grad():
        prompted = model(x)[-1]
        for block in model.blocks:
            block.attn.prompt_tokens = nn.Parameter(torch.empty(0, 32))
        assert torch.allclose(model(x)[-1], base(x)[-1], atol=1e-5)
    assert not torch.allclose(prompted, base(x)[-1], atol=1e-3)  # the prompts do act


def test_vpt_prompts_are_extra_keys_and_values():
    """Prompts act as P extra tokens that are keys/values only: SAM's attention on the grid
    plus one extra row of prompts (no rel-pos), restricted to the grid rows, for every window."""
    torch.manual_seed(0)
    base = perturb_(Attention(32, num_heads=2, use_rel_pos=False), std=0.2)
    attn = PromptedAttention(copy.deepcopy(base), num_tokens=3, init_bound=1.0)
    x = torch.randn(5, 2, 3, 32)  # (N, h, w, C), w == P
    extended = torch.cat([x, attn.prompt_tokens.expand(5, 1, 3, 32)], dim=1)  # (N, h + 1, w, C)
    with torch.no_grad():
        assert torch.allclose(attn(x), base(extended)[:, :2], atol=1e-5)


@pytest.mark.parametrize('size', [(TINY_IMG, TINY_IMG), (TINY_IMG, 96)])
@pytest.mark.parametrize('peft', [dict(type='VPT', num_tokens=4), dict(type='VPT', mode='shallow'), ADAPTER])
def test_forward_square_and_non_square(tiny_arch, peft, size):
    model = tiny_vit(tiny_arch, peft)
    with torch.no_grad():
        out = model(_image(*size, batch=2))
    assert out[-1].shape == (2, 32, size[0] // 16, size[1] // 16)


def test_vpt_init_and_counts(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='VPT', num_tokens=4))
    assert model.peft_report.trainable['VPT'] == 4 * 32 * 2  # num_tokens * C * num_layers
    assert set(_trainable(model)) == {'blocks.0.attn.prompt_tokens', 'blocks.1.attn.prompt_tokens'}
    bound = math.sqrt(6 / (3 * 16**2 + 32))
    prompts = model.blocks[0].attn.prompt_tokens
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.5 * bound
    shallow = tiny_vit(tiny_arch, dict(type='VPT', num_tokens=4, mode='shallow'))
    assert set(_trainable(shallow)) == {'blocks.0.attn.prompt_tokens'}
    assert type(shallow.blocks[1].attn) is SAMAttention  # unprompted block: the backbone's own attention
    chosen = tiny_vit(tiny_arch, dict(type='VPT', num_tokens=4, blocks=[1]))
    assert set(_trainable(chosen)) == {'blocks.1.attn.prompt_tokens'}


def test_vpt_gradients_reach_prompts_only(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='VPT', num_tokens=4, dropout=0.1))
    assert len(_trainable(model)) == 2
    _check_gradients(model, _image())


def test_vpt_state_dict(tiny_arch, sam_checkpoint):
    _check_state_dict(
        tiny_arch,
        dict(type='VPT', num_tokens=4),
        {'blocks.0.attn.prompt_tokens', 'blocks.1.attn.prompt_tokens'},
    )
    # An official checkpoint leaves only the prompts missing.
    sam = torch.load(sam_checkpoint)
    encoder = {k.removeprefix('image_encoder.'): v for k, v in sam.items() if k.startswith('image_encoder.')}
    missing, unexpected = tiny_vit(tiny_arch, dict(type='VPT')).load_state_dict(encoder, strict=False)
    assert (
        sorted(missing) == ['blocks.0.attn.prompt_tokens', 'blocks.1.attn.prompt_tokens'] and not unexpected
    )


def test_vpt_composes_with_lora(tiny_arch):
    model = tiny_vit(
        tiny_arch, [dict(type='VPT', num_tokens=2), dict(type='LoRA', rank=2, targets=('v',), init='xavier')]
    )
    assert model.peft_report.trainable == {'VPT': 2 * 32 * 2, 'LoRA': 2 * (2 * 32 + 32 * 2)}
    _check_gradients(model, _image())


@pytest.mark.parametrize(
    'cfg, message',
    [
        (dict(num_tokens=0), 'num_tokens must be a positive int, got 0'),
        (dict(num_tokens=2.5), 'num_tokens must be a positive int, got 2.5'),
        (dict(mode='medium'), r"VPT mode \['medium'\] not allowed"),
        (dict(mode='shallow', blocks=[1]), r'blocks must be None in shallow mode .* got \[1\]'),
        (dict(blocks=[]), r'blocks must be None \(every block\) or a non-empty list .* got \[\]'),
        (dict(blocks=[-1]), r'blocks must be None \(every block\) or a non-empty list .* got \[-1\]'),
        (dict(blocks=[1, 2]), r'VPT blocks \[2\] matched no block'),
        (dict(dropout=1.0), r'dropout must be in \[0, 1\), got 1.0'),
    ],
)
def test_vpt_bad_configs(tiny_arch, cfg, message):
    with pytest.raises(ValueError, match=message):
        tiny_vit(tiny_arch, dict(type='VPT', **cfg))


def test_vpt_refuses_double_injection(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='VPT'))
    with pytest.raises(ValueError, match='blocks.0.attn is already adapted by PromptedAttention'):
        VPT().inject(model)
    with pytest.raises(ValueError, match='VPT found no block matching'):
        VPT().inject(nn.ModuleDict(dict(patch_embed=model.patch_embed)))


class _OtherAttention(nn.Module):
    """An attention VPT does not know: another family's, say."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.qkv, self.proj, self.num_heads = base.qkv, base.proj, base.num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_vpt_prompts_the_attentions_registered_for_it(tiny_arch, monkeypatch):
    model = tiny_vit(tiny_arch)
    assert prompted_attention_class(model.blocks[0].attn) is PromptedAttention  # SAMAttention, by its MRO
    assert prompted_attention_class(nn.Linear(2, 2)) is None
    for block in model.blocks:
        block.attn = _OtherAttention(block.attn)
    with pytest.raises(
        ValueError, match=r'VPT has no prompted version of blocks.0.attn \(_OtherAttention\); it prompts \['
    ):
        VPT().inject(model)

    # a family registers its attention's prompted version in its own file; VPT then applies
    monkeypatch.setattr(vpt_module, '_PROMPTED_ATTENTIONS', dict(vpt_module._PROMPTED_ATTENTIONS))

    @register_prompted_attention(f'{__name__}._OtherAttention')
    class PromptedOther(_OtherAttention):
        def __init__(self, base, num_tokens, init_bound, dropout):
            super().__init__(base)
            self.prompt_tokens = nn.Parameter(torch.zeros(num_tokens, base.qkv.in_features))

    params = VPT(num_tokens=3).inject(model)
    assert isinstance(model.blocks[1].attn, PromptedOther)
    assert sorted(params) == [f'blocks.{i}.attn.prompt_tokens' for i in range(len(model.blocks))]
    with pytest.raises(KeyError, match='_OtherAttention already has a prompted version: PromptedOther'):
        register_prompted_attention(f'{__name__}._OtherAttention')(PromptedOther)


def test_vpt_deepcopy(tiny_arch):
    model = tiny_vit(tiny_arch, dict(type='VPT', num_tokens=4))
    clone = copy.deepcopy(model)
    x = _image()
    with torch.no_grad():
        assert torch.equal(model(x)[-1], clone(x)[-1])
        clone.blocks[0].attn.prompt_tokens.add_(1.0)
        assert not torch.equal(model(x)[-1], clone(x)[-1])


# ----------------------------------------------------------------- SAM-Adapter


def _hfc_numpy(image, ratio):
    """Zero a centred square of side 2 * int(sqrt(H * W * ratio) // 2) of the shifted spectrum."""
    h, w = image.shape[-2:]
    half = int(math.sqrt(h * w * ratio) // 2)
    spectrum = np.fft.fftshift(np.fft.fft2(image), axes=(-2, -1))
    spectrum[..., max(h // 2 - half, 0) : h // 2 + half, max(w // 2 - half, 0) : w // 2 + half] = 0
    return np.abs(np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).real)


@pytest.mark.parametrize('shape, ratio', [((2, 3, 8, 8), 0.25), ((1, 3, 6, 10), 0.25), ((1, 3, 8, 8), 0.5)])
def test_high_frequency_component_matches_numpy(shape, ratio):
    image = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = _hfc_numpy(image.numpy(), ratio)
    assert np.allclose(high_frequency_component(image, ratio).numpy(), expected, atol=1e-6)


def test_high_frequency_component_by_hand():
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing='ij')
    constant = torch.full((1, 3, 8, 8), 2.5)
    low = torch.cos(2 * math.pi * i / 8).expand(1, 3, 8, 8)  # frequency 1: inside the 4x4 square
    checker = ((-1) ** (i + j)).expand(1, 3, 8, 8)  # Nyquist frequency: outside it
    assert torch.allclose(high_frequency_component(constant, 0.25), torch.zeros(1, 3, 8, 8), atol=1e-5)
    assert torch.allclose(high_frequency_component(low, 0.25), torch.zeros(1, 3, 8, 8), atol=1e-5)
    assert torch.allclose(high_frequency_component(checker, 0.25), torch.ones(1, 3, 8, 8), atol=1e-5)
    assert torch.allclose(high_frequency_component(low + checker, 0.25), torch.ones(1, 3, 8, 8), atol=1e-5)


def test_sam_adapter_zero_init_is_the_base_model(tiny_arch, sam_checkpoint):
    base = tiny_vit(tiny_arch, checkpoint=sam_checkpoint)
    zero = tiny_vit(tiny_arch, {**ADAPTER, 'zero_init': True}, checkpoint=sam_checkpoint)
    default = tiny_vit(tiny_arch, ADAPTER, checkpoint=sam_checkpoint)
    x = _image(TINY_IMG, 96)
    with torch.no_grad():
        assert torch.equal(zero(x)[-1], base(x)[-1])
        assert not torch.allclose(default(x)[-1], base(x)[-1], atol=1e-4)


def test_sam_adapter_counts(tiny_arch):
    model = tiny_vit(tiny_arch, ADAPTER)
    # r = 8: embedding 32*8+8, handcrafted 3*16*16*8+8, lightweight 2 x (8*8+8), shared 8*32+32
    assert model.peft_report.trainable['SAMAdapter'] == 264 + 6152 + 2 * 72 + 288
    assert set(_trainable(model)) == {
        f'input_prompts.{name}'
        for name in [
            'embedding_generator.weight',
            'embedding_generator.bias',
            'handcrafted_generator.weight',
            'handcrafted_generator.bias',
            'lightweight_mlp.0.0.weight',
            'lightweight_mlp.0.0.bias',
            'lightweight_mlp.1.0.weight',
            'lightweight_mlp.1.0.bias',
            'shared_mlp.weight',
            'shared_mlp.bias',
        ]
    }
    one_block = tiny_vit(tiny_arch, {**ADAPTER, 'blocks': [1]})
    assert one_block.peft_report.trainable['SAMAdapter'] == 264 + 6152 + 72 + 288
    default = tiny_vit(tiny_arch, dict(type='SAMAdapter'))  # scale 32: r = 1
    assert default.peft_report.trainable['SAMAdapter'] == 33 + 769 + 2 * 2 + 64


def test_sam_adapter_gradients_reach_adapter_only(tiny_arch):
    model = tiny_vit(tiny_arch, ADAPTER)
    assert all(n.startswith('input_prompts.') for n in _trainable(model))
    _check_gradients(model, _image(TINY_IMG, 96))


def test_sam_adapter_state_dict(tiny_arch):
    names = tiny_vit(tiny_arch, ADAPTER).input_prompts.state_dict()
    _check_state_dict(tiny_arch, ADAPTER, {f'input_prompts.{k}' for k in names})


@pytest.mark.parametrize(
    'cfg, message',
    [
        (dict(freq_ratio=0.0), r'freq_ratio must be in \(0, 1\), got 0.0'),
        (dict(freq_ratio=1), r'freq_ratio must be in \(0, 1\), got 1'),
        (dict(scale_factor=0), 'scale_factor must be a positive int, got 0'),
        (dict(scale_factor=3), 'scale_factor 3 does not divide embed_dims 32'),
        (dict(blocks=[0, 2]), r'SAMAdapter blocks \[2\] matched no block'),
        (dict(blocks=[]), r'blocks must be None \(every block\) or a non-empty list .* got \[\]'),
        (dict(zero_init='yes'), "zero_init must be a bool, got 'yes'"),
    ],
)
def test_sam_adapter_bad_configs(tiny_arch, cfg, message):
    with pytest.raises(ValueError, match=message):
        tiny_vit(tiny_arch, dict(type='SAMAdapter', **cfg))


def test_sam_adapter_refuses_double_injection(tiny_arch):
    model = tiny_vit(tiny_arch, ADAPTER)
    with pytest.raises(ValueError, match='input_prompts is already adapted by SAMAdapterPromptGenerator'):
        SAMAdapter(scale_factor=4).inject(model)


def test_sam_adapter_stores_nothing_and_deepcopies(tiny_arch):
    model = tiny_vit(tiny_arch, ADAPTER).train()
    x = _image()
    model(x)[-1].sum().backward()  # a graph-carrying forward: a stored tensor would break deepcopy
    assert not [k for k, v in vars(model.input_prompts).items() if isinstance(v, torch.Tensor)]
    block_alone = model.blocks[0](torch.zeros(1, 4, 4, 32))  # a block is a plain function of its input
    assert block_alone.shape == (1, 4, 4, 32)

    model.eval()
    clone = copy.deepcopy(model)
    with torch.no_grad():
        before = model(x)[-1]
        assert torch.equal(clone(x)[-1], before)
        clone.input_prompts.shared_mlp.bias.add_(1.0)  # the clone's forward uses the clone's generator
        assert not torch.equal(clone(x)[-1], before)
        assert torch.equal(model(x)[-1], before)
