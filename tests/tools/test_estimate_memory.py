"""tools/analysis_tools/estimate_memory.py: the prediction against what a real CPU step allocates."""

import json

import pytest

from tests.conftest import REPO, load_tool, tiny_prompted_cfg, tiny_segmentor_cfg

TOOL = REPO / 'tools/analysis_tools/estimate_memory.py'
em = load_tool(TOOL, 'estimate_memory_tool')

IMG = 128  # an 8x8 token grid: large enough that activations outweigh fixed costs
METHODS = {
    'lora': dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v'))),
    'conv-lora': dict(peft=dict(type='ConvLoRA', rank=4, num_experts=2)),
    'full': dict(frozen=False),
}


@pytest.mark.parametrize('with_cp', [False, 'selective', True])
@pytest.mark.parametrize('method', list(METHODS))
def test_prediction_matches_the_measured_step(method, with_cp):
    """Every part within 10% of the allocator's events of a real step (tiny arch, CPU)."""
    cfg = tiny_segmentor_cfg(img_size=IMG, with_cp=with_cp, **METHODS[method])
    est = em.estimate(cfg, batch=2, img_size=IMG)
    real = em.measure(cfg, batch=2, img_size=IMG)
    for part in ('weights', 'gradients', 'optimizer_state', 'activations', 'peak_forward_backward'):
        assert getattr(est, part) == pytest.approx(real[part], rel=0.1), part
    assert est.activations > 0.5 * est.peak_forward_backward  # the activations are most of the peak here
    # Per block: every block's forward keeps something, and nothing is attributed twice.
    assert {f'backbone.blocks.{i}' for i in range(2)} <= set(est.activations_by_component)
    assert sum(est.activations_by_component.values()) == est.activations
    assert est.peak == est.weights + est.optimizer_state + est.inputs + est.peak_forward_backward


