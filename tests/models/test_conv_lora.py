import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft import ConvLoRALinear, collect_aux_losses
from mmseg_sam.models.peft.conv_lora import NoisyTopKGate, _top_first, cv_squared, pop_expert_usage
from tests.conftest import TINY_IMG, perturb_, tiny_batch, tiny_segmentor


def _model(arch, **cfg):
    return SAMViT(arch=arch, img_size=TINY_IMG, peft=dict(type='ConvLoRA', **cfg))


def _layers(model):
    return [m for m in model.modules() if isinstance(m, ConvLoRALinear)]


@pytest.mark.slow
def test_parameter_counts_match_the_paper():
    """r=3, 8 experts: +720 per block over LoRA; ViT-B encoder 119,232; ViT-H 514,560."""
    vit_b = _model('vit_b')
    assert vit_b.peft_report.trainable['ConvLoRA'] == 119_232
    lora_per_block = 3 * 768 + 2304 * 3
    assert 119_232 // 12 - lora_per_block == 720
    one_vit_h_block = _model(dict(embed_dims=1280, num_layers=1, num_heads=16))
    assert one_vit_h_block.peft_report.trainable['ConvLoRA'] * 32 == 514_560


def test_routing_per_window_and_per_image(tiny_arch):
    model = _model(tiny_arch, num_experts=4).eval()
    model(torch.randn(2, 3, TINY_IMG, TINY_IMG))
    windowed, global_ = _layers(model)
    assert windowed.last_routing.shape == (2 * 4, 1)  # 4x4 grid padded to 6x6: 4 windows of 3x3
    assert global_.last_routing.shape == (2, 1)


def test_zero_init_up_projection_gives_frozen_output(tiny_arch, sam_checkpoint):
    base = SAMViT(arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(sam_checkpoint)).eval()
    model = SAMViT(
        arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(sam_checkpoint), peft=dict(type='ConvLoRA')
    ).eval()
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        assert torch.equal(base(x)[-1], model(x)[-1])


def _layer(num_experts=4, rank=3, **kwargs):
    torch.manual_seed(0)
    layer = ConvLoRALinear(torch.nn.Linear(8, 24), rank, alpha=6, scales=range(1, num_experts + 1), **kwargs)
    perturb_(layer.lora_B, std=0.5)
    return layer


def test_forward_is_the_reference_formula_with_residual():
    layer = _layer().eval()
    with torch.no_grad():
        layer.gate.w_gate.normal_()
    x = torch.randn(5, 6, 7, 8)
    with torch.no_grad():
        out = layer(x)
        z = layer.lora_A['qkv'](x).permute(0, 3, 1, 2)  # (N, r, H, W)
        chosen = (z.mean((2, 3)) @ layer.gate.w_gate).argmax(1)
        expected = []
        for n in range(5):
            e = layer.experts[chosen[n].item()](z[n : n + 1])
            bottleneck = (z[n : n + 1] + e).permute(0, 2, 3, 1)
            expected.append(
                F.linear(x[n : n + 1], layer.weight, layer.bias) + layer.lora_B['qkv'](bottleneck) * 2.0
            )
    assert torch.equal(layer.last_routing[:, 0], chosen)
    assert torch.allclose(out, torch.cat(expected), atol=1e-6)


def test_eval_routing_is_deterministic_training_is_noisy():
    layer = _layer()
    with torch.no_grad():
        layer.gate.w_noise.fill_(2.0)
    x = torch.randn(16, 5, 5, 8)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))
    layer.train()
    routes = set()
    for _ in range(5):
        layer(x)
        routes.add(tuple(layer.last_routing[:, 0].tolist()))
    assert len(routes) > 1


def test_experts_resample_at_their_scale():
    layer = _layer(num_experts=3)
    assert [e.scale for e in layer.experts] == [1, 2, 3]
    z = torch.randn(2, 3, 5, 7)
    assert layer.experts[2](z).shape == z.shape
    assert all((e.conv.bias == 0).all() for e in layer.experts)


def test_load_balancing_loss_by_hand():
    """Samples routed to experts [0, 0, 1, 3] of 4: counts [2, 1, 0, 1]."""
    layer = _layer(num_experts=4, rank=4).train()
    with torch.no_grad():
        layer.gate.w_gate.copy_(torch.eye(4) * 50)  # pooled one-hot g -> that expert, by a wide margin
        layer.gate.w_noise.fill_(-20.0)  # noise std ~ 0.01
    z = torch.zeros(4, 3, 3, 4)
    for n, e in enumerate([0, 0, 1, 3]):
        z[n, ..., e] = 1.0
    with collect_aux_losses() as aux:
        layer.moe(z)
    counts = torch.tensor([2.0, 1.0, 0.0, 1.0])
    cv2 = counts.var() / counts.mean() ** 2  # unbiased: (1 + 0 + 1 + 0) / 3 = 2/3
    assert cv2.item() == pytest.approx(2 / 3)
    loss = aux['loss_moe']
    assert loss.item() == pytest.approx(0.01 * 2 * 2 / 3, rel=1e-4)  # importance and load both = counts
    layer.moe(z)  # outside a collecting block: reported nowhere, stored nowhere
    assert aux.keys() == {'loss_moe'} and aux['loss_moe'] is loss
    assert cv_squared(torch.tensor([3.0])).item() == 0.0


