"""SAMAttention's implementations against segment_anything, and gradient checkpointing in SAMViT."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmseg_sam.models.backbones import ATTN_IMPLS, SAMAttention, SAMViT, sam_vit
from mmseg_sam.models.backbones.sam_vit import resize_pos_embed
from mmseg_sam.models.peft import ConvLoRALinear, collect_aux_losses
from mmseg_sam.models.peft.presets import PRESETS, method_types
from mmseg_sam.models.peft.vpt import PromptedAttention
from mmseg_sam.models.sam_modeling import Attention
from tests.conftest import TINY_IMG, perturb_

TOL = 1e-5


def _reference_attention(table_size: tuple[int, int], seed: int = 0, dims: int = 32, heads: int = 2):
    """segment_anything's Attention with perturbed weights and clearly non-zero rel-pos tables."""
    torch.manual_seed(seed)
    attn = perturb_(Attention(dims, heads, use_rel_pos=True, input_size=table_size), seed=seed)
    with torch.no_grad():
        attn.rel_pos_h.normal_(0.0, 0.5)
        attn.rel_pos_w.normal_(0.0, 0.5)
    return attn


def _forward_backward(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and parameter gradients (by name) of ``(module(x) * grad).sum()``."""
    x = x.clone().requires_grad_()
    out = module(x)
    (out * grad).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _assert_matches(ours: nn.Module, ref: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output, input and parameter gradients of ``ours`` equal ``ref``'s within TOL.

    Returns:
        ``ref``'s output and ``ours``'s parameter gradients, for further checks.
    """
    out_ref, dx_ref, dp_ref = _forward_backward(ref, x, grad)
    out, dx, dp = _forward_backward(ours, x, grad)
    assert (out - out_ref).abs().max().item() <= TOL
    assert (dx - dx_ref).abs().max().item() <= TOL
    assert _max_diff(dp, dp_ref) <= TOL
    return out_ref, dp


# (input (N, H, W), rel-pos table size): a window (N windows), square and non-square
# global grids, and tables made for another input size (interpolated by get_rel_pos).
CASES = {
    'window': ((6, 3, 3), (3, 3)),
    'global-square': ((2, 4, 4), (4, 4)),
    'global-non-square': ((2, 3, 5), (3, 5)),
    'tables-of-another-size': ((2, 6, 4), (4, 4)),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('impl', ATTN_IMPLS)
def test_attention_equals_segment_anything(impl, case):
    (n, h, w), table = CASES[case]
    ref = _reference_attention(table)
    ours = SAMAttention(copy.deepcopy(ref), impl)
    x = torch.randn(n, h, w, 32, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(n, h, w, 32, generator=torch.Generator().manual_seed(2))
    out_ref, dp = _assert_matches(ours, ref, x, grad)
    assert set(dp) == {'qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias', 'rel_pos_h', 'rel_pos_w'}
    # The relative positions matter here, so the parity covers the bias terms.
    unbiased = copy.deepcopy(ref)
    unbiased.use_rel_pos = False
    with torch.no_grad():
        assert (unbiased(x) - out_ref).abs().max() > 0.05


@pytest.mark.parametrize('impl', ATTN_IMPLS)
def test_attention_without_rel_pos(impl):
    torch.manual_seed(0)
    ref = perturb_(Attention(32, 2, use_rel_pos=False))
    ours = SAMAttention(copy.deepcopy(ref), impl)
    _assert_matches(ours, ref, torch.randn(2, 3, 5, 32), torch.randn(2, 3, 5, 32))


def test_attention_keeps_the_parameters_and_keys():
    ref = _reference_attention((3, 3))
    ours = SAMAttention(ref, 'folded')
    assert ours.qkv is ref.qkv and ours.proj is ref.proj and ours.rel_pos_h is ref.rel_pos_h
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "attn_impl='folded'" in repr(ours)


def _saved_tensor_sizes(module: nn.Module, x: torch.Tensor) -> list[int]:
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x.requires_grad_())
    return sizes


def test_folded_keeps_no_token_by_token_tensor():
    """Eager keeps (N, nHead, HW, HW) tensors for backward; folded only O(HW) ones."""
    ref = _reference_attention((16, 16))
    x = torch.randn(1, 16, 16, 32)
    pairs = 2 * 256 * 256  # nHead * HW * HW
    assert max(_saved_tensor_sizes(ref, x.clone())) == pairs
    # largest: the augmented queries/keys, nHead * HW * (C/nHead + H + W)
    assert max(_saved_tensor_sizes(SAMAttention(ref, 'folded'), x.clone())) == 2 * 256 * 48


# ----------------------------------------------------------------------- VPT


@pytest.mark.parametrize('case', ['window', 'global-non-square', 'tables-of-another-size'])
@pytest.mark.parametrize('impl', ['sdpa', 'folded'])
def test_prompted_attention_fused_equals_eager(impl, case):
    """Prompt keys are unbiased on every path: fused VPT equals its eager form."""
    (n, h, w), table = CASES[case]
    base = _reference_attention(table)
    eager = PromptedAttention(SAMAttention(copy.deepcopy(base), 'eager'), num_tokens=3, init_bound=1.0)
    fused = PromptedAttention(SAMAttention(copy.deepcopy(base), impl), num_tokens=3, init_bound=1.0)
    assert fused.attn_impl == impl
    with torch.no_grad():
        fused.prompt_tokens.copy_(eager.prompt_tokens)
    x = torch.randn(n, h, w, 32, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(n, h, w, 32, generator=torch.Generator().manual_seed(2))
    _, dp = _assert_matches(fused, eager, x, grad)
    assert dp['prompt_tokens'].abs().max() > 0


def test_prompted_attention_of_a_plain_attention_is_eager():
    attn = PromptedAttention(Attention(32, 2, use_rel_pos=True, input_size=(3, 3)), 2, 1.0)
    assert attn.attn_impl == 'eager'


# ------------------------------------------------------------------- backbone


@pytest.mark.parametrize('hw', [(TINY_IMG, TINY_IMG), (TINY_IMG, 96)])
@pytest.mark.parametrize('impl', ['auto', *ATTN_IMPLS])
def test_backbone_equals_segment_anything(reference_sam, sam_checkpoint, tiny_arch, impl, hw):
    """Windowed (padded) and global blocks, square and non-square inputs (global tables interpolated)."""
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(sam_checkpoint), attn_impl=impl).eval()
    encoder = reference_sam.image_encoder

    def ref(x):  # segment_anything's modules, with pos_embed resized to the grid
        x = encoder.patch_embed(x)
        pos_embed = encoder.pos_embed
        x = x + (
            pos_embed if x.shape[1:3] == pos_embed.shape[1:3] else resize_pos_embed(pos_embed, x.shape[1:3])
        )
        for block in encoder.blocks:
            x = block(x)
        return encoder.neck(x.permute(0, 3, 1, 2))

    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(2, 32, hw[0] // 16, hw[1] // 16, generator=torch.Generator().manual_seed(1))
    xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs = model(xs[0])[-1], ref(xs[1])
    for out, inp in zip(outs, xs):
        (out * grad).sum().backward(inputs=[inp])
    assert (outs[0] - outs[1]).abs().max().item() <= TOL
    assert (xs[0].grad - xs[1].grad).abs().max().item() <= TOL


def test_auto_picks_per_block_kind(tiny_arch):
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG)  # block 0 windowed, block 1 global
    assert model.attn_impl == 'auto'
    assert [type(b.attn) for b in model.blocks] == [SAMAttention, SAMAttention]
    assert [b.attn.attn_impl for b in model.blocks] == ['sdpa', 'folded']
    eager = SAMViT(arch=tiny_arch, img_size=TINY_IMG, attn_impl='eager')
    assert [b.attn.attn_impl for b in eager.blocks] == ['eager', 'eager']
    assert set(model.state_dict()) == set(eager.state_dict())


@pytest.mark.parametrize(
    'kwargs, error, message',
    [
        (
            dict(attn_impl='flash'),
            ValueError,
            r"attn_impl must be one of \['auto', 'eager', 'sdpa', 'folded'\], got 'flash'",
        ),
        (dict(attn_impl=None), TypeError, 'attn_impl must be a str, .* got NoneType'),
        (dict(with_cp='yes'), TypeError, "with_cp must be a bool, got 'yes'"),
        (dict(with_cp=1), TypeError, 'with_cp must be a bool, got 1'),
    ],
)
def test_bad_backbone_args(tiny_arch, kwargs, error, message):
    with pytest.raises(error, match=message):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, **kwargs)


def test_bad_attention_args():
    attn = Attention(32, 2)
    with pytest.raises(
        ValueError, match=r"attn_impl must be one of \['eager', 'sdpa', 'folded'\], got 'auto'"
    ):
        SAMAttention(attn, 'auto')
    with pytest.raises(TypeError, match='SAMAttention wraps a segment_anything Attention, got Linear'):
        SAMAttention(nn.Linear(2, 2))


# ------------------------------------------------------------- checkpointing


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(
    'with_cp, training, grad, used',
    [
        (True, True, True, True),
        (True, False, True, False),
        (True, True, False, False),
        (False, True, True, False),
    ],
)
def test_checkpoint_only_when_training_with_grad(tiny_arch, monkeypatch, with_cp, training, grad, used):
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs['use_reentrant'])
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(sam_vit, 'checkpoint', counting_checkpoint)
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, with_cp=with_cp).train(training)
    with torch.set_grad_enabled(grad):
        model(torch.randn(1, 3, TINY_IMG, TINY_IMG))
    assert calls == ([False, False] if used else [])  # one non-reentrant checkpoint per block


