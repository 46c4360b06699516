"""tools/analysis_tools/benchmark.py: one real run on the tiny arch, and its argument checks."""

import json
import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from mmseg_sam.models.backbones import SAM2Hiera, SAMViT
from mmseg_sam.models.peft.presets import PRESETS, preset
from tests.conftest import REPO, TINY_ARCH, TINY_IMG, load_tool
from tests.models.sam2_fixtures import TINY_SAM2_ARCH

TOOL = REPO / 'tools/analysis_tools/benchmark.py'
bm = load_tool(TOOL, 'benchmark_tool')

LORA = bm.LORA
KEYS = ['frozen', LORA, 'sam-encoder-lora']
REPEAT = 2


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp('bench')
    proc = subprocess.run(
        [sys.executable, str(TOOL), '--arch', repr(TINY_ARCH), '--img-size', str(TINY_IMG), '--batch', '2']
        + ['--methods', *KEYS, '--warmup', '0', '--repeat', str(REPEAT), '--threads', '1']
        + ['--out-json', str(out / 'b.json'), '--out-png', str(out / 'b.png'), '--out-md', str(out / 'b.md')],
        capture_output=True,
        text=True,
        cwd=out,
    )
    return proc, out


@pytest.mark.slow
def test_rows_have_sane_measurements(run):
    proc, out = run
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / 'b.json').read_text())
    assert report['config']['img_size'] == TINY_IMG and report['config']['batch'] == 2
    rows = {r['key']: r for r in report['rows']}
    assert list(rows) == KEYS
    for key, r in rows.items():
        assert 'error' not in r, (key, r.get('traceback'))
        assert r['forward_ms'] > 0 and r['step_ms'] > 0 and r['peak_mem_mib'] > 0, r
        assert r['forward_cpu_ms'] > 0 and r['step_cpu_ms'] > 0, r
        assert len(r['forward_ms_all']) == REPEAT and len(r['step_ms_all']) == REPEAT
        assert min(r['step_ms_all']) <= r['step_ms'] <= max(r['step_ms_all'])
        assert r['step_over_frozen_forward'] == pytest.approx(r['step_ms'] / rows['frozen']['forward_ms'])
    assert 'RSS' in report['memory_measure']
    # the commit measured: HEAD at the start of the run, so HEAD or one of its ancestors
    commit = report['environment']['commit']
    git = subprocess.run(
        ['git', 'merge-base', '--is-ancestor', commit, 'HEAD'], cwd=REPO, capture_output=True
    )
    assert git.returncode == 0, (commit, git.stderr)


@pytest.mark.slow
def test_trainable_counts_are_the_models(run):
    _, out = run
    rows = {r['key']: r for r in json.loads((out / 'b.json').read_text())['rows']}
    for key in ('frozen', LORA):
        with torch.device('meta'):
            model = SAMViT(arch=TINY_ARCH, img_size=TINY_IMG, **bm.ROWS[key].overrides)
        assert rows[key]['trainable'] == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert rows[key]['peft_report_total'] == model.peft_report.total
        assert rows[key]['attn_impl'] == getattr(model, 'attn_impl', None)  # the backbone's default
    assert rows['frozen']['trainable'] == 0 and rows[LORA]['trainable'] > 0
    # the same LoRA on segment_anything's encoder trains the same parameters
    assert rows['sam-encoder-lora']['trainable'] == rows[LORA]['trainable']
    assert rows['sam-encoder-lora']['peft_report_total'] is None  # no SAMViT report on the reference
    assert rows['sam-encoder-lora']['attn_impl'] is None and rows['sam-encoder-lora']['attn_impls_used'] == []