def test_only_load_term_trains_the_gate_by_default():
    layer = _layer().train()
    with torch.no_grad():
        layer.gate.w_noise.fill_(0.5)
    out = layer(torch.randn(6, 4, 4, 8))
    grads = torch.autograd.grad(
        out.square().sum(), [layer.gate.w_gate, layer.gate.w_noise], allow_unused=True
    )
    assert all(g is None or g.abs().sum() == 0 for g in grads)  # task loss: no gate gradient
    with collect_aux_losses() as aux:
        layer(torch.randn(6, 4, 4, 8))
    assert torch.autograd.grad(aux['loss_moe'], layer.gate.w_gate)[0].abs().sum() > 0


def test_gate_grad_option_lets_task_loss_reach_the_gate():
    layer = _layer(gate_grad=True).train()
    out = layer(torch.randn(6, 4, 4, 8))
    grad = torch.autograd.grad(out.square().sum(), layer.gate.w_gate)[0]
    assert grad.abs().sum() > 0


def test_grouped_dispatch_equals_per_sample_computation():
    layer = _layer(num_experts=4).train()
    with torch.no_grad():
        layer.gate.w_gate.normal_()
    z = torch.randn(9, 4, 4, 3, requires_grad=True)
    torch.manual_seed(3)
    grouped = layer.moe(z)
    routing = layer.last_routing[:, 0]
    zc = z.permute(0, 3, 1, 2)
    per_sample = torch.cat([layer.experts[routing[n]](zc[n : n + 1]) for n in range(9)]).permute(0, 2, 3, 1)
    assert torch.allclose(grouped, per_sample, atol=1e-6)
    g1 = torch.autograd.grad(grouped.sum(), z, retain_graph=True)[0]
    g2 = torch.autograd.grad(per_sample.sum(), z)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


def test_gate_stays_fp32_under_autocast():
    gate = NoisyTopKGate(3, 4).train()
    with torch.autocast('cpu', dtype=torch.bfloat16), collect_aux_losses() as aux:
        gates, _, load = gate(torch.randn(5, 3).bfloat16())
        layer = _layer().train()
        out = layer(torch.randn(4, 3, 3, 8))
    assert gates.dtype == load.dtype == torch.float32
    loss = aux['loss_moe']
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(out).all()


def test_loss_moe_reaches_the_segmentor_loss(tiny_arch):
    model = tiny_segmentor(peft=dict(type='ConvLoRA', num_experts=3)).train()
    losses = model.loss(*tiny_batch())
    assert 'loss_moe' in losses and losses['loss_moe'].requires_grad
    model.eval()
    with torch.no_grad(), collect_aux_losses() as aux:
        model.backbone(torch.randn(1, 3, TINY_IMG, TINY_IMG))
    assert not aux  # eval forwards report nothing


def test_unused_experts_under_ddp(tmp_path, tiny_arch):
    """Experts not routed to get no gradient; DDP with find_unused_parameters handles it."""
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        model = _model(tiny_arch, num_experts=8).train()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        for _ in range(2):
            ddp(torch.randn(1, 3, TINY_IMG, TINY_IMG))[-1].sum().backward()
        layer = _layers(model)[1]  # global block: one routing decision for the single image
        unused = [e for i, e in enumerate(layer.experts) if i not in layer.last_routing.tolist()]
        assert unused
    finally:
        dist.destroy_process_group()


def test_merge_is_refused_and_bad_configs(tiny_arch):
    with pytest.raises(NotImplementedError, match='Conv-LoRA cannot be merged'):
        _layers(_model(tiny_arch))[0].merge()
    for cfg, message in [
        (dict(rank=0), 'ConvLoRA rank must be a positive int, got 0'),
        (dict(scales=(1, 0.5)), r'scales must be a non-empty list of numbers >= 1, got \[1, 0.5\]'),
        (dict(num_experts=3, k=4), r'k must be in \[1, 3\]'),
        (dict(targets=('q',)), r"ConvLoRA targets \['q'\] not allowed"),
        (dict(blocks=(5,)), r'ConvLoRA found no block matching .* \(blocks=\(5,\)\)'),
        (dict(blocks=(0, 5)), r'ConvLoRA blocks \[5\] matched no block'),
    ]:
        with pytest.raises(ValueError, match=message):
            _model(tiny_arch, **cfg)
    with pytest.raises(ValueError, match=r'needs \(N, H, W, C\) inputs'):
        _layer()(torch.randn(4, 8))


def test_vpt_and_conv_lora_on_the_same_qkv_are_refused(tiny_arch):
    with pytest.raises(ValueError, match=r'qkv is a ConvLoRALinear, which needs the spatial token map'):
        _model_list(tiny_arch, [dict(type='ConvLoRA'), dict(type='VPT', num_tokens=2)])
    with pytest.raises(ValueError, match=r'belongs to a PromptedAttention that adds prompt tokens'):
        _model_list(tiny_arch, [dict(type='VPT', num_tokens=2), dict(type='ConvLoRA')])


