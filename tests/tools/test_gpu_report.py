"""tools/analysis_tools/gpu_report.py: the whole report on a CPU with the tiny models, its budget, its failures."""

import json
import math
import re
import sys
from types import SimpleNamespace

import pytest
import torch

from mmseg_sam.models.peft.presets import PRESETS, preset
from tests.conftest import load_tool, run_tool

TOOL = 'tools/analysis_tools/gpu_report.py'
gr = load_tool(TOOL, 'gpu_report_tool')
run_module = sys.modules['gpu_report_run']  # imported by the tool, from its folder

TINY = ['--device', 'cpu', '--tiny']


@pytest.fixture(scope='module')
def full_run(tmp_path_factory) -> tuple[int, dict, str]:
    """The command the docs give for trying every line on a CPU, run once."""
    out = tmp_path_factory.mktemp('gpu_report')
    status = run_tool(TOOL, *TINY, '--budget-s', '60', '--out-dir', out)
    return status, json.loads((out / 'gpu_report.json').read_text()), (out / 'gpu_report.md').read_text()


@pytest.mark.slow
def test_every_section_is_measured_or_skipped_with_a_reason(full_run):
    """On a busy CPU the budget trims rows (correctness's fp16 ones first) or, late, whole sections."""
    status, report, _ = full_run
    assert status == 0 == report['exit_status'], report['failed_checks']
    assert list(report['sections']) == list(gr.SECTIONS)
    for name, section in report['sections'].items():
        assert section['status'] in ('measured', 'partial', 'skipped'), (name, section.get('error'))
        assert (section['status'] == 'measured') == (section['reason'] is None), section
        for row in section['rows']:
            assert 'error' not in row, row
            assert 'skipped' not in row or row['skipped'].startswith('skipped: needs ~'), row
        if section['status'] == 'skipped':
            assert section['reason'].startswith('skipped: needs ~'), section['reason']
    for name in ('environment', 'correctness'):  # the checks come first
        assert any('skipped' not in row for row in report['sections'][name]['rows']), name
    assert report['elapsed_s'] < 60 + 10  # a piece that takes longer than estimated may overrun a little
    assert report['command'].startswith(f'python {TOOL} --device cpu --tiny --budget-s 60 --out-dir ')
    assert re.fullmatch(r'[0-9a-f]{4,}', report['commit'])


@pytest.mark.slow
def test_correctness_trains_the_presets_in_bf16_and_fp16(full_run):
    _, report, _ = full_run
    rows = report['sections']['correctness']['rows']
    expected = [(p.name, amp) for amp in ('bf16', 'fp16') for p in PRESETS]
    assert [(r['preset'], r['amp']) for r in rows] == expected
    ran = [r for r in rows if 'skipped' not in r]
    assert ran and ran == rows[: len(ran)], rows  # bf16 for every preset first; the budget trims the end
    for r in ran:
        assert r['finite_loss'] and math.isfinite(r['loss']), r
        assert r['params_ok'] and r['frozen_changed'] == [], r
        # decoder-only changes no backbone tensor; every other preset changes some of its own
        assert (r['method_changed'] > 0) == (r['preset'] != 'decoder-only'), r
        assert 0 < r['changed'] <= r['trainable'], r
    checks = report['sections']['correctness']['checks']
    assert len(checks) == 2 * len(ran) and all(c['ok'] for c in checks)


