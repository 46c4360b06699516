"""SAMAttention's implementations against segment_anything, and gradient checkpointing in SAMViT."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmseg_sam.models.backbones import ATTN_IMPLS, SAMAttention, SAMViT, sam_attention, sam_vit
from mmseg_sam.models.backbones.sam_vit import resize_pos_embed
from mmseg_sam.models.peft import ConvLoRALinear, collect_aux_losses
from mmseg_sam.models.peft.presets import PRESETS, method_types
from mmseg_sam.models.peft.vpt import PromptedAttention
from mmseg_sam.models.sam_modeling import Attention
from tests.conftest import TINY_IMG, perturb_
from tests.peft_tiny import tiny

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
    assert [b.attn.grad_impl for b in model.blocks] == ['folded', None]  # windowed training: folded
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
        (dict(with_cp='yes'), ValueError, "with_cp must be one of False, 'selective', True, got 'yes'"),
        (dict(with_cp=1), TypeError, "with_cp must be one of False, 'selective', True, got 1"),
        (dict(with_cp=None), TypeError, "with_cp must be one of False, 'selective', True, got None"),
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
    'with_cp, training, grad, input_grad, used',
    [
        (True, True, True, True, True),
        ('selective', True, True, True, True),
        (True, False, True, True, False),
        (True, True, False, True, False),
        (False, True, True, True, False),
        (True, True, True, False, False),  # frozen blocks on an input without grad: backward never comes
    ],
)
def test_checkpoint_only_when_training_with_grad(
    tiny_arch, monkeypatch, with_cp, training, grad, input_grad, used
):
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append((kwargs['use_reentrant'], 'context_fn' in kwargs))
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(sam_vit, 'checkpoint', counting_checkpoint)
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, with_cp=with_cp).train(training)
    with torch.set_grad_enabled(grad):
        model(torch.randn(1, 3, TINY_IMG, TINY_IMG).requires_grad_(input_grad))
    # one non-reentrant checkpoint per block, with the selective policy for 'selective'
    assert calls == ([(False, with_cp == 'selective')] * 2 if used else [])


def test_with_cp_set_after_building_reaches_every_block(tiny_arch, monkeypatch):
    """``backbone.with_cp = level`` (e.g. from a tool, after the model is built) is every block's level."""
    calls = []
    monkeypatch.setattr(sam_vit, 'checkpoint', lambda *a, **k: calls.append(k) or checkpoint(*a, **k))
    model = SAMViT(arch=tiny_arch, img_size=TINY_IMG).train()
    assert model.with_cp is False
    model.with_cp = 'selective'
    assert [b.with_cp for b in model.blocks] == ['selective'] * 2 and model.with_cp == 'selective'
    model(torch.randn(1, 3, TINY_IMG, TINY_IMG).requires_grad_())
    assert len(calls) == 2 and all('context_fn' in k for k in calls)
    model.blocks[0].with_cp = True  # one block set on its own
    assert model.with_cp == 'mixed'
    with pytest.raises(ValueError, match="with_cp must be one of False, 'selective', True, got 'full'"):
        model.with_cp = 'full'
    assert [b.with_cp for b in model.blocks] == [True, 'selective']  # a refused level changes nothing
    with pytest.raises(TypeError, match="with_cp must be one of False, 'selective', True, got 1"):
        model.blocks[1].with_cp = 1


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


METHODS = {item.key: tiny(item) for item in PRESETS}


@pytest.mark.parametrize('level', ['selective', True])
@pytest.mark.parametrize('name', list(METHODS))
def test_checkpointing_gives_the_same_gradients(tiny_arch, name, level):
    models = []
    for with_cp in (False, level):
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
        if g is not None:  # within 1e-6 relative to the gradient's largest entry
            assert (g - grads_cp[key]).abs().max().item() <= 1e-6 * g.abs().max().item(), key
    assert (dx - dx_cp).abs().max().item() <= 1e-6 * dx.abs().max().item()
    # Without a block open during backward nothing reaches a loss; with one, the recompute's
    # report is the only difference (a training step's backward runs outside the loss's block).
    assert recomputed == {} and recomputed_cp.keys() == aux_cp.keys()
    # The recompute does not change Conv-LoRA's routing.
    for (_, a), (_, b) in zip(plain.named_modules(), checkpointed.named_modules()):
        if isinstance(a, ConvLoRALinear):
            assert torch.equal(a.last_routing, b.last_routing)


# ------------------------------------------------- training path and what blocks keep