def _run(model: SAMViT, x: torch.Tensor, seed: int):
    """One training step's gradients: output loss plus the PEFT auxiliary losses."""
    model.train()
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)  # same dropout masks and Conv-LoRA gate noise in both runs
    with collect_aux_losses() as aux:
        outs = model(x)
    reported = dict(aux)
    loss = sum(o.square().mean() for o in outs) + sum(aux.values())
    with collect_aux_losses() as during_backward:  # a block open in backward sees the recompute
        loss.backward()
    assert aux == reported  # the forward's collection is closed: nothing added in backward
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in aux.items()}, grads, x.grad, during_backward


METHODS = {item.name: dict(item.tiny) for item in PRESETS}


@pytest.mark.parametrize('name', list(METHODS))
def test_checkpointing_gives_the_same_gradients(tiny_arch, name):
    models = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, out_indices=(0,), with_cp=with_cp, **METHODS[name])
        with torch.no_grad():  # non-zero adapters, so that every trainable tensor gets a gradient
            gen = torch.Generator().manual_seed(1)
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
        models.append(model)
    plain, checkpointed = models
    calls = _count_calls(checkpointed.blocks[0].norm1)
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(2))
    aux, grads, dx, recomputed = _run(plain, x, seed=3)
    aux_cp, grads_cp, dx_cp, recomputed_cp = _run(checkpointed, x, seed=3)
    # Block 0 ran again in backward (its output is in the loss, through out_indices, even with LST).
    assert calls[0] == 2
    conv_lora = 'ConvLoRA' in method_types(METHODS[name].get('peft'))
    assert aux.keys() == aux_cp.keys() == ({'loss_moe'} if conv_lora else set())
    for key in aux:
        assert torch.equal(aux[key], aux_cp[key]), key
    assert grads.keys() == grads_cp.keys()
    for key, g in grads.items():
        assert (g is None) == (grads_cp[key] is None), key
        if g is not None:
            assert (g - grads_cp[key]).abs().max().item() <= 1e-6, key
    assert (dx - dx_cp).abs().max().item() <= 1e-6
    # Without a block open during backward nothing reaches a loss; with one, the recompute's
    # report is the only difference (a training step's backward runs outside the loss's block).
    assert recomputed == {} and recomputed_cp.keys() == aux_cp.keys()
    # The recompute does not change Conv-LoRA's routing.
    for (_, a), (_, b) in zip(plain.named_modules(), checkpointed.named_modules()):
        if isinstance(a, ConvLoRALinear):
            assert torch.equal(a.last_routing, b.last_routing)