@pytest.mark.slow
def test_one_iteration_in_fp16_and_a_frozen_parameter_that_changed(tmp_path):
    """fp16 through tools/train.py (the full run may trim it); a changed frozen tensor fails the check."""
    item = preset(gr.bm.LORA)
    data = tmp_path / 'data'
    start = gr.checks.start_weights(item, data, tmp_path / 'start')
    train_main = gr.checks.load_train_main()
    row = gr.checks.train_one_iteration(train_main, item, 'fp16', start, data, tmp_path / 'fp16')
    assert row['finite_loss'] and row['params_ok'] and row['loss_scale'] == 2.0**16, row
    # the retry after a first step that GradScaler skips runs at its own initial scale
    row = gr.checks.train_one_iteration(train_main, item, 'fp16', start, data, tmp_path / 'retry', 2.0**10)
    assert row['finite_loss'] and row['params_ok'] and row['loss_scale'] == 2.0**10, row
    frozen = next(n for n in start.values if n not in start.trainable)
    start.values[frozen] = start.values[frozen] + 1  # as if training had moved it
    row = gr.checks.train_one_iteration(train_main, item, 'bf16', start, data, tmp_path / 'bf16')
    assert row['frozen_changed'] == [frozen] and not row['params_ok'], row


def test_a_first_fp16_step_skipped_by_the_loss_scaler_is_run_again(monkeypatch, tmp_path):
    """GradScaler may skip a first fp16 step (inf / NaN gradients at 2**16): not a failure of the project."""
    calls = []

    def fake(train_main, item, amp, start, data_root, work, init_scale=None):
        calls.append((amp, init_scale))
        skipped = amp == 'fp16' and init_scale is None
        return dict(
            loss=1.0,
            finite_loss=True,
            changed=0 if skipped else 3,
            trainable=3,
            method_changed=0 if skipped else 1,
            method_params=1,
            frozen_changed=[],
            loss_scale=2.0**15 if skipped else init_scale or 2.0**16,
            params_ok=not skipped,
        )

    monkeypatch.setattr(gr.checks, 'train_one_iteration', fake)
    monkeypatch.setattr(gr.checks, 'start_weights', lambda item, data, work: {})
    monkeypatch.setattr(gr.checks, 'load_train_main', lambda: None)
    monkeypatch.setattr(gr.checks, 'PRESETS', gr.checks.PRESETS[:1])
    costs = gr.CostModel(gr.priors(torch.device('cpu'), True))
    run = gr.Run(setup=SimpleNamespace(work_dir=tmp_path), budget=gr.Budget(600), costs=costs)
    section = gr.checks.section_correctness(run)
    assert calls == [('bf16', None), ('fp16', None), ('fp16', 2.0**10)]
    fp16 = [row for row in section.rows if row.get('amp') == 'fp16']
    assert fp16[0]['first_step_skipped_at_scale'] == 2.0**16 and fp16[0]['params_ok']
    assert all(check['ok'] for check in section.checks)


@pytest.mark.slow
def test_environment_dist_memory_and_speed_rows(full_run):
    _, report, _ = full_run
    sections = report['sections']
    env = sections['environment']
    assert env['info']['torch'] and env['info']['device_type'] == 'cpu'
    measured = [r for r in env['rows'] if 'skipped' not in r]
    assert {(r['amp'], r['block']) for r in measured} == {
        (a, b) for a in ('bf16', 'fp16') for b in ('windowed', 'global')
    }
    for r in measured:
        assert r['ok'] and max(r['fused_vs_eager'].values()) <= r['tolerance'], r
        assert r['attn_impl_training'] == 'folded'  # LoRA makes the bias need a gradient
        assert r['training_forward'] in gr.checks.SDPA_KERNELS.values(), r
    [dist] = sections['dist']['rows']
    if 'skipped' not in dist:
        assert dist['returncode'] == 0 and dist['backend'] == 'gloo' and dist['distributed'], dist
        assert dist['checkpoint'] and math.isfinite(dist['loss'])
    check_grid_rows(sections)