def test_grad_impl_is_used_when_the_bias_needs_a_gradient():
    ref = _reference_attention((3, 3))
    attn = SAMAttention(copy.deepcopy(ref), 'sdpa', grad_impl='folded').requires_grad_(False)  # frozen
    q = torch.randn(2, 2, 9, 16)
    assert attn.impl_for(q) == 'sdpa'  # nothing needs a gradient: the fused kernel with a mask
    assert attn.impl_for(q.requires_grad_()) == 'folded'
    with torch.no_grad():
        assert attn.impl_for(q) == 'sdpa'
    attn.rel_pos_h.requires_grad_(True)
    assert attn.impl_for(q.detach()) == 'folded'  # trained tables need a gradient too
    assert "grad_impl='folded'" in repr(attn)


@pytest.mark.parametrize('case', list(CASES))
def test_training_path_equals_segment_anything(case):
    """sdpa for inference, folded in training: the same function and gradients as segment_anything."""
    (n, h, w), table = CASES[case]
    ref = _reference_attention(table)
    ours = SAMAttention(copy.deepcopy(ref), 'sdpa', grad_impl='folded')
    x = torch.randn(n, h, w, 32, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(n, h, w, 32, generator=torch.Generator().manual_seed(2))
    _assert_matches(ours, ref, x, grad)


def test_training_path_keeps_no_token_by_token_tensor():
    ref = _reference_attention((14, 14))
    x = torch.randn(3, 14, 14, 32)
    pairs = 3 * 2 * 196 * 196  # N * nHead * HW * HW
    assert max(_saved_tensor_sizes(SAMAttention(copy.deepcopy(ref), 'sdpa'), x.clone())) >= pairs
    trained = SAMAttention(copy.deepcopy(ref), 'sdpa', grad_impl='folded')
    assert max(_saved_tensor_sizes(trained, x.clone())) < pairs / 4  # augmented q, k: O(HW) per token


def _bytes_kept(fn) -> int:
    """Bytes the CPU allocator holds after ``fn()`` (its result included), measured as the
    memory estimator measures a step (the allocator's own events)."""
    from tests.tools.test_estimate_memory import em

    return em._allocated(fn)[1]


def _outer_hooks():
    """A saved-tensor hook pair that keeps tensors as they are (what checkpointing looks like)."""
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)