@pytest.mark.slow
def test_targets_are_the_ratios_of_the_rows(run):
    _, out = run
    report = json.loads((out / 'b.json').read_text())
    rows = {r['key']: r for r in report['rows']}
    ref, lora, frozen = rows['sam-encoder-lora'], rows[LORA], rows['frozen']
    expected = {
        'LoRA step / segment_anything+LoRA step': (lora['step_ms'] / ref['step_ms'], 0.8),
        'LoRA peak memory / segment_anything+LoRA peak memory': (
            lora['peak_mem_mib'] / ref['peak_mem_mib'],
            0.5,
        ),
        'LoRA step / frozen forward': (lora['step_ms'] / frozen['forward_ms'], 2.5),
    }  # no Conv-LoRA row, so no Conv-LoRA target
    got = {t['name']: t for t in report['targets']}
    assert set(got) == set(expected)
    for name, (ratio, goal) in expected.items():
        assert got[name]['ratio'] == pytest.approx(ratio) and got[name]['goal'] == goal
        assert got[name]['met'] == (ratio <= goal)
    assert got['LoRA step / frozen forward']['ratio_cpu_time'] == pytest.approx(
        lora['step_cpu_ms'] / frozen['forward_cpu_ms']
    )
    assert got['LoRA peak memory / segment_anything+LoRA peak memory']['ratio_cpu_time'] is None


@pytest.mark.slow
def test_markdown_and_png(run):
    proc, out = run
    text = (out / 'b.md').read_text()
    assert text in proc.stdout
    table = [line for line in text.splitlines() if line.startswith('| ')]
    for key in KEYS:
        assert any(line.startswith(f'| {bm.ROWS[key].name} | ') for line in table), key
    assert 'with_cp' not in text.splitlines()[0]
    png = (out / 'b.png').read_bytes()
    assert png.startswith(b'\x89PNG\r\n\x1a\n')
    image = plt.imread(out / 'b.png')
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_with_cp_changes_the_header_and_the_memory_goals(run):
    _, out = run
    report = json.loads((out / 'b.json').read_text())
    results = {r['key']: r for r in report['rows']}
    report['with_cp'] = True
    report['targets'] = bm.targets(results, with_cp=True)
    header = bm.markdown(report).splitlines()[0]
    assert 'with_cp=True' in header
    goals = {t['name']: t['goal'] for t in report['targets']}
    assert goals['with_cp LoRA peak memory / segment_anything+LoRA peak memory'] == 0.3
    assert goals['with_cp LoRA step / segment_anything+LoRA step'] == 1.4


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--methods', 'frozen', 'no-such-method'], r"unknown --methods \['no-such-method'\]; choose from"),
        (['--img-size', '72'], '--img-size 72 is not divisible by the patch size 16'),
        (['--backbone-options', 'peft=None'], r"--backbone-options \['peft'\] are set by the benchmark"),
        (['--backbone-options', 'no_such_option=1'], 'no_such_option'),
        (['--repeat', '0'], "expected a positive integer, got '0'"),
        (['--device', 'tpu'], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
        (['--arch', 'vit_x'], "or a dict literal, got 'vit_x'"),
    ],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bm.main(['--arch', repr(TINY_ARCH), '--img-size', str(TINY_IMG), *argv])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_failing_row_is_reported_with_its_error():
    row = bm.Row('bad', 'bad LoRA', 'sam', dict(peft=dict(type='LoRA', rank=2, targets=('q',), blocks=(7,))))
    opts = dict(
        archs={'sam': TINY_ARCH},
        options={'sam': {}},
        img_size=TINY_IMG,
        batch=1,
        device='cpu',
        amp='none',
        warmup=0,
        repeat=1,
        threads=None,
    )
    receiver, sender = multiprocessing.Pipe(duplex=False)
    bm._child(row, opts, sender)
    result = receiver.recv()
    assert result['error'].startswith('ValueError') and 'blocks=(7,)' in result['error'], result
    report = dict(
        config=dict(
            arch_names={'sam': 'custom arch'}, img_size=64, batch=1, device='cpu', amp='none', warmup=0,
            repeat=1, options={'sam': {}},
        ),
        environment=dict(
            commit='x', uncommitted=[], torch='t', machine='m', threads=1, load_average_start=1.0,
            load_average_end=1.0,
        ),
        memory_measure='m',
        with_cp=False,
        rows=[dict(key='bad', name='bad LoRA', kind='sam', **result)],
        targets=[],
    )  # fmt: skip
    assert '| bad LoRA | failed: ValueError' in bm.markdown(report)


SAM2_KEYS = ['frozen', 'sam2-frozen', 'sam2-' + LORA, 'sam2-lst-d192']