def check_grid_rows(sections: dict) -> None:
    """The memory and speed rows that ran."""
    memory = [r for r in sections['memory']['rows'] if 'ratio' in r]
    for r in memory:
        assert r['ratio'] == pytest.approx(r['measured_mib'] / r['predicted_mib'])
        # a CPU figure (the allocator's events against the prediction), as test_estimate_memory.py checks
        assert r['within_claim'] and abs(r['ratio'] - 1) <= 0.1, r
    speed = [r for r in sections['speed']['rows'] if 'step_ms' in r]
    # the budget decides which rows ran (a late, cheaper SAM 2 row may run after the others were skipped);
    # a SAMViT row is compared with segment_anything + LoRA exactly when that reference ran at its size
    references = {(r['encoder'], r['batch']) for r in speed if r['kind'] == 'reference'}
    for r in speed:
        assert r['steps'] == 5 and r['step_ms_min'] <= r['step_ms'] <= r['step_ms_max'], r
        assert r['images_per_s'] == pytest.approx(r['batch'] * 1000 / r['step_ms'])
        compared = r['kind'] == 'sam' and (r['encoder'], r['batch']) in references
        assert (r.get('step_over_reference') is not None) == compared, r


def test_memory_and_speed_rows_on_a_smaller_grid(monkeypatch, tmp_path):
    """Every line of the grids, whatever the full run's budget left them: one method, one with_cp level."""
    monkeypatch.setattr(gr.measurements, 'METHODS', (gr.bm.LORA,))
    monkeypatch.setattr(gr.measurements, 'WITH_CP_LEVELS', ('selective',))
    assert gr.main([*TINY, '--sections', 'memory', 'speed', '--budget-s', '300', '--out-dir', tmp_path]) == 0
    sections = json.loads((tmp_path / 'gpu_report.json').read_text())['sections']
    assert sections['memory']['status'] == sections['speed']['status'] == 'measured'
    assert len(sections['memory']['rows']) == 1
    assert [r['kind'] for r in sections['speed']['rows']] == ['reference', 'sam', 'sam2']
    check_grid_rows(sections)


@pytest.mark.slow
def test_markdown_holds_every_section(full_run):
    _, report, text = full_run
    assert text.startswith(f'## GPU report: {report["device"]}, {report["date"]}')
    assert f'- command: `{report["command"]}`' in text
    for title, _ in gr.SECTION_TITLES.values():
        assert f'### {title}' in text
    for item in PRESETS:
        assert f'| {item.name} | bf16 |' in text and f'| {item.name} | fp16 |' in text
    assert '| small SAM | bf16 | global |' in text


def test_a_budget_that_fits_only_the_first_section_skips_the_rest(monkeypatch, tmp_path):
    priors = {kind: 1e4 for kind in gr.PRIOR_S['tiny']}
    monkeypatch.setitem(gr.PRIOR_S, 'tiny', dict(priors, environment=1.0))
    assert gr.main([*TINY, '--budget-s', '30', '--out-dir', tmp_path]) == 0
    report = json.loads((tmp_path / 'gpu_report.json').read_text())
    sections = report['sections']
    assert sections['environment']['status'] == 'measured'
    for name in gr.SECTIONS[1:]:
        assert sections[name]['status'] == 'skipped', name
        assert re.fullmatch(
            r'skipped: needs ~\d+ s \(estimated\), \d+ s of the budget left', sections[name]['reason']
        )
    text = (tmp_path / 'gpu_report.md').read_text()
    assert text.count('\nskipped: needs ~') == len(gr.SECTIONS) - 1


def test_cost_model_and_budget():
    now = [0.0]
    budget = gr.Budget(10.0, clock=lambda: now[0])
    costs = gr.CostModel({'memory:x': 2.0}, default_s=50.0)
    assert costs.estimate('memory:x', units=2) == 4.0 and costs.estimate('other') == 50.0
    costs.observe('memory:x', 3.0, units=2)
    costs.observe('memory:x', 0.5, units=1)
    assert costs.estimate('memory:x', units=2) == 3.0  # the slowest, 1.5 s per unit, above 1.2 x the mean
    costs.observe('steady', 1.0)
    costs.observe('steady', 1.0)
    assert costs.estimate('steady', units=2) == pytest.approx(
        2 * run_module.MARGIN
    )  # the margin over the mean
    run = gr.Run(setup=None, budget=budget, costs=costs)
    assert run.skip_reason('memory:x', 2) is None
    now[0] = 7.8
    assert run.skip_reason('memory:x', 2) == 'skipped: needs ~3 s (estimated), 2 s of the budget left'
    now[0] = 5.0
    run.reserve_s = 3.0  # kept for the sections after this one
    assert run.skip_reason('memory:x', 2) == (
        'skipped: needs ~3 s (estimated), 5 s of the budget left, 3 s of it kept for the sections after this one'
    )
    with pytest.raises(ValueError, match='the budget must be positive, got 0'):
        gr.Budget(0)