@pytest.mark.parametrize('hw', [(14, 14), (16, 12)])
def test_folded_training_keeps_its_narrow_sources(hw):
    """Backward gets the kernel's augmented inputs rebuilt from q, k, v and the tables."""
    n, (h, w), c, heads = 2, hw, 32, 2
    attn = SAMAttention(_reference_attention(hw), 'folded').requires_grad_(False)
    x = torch.randn(n, h, w, c, requires_grad=True)
    f32 = 4
    output = n * h * w * c * f32  # the module's output, alive in both
    lse = n * heads * h * w * f32  # the kernel's log-sum-exp
    tables = (h * h + w * w) * (c // heads) * f32 + 8  # gathered rel-pos tables (einsum), the scale
    dims = -(-(c // heads + h + w) // 8) * 8
    # q, k, v (one qkv product) and the attention output's c columns
    assert _bytes_kept(lambda: attn(x)) == output + lse + tables + 4 * n * h * w * c * f32
    with _outer_hooks():  # the tensors the kernel saves, as they are: q', k', v' and output at `dims`
        assert _bytes_kept(lambda: attn(x)) == output + lse + tables + 4 * n * heads * h * w * dims * f32


def test_folded_keeps_no_more_when_autocast_casts_its_inputs():
    """fp32 q, k, v under bf16 autocast (SSF scales the qkv output in fp32): the kernel saves
    autocast's casts, which are kept as they are, and nothing else may stay alive."""
    h, w, c = 14, 14, 16
    qkv = torch.randn(2, 2, h * w, 3 * c, requires_grad=True)
    tables = (torch.randn(2 * h - 1, c), torch.randn(2 * w - 1, c))

    def forward():
        q, k, v = (qkv * 1.0).split(c, dim=-1)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return sam_attention.rel_pos_attention(q, k, v, 0.25, 'folded', tables, (h, w))

    lean = _bytes_kept(forward)
    with _outer_hooks():
        plain = _bytes_kept(forward)
    dims = 48  # 16 + 14 + 14, rounded up to 8
    # the same casts and log-sum-exp; the bf16 output without its zero columns
    assert plain - lean == 2 * 2 * h * w * (dims - c) * 2


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('prompts', [0, 3])
def test_folded_rebuilt_inputs_give_identical_gradients(dtype, prompts):
    """Saving the sources instead of the augmented tensors changes no bit, fp32 and under bf16 autocast."""
    ref = _reference_attention((5, 7))
    x = torch.randn(2, 5, 7, 32)

    def run(outer: bool):
        module = SAMAttention(copy.deepcopy(ref), 'folded')
        if prompts:
            torch.manual_seed(1)
            module = PromptedAttention(module, prompts, init_bound=0.5)
        inputs = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
            if outer:
                with _outer_hooks():
                    out = module(inputs)
            else:
                out = module(inputs)
        out.float().square().sum().backward()
        return [out, inputs.grad, *(p.grad for p in module.parameters())]

    lean, plain = run(False), run(True)
    assert lean[0].dtype == dtype
    assert len(lean) == len(plain) > 2
    for a, b in zip(lean, plain):
        assert torch.equal(a, b)


def test_folded_training_compiles_without_graph_break():
    """Under torch.compile the compiler decides what is kept: one graph, same values and gradients."""
    attn = SAMAttention(_reference_attention((6, 6)), 'folded')
    x = torch.randn(2, 6, 6, 32, requires_grad=True)
    out = attn(x)
    compiled = torch.compile(attn, backend='eager', fullgraph=True)(x)
    assert torch.equal(out, compiled)
    assert torch.equal(*(torch.autograd.grad(y.square().sum(), x)[0] for y in (out, compiled)))


def test_kept_output_comes_back_in_the_kernels_layout():
    """A kernel may return its output transposed in memory (CUDA's do): backward gets the same strides."""
    out = torch.randn(2, 5, 3, 8).transpose(1, 2)  # (2, 3, 5, 8), heads not outermost in memory
    out[..., 6:] = 0.0  # v's zero padding
    kept = sam_attention._Keep(out)
    narrow = kept.narrow_to(6)
    assert narrow.shape == (2, 3, 5, 6) and narrow.is_contiguous()
    back = kept.unpack()
    assert back.shape == out.shape and back.stride() == out.stride() and torch.equal(back, out)


def test_folded_refuses_sources_changed_in_place():
    q, k, v = (torch.randn(1, 2, 12, 16, requires_grad=True) * 1 for _ in range(3))
    tables = (torch.randn(5, 16), torch.randn(7, 16))
    out = sam_attention.rel_pos_attention(q, k, v, 0.25, 'folded', tables, (3, 4))
    with torch.no_grad():
        q.add_(1.0)
    with pytest.raises(
        RuntimeError, match=r'modified in place after the forward \(version 0 -> 1, shape \(1, 2, 12, 16\)\)'
    ):
        out.sum().backward()


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (
            dict(attn_impl='sdpa', grad_impl='eager'),
            r"attn_impl must be one of \['sdpa', 'folded'\], got 'eager'",
        ),
        (dict(attn_impl='eager', grad_impl='folded'), "grad_impl='folded' needs a fused attn_impl"),
    ],
)
def test_bad_grad_impl(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAMAttention(Attention(32, 2), **kwargs)


@pytest.mark.parametrize('with_cp', [False, 'selective', True])
def test_nothing_is_kept_before_the_first_adapted_block(tiny_arch, with_cp):
    """Block 0 is frozen and its input needs no gradient: autograd records nothing there."""
    model = SAMViT(
        arch=tiny_arch, img_size=TINY_IMG, with_cp=with_cp, peft=dict(type='LoRA', rank=2, blocks=[1])
    ).train()
    saved = {0: 0, 1: 0}
    current = []

    def pack(t):
        if current:
            saved[current[-1]] += 1
        return t

    def leave(*_) -> None:
        current.pop()

    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda *_, i=i: current.append(i))
        block.register_forward_hook(leave)
    outputs = {}
    model.blocks[0].register_forward_hook(lambda m, args, out: outputs.setdefault(0, out))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randn(1, 3, TINY_IMG, TINY_IMG))[-1]
    assert not outputs[0].requires_grad and outputs[0].grad_fn is None
    assert saved[0] == 0
    assert out.requires_grad  # block 1 is adapted
    if not with_cp:  # (checkpointing keeps block 1's tensors its own way, not through these hooks)
        assert saved[1] > 0


def test_selective_recomputation_under_autocast_with_shared_parameters(tiny_arch):
    """COBOT shares parameters across blocks, which autocast casts once per forward: same gradients."""
    grads = []
    for with_cp in (False, 'selective'):
        torch.manual_seed(0)
        model = SAMViT(arch=tiny_arch, img_size=TINY_IMG, with_cp=with_cp, **METHODS['cobot-lora-qv-r4'])
        x = torch.randn(2, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(2))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = sum(o.float().square().mean() for o in model.train()(x))
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key, g in grads[0].items():
        assert (g - grads[1][key]).abs().max().item() <= 1e-6 * g.abs().max().item(), key