def _model_list(arch, cfgs):
    return SAMViT(arch=arch, img_size=TINY_IMG, peft=cfgs)


def _routed_layer(k=1, num_experts=4, gate_grad=False):
    """A layer whose gate spreads 32 samples over several experts."""
    layer = _layer(num_experts=num_experts, k=k, gate_grad=gate_grad)
    with torch.no_grad():
        layer.gate.w_gate.normal_(generator=torch.Generator().manual_seed(1))
    return layer


@pytest.mark.parametrize('k, gate_grad', [(1, False), (2, False), (1, True)])
def test_dense_dispatch_equals_grouped_dispatch_in_eval(k, gate_grad):
    """Bit for bit per sample; in a batch up to the rounding of conv kernels chosen by batch size."""
    layer = _routed_layer(k, gate_grad=gate_grad).eval()
    x = torch.randn(32, 5, 6, 8)
    with torch.no_grad():
        grouped = layer(x)
        routing = layer.last_routing
        singles = [layer(x[n : n + 1]) for n in range(12)]
        layer.dense_dispatch = True
        dense = layer(x)
        dense_singles = [layer(x[n : n + 1]) for n in range(12)]
    assert len(routing.unique()) > 2 and len(routing[:12].unique(dim=0)) > 2  # several experts in play
    for n in range(12):
        assert torch.equal(dense_singles[n], singles[n]), n
    assert torch.equal(layer.last_routing, routing[11:12])
    assert torch.allclose(dense, grouped, rtol=0, atol=1e-6)


def test_dense_dispatch_equals_grouped_dispatch_in_training():
    """Same values and gradients; experts nobody chose get zero gradients instead of none."""
    layer = _routed_layer(num_experts=6).train()
    x = torch.randn(5, 4, 4, 8)
    results = {}
    for dense in (False, True):
        layer.dense_dispatch = dense
        layer.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # the same gate noise
        with collect_aux_losses() as aux:
            out = layer(x)
        (out.square().sum() + aux['loss_moe']).backward()
        grads = {
            n: None if p.grad is None else p.grad.clone()
            for n, p in layer.named_parameters()
            if p.requires_grad
        }
        results[dense] = out, layer.last_routing, grads
    (out_g, routing_g, grads_g), (out_d, routing_d, grads_d) = results[False], results[True]
    assert torch.equal(routing_g, routing_d)
    assert torch.allclose(out_g, out_d, rtol=0, atol=1e-6)
    unused = set(range(6)) - set(routing_g.flatten().tolist())
    assert unused, 'the check needs an expert that no sample chose'
    for name, grad in grads_g.items():
        if grad is None:
            assert name.startswith('experts.') and int(name.split('.')[1]) in unused, name
            assert grads_d[name].abs().sum() == 0, name
        else:
            assert torch.allclose(grad, grads_d[name], atol=1e-6), name


def test_tracing_dispatches_densely():
    """A trace is input-general: it routes new inputs like the eager layer."""
    layer = _routed_layer().eval()
    x1, x2 = torch.randn(16, 5, 5, 8), torch.randn(16, 5, 5, 8)
    with torch.no_grad():
        layer(x1)
        routing1 = layer.last_routing
        traced = torch.jit.trace(layer, (x1,), check_trace=False)
        expected = layer(x2)
    assert not torch.equal(layer.last_routing, routing1)  # x2 routes differently
    with torch.no_grad():
        assert torch.allclose(traced(x2), expected, atol=1e-6)


def test_ties_go_to_the_lower_expert():
    """The zero-initialised gate ties everywhere: routing is expert 0 (then 1), as ONNX TopK."""
    layer = _layer(num_experts=8, k=2).eval()
    with torch.no_grad():
        layer(torch.randn(3, 4, 4, 8))
    assert layer.last_routing.tolist() == [[0, 1]] * 3
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0]])
    values, index = _top_first(logits, 3)
    assert index.tolist() == [[1, 3, 2]]
    assert torch.equal(values, logits.topk(3).values)


def test_pop_expert_usage_counts_each_forward_once(tiny_arch):
    model = _model(tiny_arch, num_experts=3, k=2).eval()
    with torch.no_grad():
        model(torch.randn(3, 3, TINY_IMG, TINY_IMG))
    counts = pop_expert_usage(model)
    assert list(counts) == ['blocks.0.attn.qkv', 'blocks.1.attn.qkv']
    windows = 3 * 4  # 3 images, 4 windows each
    assert counts['blocks.0.attn.qkv'].sum() == windows * 2 and counts['blocks.1.attn.qkv'].sum() == 3 * 2
    assert all(c.shape == (3,) and c.dtype == torch.int64 for c in counts.values())
    with pytest.raises(ValueError, match='blocks.0.attn.qkv has no routing to count'):
        pop_expert_usage(model)
    with pytest.raises(ValueError, match='SAMViT has no Conv-LoRA layer'):
        pop_expert_usage(SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(type='LoRA')))