def test_a_failed_check_makes_the_exit_status_non_zero(monkeypatch, tmp_path):
    monkeypatch.setattr(gr.checks, 'PARITY_TOL', {'bf16': 0.0, 'fp16': 0.0})
    assert gr.main([*TINY, '--sections', 'environment', '--out-dir', tmp_path]) == 1
    report = json.loads((tmp_path / 'gpu_report.json').read_text())
    assert report['exit_status'] == 1
    assert report['failed_checks'] and all(
        'fused attention matches eager' in c for c in report['failed_checks']
    )
    assert report['sections']['correctness']['reason'] == 'skipped: not among --sections'
    assert (
        '\n  - failed: small SAM windowed block, bf16: fused attention matches eager'
        in (tmp_path / 'gpu_report.md').read_text()
    )


def test_a_stopped_run_keeps_the_rows_it_measured(monkeypatch, tmp_path):
    """The files are written after every row: a run killed inside a section keeps that section's rows."""
    launch = dict(returncode=0, timed_out=False, distributed=True, backend='gloo', loss=0.5, checkpoint=True)

    def killed_in_its_third_row(run):
        section = gr.Section()
        for i in range(3):
            if i == 2:
                raise KeyboardInterrupt  # as the command's time limit would stop it
            section.row(run, 'dist', 1, dict(launcher=f'run {i}', processes=1), lambda: launch)

    monkeypatch.setitem(gr.SECTION_FUNCS, 'dist', killed_in_its_third_row)
    with pytest.raises(KeyboardInterrupt):
        gr.main([*TINY, '--sections', 'dist', '--out-dir', tmp_path])
    section = json.loads((tmp_path / 'gpu_report.json').read_text())['sections']['dist']
    assert section['status'] == 'stopped' and [r['launcher'] for r in section['rows']] == ['run 0', 'run 1']
    text = (tmp_path / 'gpu_report.md').read_text()
    assert 'stopped: stopped before the section ended' in text and '| run 1 | 1 | 0 | yes | gloo |' in text


def test_a_section_that_raises_is_recorded_and_the_next_one_runs(monkeypatch, tmp_path):
    def broken(run):
        raise RuntimeError('no such kernel')

    def passing(run):
        section = gr.Section()
        section.check('stand-in check', True)
        return section

    monkeypatch.setitem(gr.SECTION_FUNCS, 'environment', broken)
    monkeypatch.setitem(gr.SECTION_FUNCS, 'correctness', passing)
    assert gr.main([*TINY, '--sections', 'environment', 'correctness', '--out-dir', tmp_path]) == 1
    report = json.loads((tmp_path / 'gpu_report.json').read_text())
    env, correctness = report['sections']['environment'], report['sections']['correctness']
    assert env['status'] == 'failed' and env['error'] == 'RuntimeError: no such kernel'
    assert correctness['status'] == 'measured' and correctness['checks'][0]['ok']
    assert report['failed_checks'] == ['section environment raised: RuntimeError: no such kernel']


BAD_ARGUMENTS = [
    (['--device', 'tpu'], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
    (['--budget-s', '0'], '--budget-s must be positive, got 0'),
    (['--sections', 'speedy'], "invalid choice: 'speedy'"),
]
if not torch.cuda.is_available():  # the default device is CUDA
    BAD_ARGUMENTS.append(([], 'no CUDA device: this report is for a GPU'))


@pytest.mark.parametrize('argv, message', BAD_ARGUMENTS)
def test_bad_arguments_are_refused(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        gr.main([*argv, '--out-dir', tmp_path])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