def test_sam2_rows_next_to_sam_rows(tmp_path, monkeypatch, capsys):
    """--family both: SAM ViT and SAM 2 Hiera rows at one input size; a refusing method is reported, not failed.

    Rows run in this process (spawning a worker per row is tested above).
    """
    monkeypatch.setattr(bm, 'run_isolated', bm.measure)
    argv = [
        '--arch',
        repr(TINY_ARCH),
        '--family-arch',
        'sam2',
        repr(TINY_SAM2_ARCH),
        '--img-size',
        '64',
        '--batch',
        '2',
    ]
    argv += ['--family', 'both', '--methods', *SAM2_KEYS, '--warmup', '0', '--repeat', '1', '--threads', '1']
    assert bm.main([*argv, '--out-json', str(tmp_path / 'b.json')]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(
        '### SAM encoder, custom arch vs SAM 2.1 Hiera encoder, custom arch, 64x64, batch 2'
    )
    rows = {r['key']: r for r in json.loads((tmp_path / 'b.json').read_text())['rows']}
    assert list(rows) == SAM2_KEYS
    lora = rows['sam2-' + LORA]
    model = SAM2Hiera(arch=TINY_SAM2_ARCH, **bm.ROWS['sam2-' + LORA].overrides)
    assert lora['trainable'] == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert rows['sam2-frozen']['trainable'] == 0 and rows['sam2-frozen']['forward_ms'] > 0
    assert lora['step_over_frozen_forward'] == pytest.approx(
        lora['step_ms'] / rows['sam2-frozen']['forward_ms']
    )
    lst = rows[SAM2_KEYS[-1]]
    assert lst['refused'].startswith('LST needs a backbone with a side_network place (SAMViT), got SAM2Hiera')
    assert f'| SAM 2.1 Hiera: LST (side 192) | refused: {lst["refused"]} |' in text
    assert f'| SAM 2.1 Hiera: {preset(bm.LORA).name} | {lora["trainable"]:,} |' in text


def test_sam2_family_rows_and_size_check(capsys):
    parser = bm.build_parser()
    rows = bm.select_rows(parser, None, 'sam2')
    assert [r.kind for r in rows] == ['sam2'] * len(PRESETS)
    assert len(bm.select_rows(parser, None, 'sam')) + len(rows) == len(bm.select_rows(parser, None, 'both'))
    assert bm.select_rows(parser, None, 'all') == bm.select_rows(parser, None, 'both')
    with pytest.raises(SystemExit):
        bm.main(['--family', 'sam2', '--family-arch', 'sam2', repr(TINY_SAM2_ARCH), '--img-size', '80'])
    assert '--img-size 80 is not a multiple of 32 (SAM2Hiera size_divisor)' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bm.main(['--family', 'sam2', '--family-arch', 'sam2', 'huge'])
    assert "expected one of ['base_plus', 'large', 'small', 'tiny'] or a dict literal, got 'huge'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    'argv, message',
    [
        (
            ['--family-arch', 'sam3', 'b'],
            r"--family-arch 'sam3' is not a registered family; choose from \['sam', 'sam2'\]",
        ),
        (
            ['--family-options', 'sam2', 'with_cp'],
            r"--family-options sam2 takes KEY=VALUE pairs, got \['with_cp'\]",
        ),
        (
            ['--family-options', 'sam2', 'peft=None'],
            r"--family-options sam2 \['peft'\] are set by the benchmark",
        ),
        (['--family-options', 'sam2', 'with_cp=selective'], r'SAM2Hiera\(arch=.*with_cp must be a bool'),
    ],
)
def test_bad_family_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        bm.main(
            ['--family', 'sam2', '--family-arch', 'sam2', repr(TINY_SAM2_ARCH), '--img-size', '64', *argv]
        )
    assert re.search(message, capsys.readouterr().err)


def test_family_options_reach_the_rows_encoder():
    parser = bm.build_parser()
    args = parser.parse_args(
        ['--family-arch', 'sam2', 'tiny', '--family-options', 'sam2', 'with_cp=True', 'drop_path_rate=0.1']
    )
    archs, options = bm.family_settings(parser, args)
    assert archs == {'sam': 'vit_b', 'sam2': 'tiny'}
    assert options == {'sam': {}, 'sam2': {'with_cp': True, 'drop_path_rate': 0.1}}
    opts = dict(archs=archs, options=options, img_size=64)
    with torch.device('meta'):
        model = bm.build_row(bm.ROWS['sam2-' + LORA], opts)
    assert isinstance(model, SAM2Hiera) and model.with_cp is True and model.peft_report.total > 0