def test_each_with_cp_level_keeps_less():
    levels = (False, 'selective', True)
    est = {
        cp: em.estimate(
            tiny_segmentor_cfg(img_size=IMG, with_cp=cp, **METHODS['lora']), batch=1, img_size=IMG
        )
        for cp in levels
    }

    def block(cp, i=0):
        return est[cp].activations_by_component[f'backbone.blocks.{i}']

    token_map = 4 * (IMG // 16) ** 2 * 32  # fp32 bytes of one (1, h, w, C) map
    # Windowed block 0 (grid 8x8 padded to 9x9): whole-block checkpointing keeps its output
    # (the next block's input); selective also keeps the fused attention's output (padded
    # head dim: 16 + 3 + 3 -> 24 per head, on the padded grid) and the MLP's hidden layer (4C).
    padded = token_map * 81 / 64
    assert block(True) == token_map
    assert block('selective') == pytest.approx(token_map + padded * 24 / 16 + 4 * token_map, rel=0.05)
    assert block(True) < block('selective') < 0.6 * block(False)
    assert len({e.parameter_part for e in est.values()}) == 1


def test_cli_report_and_json(tmp_path, capsys):
    config = tmp_path / 'tiny.py'
    config.write_text(f'model = {tiny_segmentor_cfg(img_size=64, **METHODS["lora"])!r}\n')
    out_json = tmp_path / 'est.json'
    args = [str(config), '--batch', '2', '--amp', 'bf16', '--out-json', str(out_json)]
    assert em.main(args + ['--cfg-options', 'model.backbone.with_cp=True']) == 0
    text = capsys.readouterr().out
    assert 'batch 2, 64x64, amp bf16, with_cp=True' in text
    assert '| backbone.blocks.0 |' in text
    for gb in em.GPU_SIZES_GB:
        assert f'| {gb} GB | fits |' in text
    data = json.loads(out_json.read_text())
    assert data['peak'] == sum(
        data[k] for k in ('weights', 'optimizer_state', 'inputs', 'peak_forward_backward')
    )


def test_preset_replaces_the_method(tmp_path, capsys):
    config = tmp_path / 'tiny.py'
    config.write_text(f'model = {tiny_segmentor_cfg(img_size=64)!r}\n')
    assert em.main([str(config), '--preset', 'full-fine-tuning']) == 0
    assert 'trainable' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        em.main([str(config), '--preset', 'no such method'])
    assert "no PEFT preset 'no such method'" in capsys.readouterr().err


def test_fits_keeps_the_reserve():
    assert em.fits(23 * em.GIB, reserve_gib=1.0)[24] is True
    assert em.fits(23 * em.GIB + 1, reserve_gib=1.0)[24] is False


@pytest.mark.slow  # every prompting round measured under the CPU allocator: up to 16 s
@pytest.mark.parametrize(
    'memory',
    [dict(round_memory='keep'), dict(), dict(round_memory='recompute'), dict(instance_chunk=1)],
    ids=['one-graph', 'rounds-back-propagated', 'rounds-recomputed', 'chunks-of-1'],
)
@pytest.mark.parametrize(
    'prompting', [dict(box_prob=1.0), dict(box_prob=0.5, correction_rounds=2, mask_only_rounds=1)]
)
def test_prompted_prediction_matches_the_measured_step(prompting, memory):
    """A prompted model runs its own loss on generated instances; the prediction follows the real step, with
    the rounds in one graph, back-propagated one at a time, recomputed, and in instance chunks."""
    cfg = tiny_prompted_cfg(head=dict(train_prompting=prompting, **memory), peft=dict(type='LoRA', rank=2))
    est = em.estimate(cfg, batch=2, img_size=64, instances=3)
    real = em.measure(cfg, batch=2, img_size=64, instances=3)
    for part in ('weights', 'gradients', 'optimizer_state', 'activations', 'peak_forward_backward'):
        assert getattr(est, part) == pytest.approx(real[part], rel=0.1), part
    decoder = est.activations_by_component.get('decode_head.mask_decoder.transformer.layers.0', 0)
    assert (decoder > 0) == (memory.get('round_memory') == 'keep')  # the other modes keep no round


@pytest.mark.slow
def test_checkpointed_rounds_keep_the_memory_of_one_round():
    """Rounds back-propagated at once cost one round, not all of them; chunks bound the instances' share.
    (Five rounds and few instances keep the fake-tensor runs short; docs/prompted.md has ViT-B's 11.)"""

    def peak(prompting: dict, instances: int, **memory) -> int:
        cfg = tiny_prompted_cfg(
            head=dict(train_prompting=prompting, **memory), peft=dict(type='LoRA', rank=2)
        )
        return em.estimate(cfg, batch=1, img_size=64, instances=instances).peak

    recipe = dict(box_prob=0.5, correction_rounds=3, mask_only_rounds=1)
    one_round = peak(dict(box_prob=1.0), 2)
    assert peak(recipe, 2, round_memory='keep') > 1.5 * peak(recipe, 2)  # 5 rounds held at once
    # the first round's three multimask outputs cost three rounds; chunks of one instance bound them
    assert peak(recipe, 2, instance_chunk=1) <= 1.25 * one_round
    assert peak(recipe, 8, instance_chunk=2) <= 1.15 * peak(recipe, 2, instance_chunk=2)


@pytest.mark.slow  # 18 s
def test_prompted_memory_grows_with_instances_and_rounds():
    """With every round kept, memory grows with instances and rounds; back-propagated at once, not with rounds."""

    def estimate(instances: int, **head):
        return em.estimate(tiny_prompted_cfg(head=head), batch=1, img_size=64, instances=instances)

    one = estimate(2, round_memory='keep')
    more = estimate(6, round_memory='keep')
    rounds = estimate(2, round_memory='keep', train_prompting=dict(box_prob=1.0, correction_rounds=4))
    assert one.activations < more.activations and one.activations < rounds.activations
    assert one.inputs < more.inputs  # the instance masks are inputs of the step
    rounds_freed = estimate(2, train_prompting=dict(box_prob=1.0, correction_rounds=4))
    assert rounds_freed.peak < 0.5 * rounds.peak
    # a little more than one round: the mask prompt's branch and the points' gradients (ViT-B: docs/prompted.md)
    assert rounds_freed.peak <= 1.25 * estimate(2, train_prompting=dict(box_prob=1.0)).peak


def test_prompted_cli_takes_instances(tmp_path, capsys):
    cfg = tmp_path / 'prompted.py'
    cfg.write_text(f'model = {tiny_prompted_cfg()!r}\n')
    assert em.main([str(cfg), '--instances', '4', '--out-json', str(tmp_path / 'e.json')]) == 0
    assert 'peak of a training step' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        em.main([str(cfg), '--instances', '0'])
