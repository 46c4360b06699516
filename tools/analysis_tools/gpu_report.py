"""Validate the project on a GPU in one command, within a wall-time budget, and write the docs' tables.

    python tools/analysis_tools/gpu_report.py --out-dir work_dirs/gpu_report      # on a CUDA machine
    python tools/analysis_tools/gpu_report.py --device cpu --tiny --budget-s 60   # every line, on a CPU

Sections, run in this order (the checks first, so that a run cut short has still said
whether the project is correct on the device; the measurements then trim rows to fit):

1. ``environment``: device, memory, torch / CUDA / cuDNN versions; for SAM's windowed
   and global blocks at the report's size (ViT-B and ViT-H at 1024x1024), in bf16 and
   fp16, the kernels ``F.scaled_dot_product_attention`` ran (flash, memory-efficient,
   cuDNN, math: read from ``torch.profiler``) in training (the folded form) and in
   inference; and a check that the fused path matches segment_anything's eager
   attention on the same weights: ``max |fused - eager| / max |eager|`` of the block's
   output and input gradient within ``gpu_report_checks.PARITY_TOL`` (0.03 in bf16, 0.01
   in fp16).
2. ``correctness``: one iteration of ``tools/train.py --amp`` (bf16 and fp16) for every
   preset of ``mmseg_sam.models.peft.presets`` on a small SAM (the demo's small
   architecture, 32x32 synthetic data): the loss is finite, and from the starting weights
   (``load_from``, zero-initialised trainable tensors perturbed so that every one gets a
   gradient) only trainable parameters changed, the method's among them.
3. ``dist``: ``tools/dist_train.sh CONFIG 1`` (torchrun, one process): NCCL on CUDA,
   gloo on a CPU; it must exit 0 with a finite loss and the backend expected.
4. ``memory``: ViT-B and ViT-H at 1024x1024, LoRA and Conv-LoRA, batches 1 and 2,
   bf16, each ``with_cp`` level: the peak of a steady-state training step of the binary
   segmentor (the second of two steps; ``torch.cuda.max_memory_allocated`` above what was
   allocated before the model was built) next to ``estimate_memory.py``'s prediction of
   the same step; the ratio, and whether it is within 10% (docs/memory.md's claim). On a
   CPU the measurement is the CPU allocator's events (``torch.profiler``), labelled so.
5. ``speed``: the same grid, timed by ``benchmark.py``'s measurement (encoder step:
   forward + backward + AdamW), median and range over ``--repeat`` steps after
   ``--warmup``, images/s, next to segment_anything's encoder with the same LoRA, and
   SAM 2.1 Hiera-B+ with LoRA and Conv-LoRA.

``--tiny`` swaps in the demo's small SAM and mini Hiera at 32x32 everywhere (and one batch,
2), so that every line of the script runs on a CPU within a minute (the test suite runs it).

The checks are in ``gpu_report_checks.py``, the measurements in
``gpu_report_measurements.py``, the budget and what every section gets in
``gpu_report_run.py``; this file holds the command line and the output.

Budget: before each piece of work (an attention probe, a preset's training iteration, a
grid row, the launcher run) its cost is estimated, and the piece is skipped, with the
reason recorded, when the estimate exceeds what is left of ``--budget-s``. An estimate is
the prior of :data:`PRIOR_S` for that kind of work (seconds per image of the batch) until
one piece of the kind has run, then the mean measured seconds per image of the kind times
1.2 (or the slowest measured, if more) times the images. Each section keeps for the
sections after it 1.2 times the estimated cost of their first piece of work (of those that
can still fit), so a long grid is trimmed rather than a later section skipped.

Output: ``gpu_report.json`` and ``gpu_report.md`` under ``--out-dir`` (rewritten after
every row, so a run that is stopped leaves what it measured), with device, commit, date and
the command. Exit status 1 when a check failed or a section raised (a section
that raises is recorded with its error and the next one runs); a skipped section or row
is not a failure.
"""

import argparse
import datetime
import json
import logging
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import benchmark as bm  # noqa: E402
import gpu_report_checks as checks  # noqa: E402
import gpu_report_measurements as measurements  # noqa: E402
import torch  # noqa: E402
from gpu_report_run import (  # noqa: E402
    DEMO_CONFIG,
    DEMO_SAM2_CONFIG,
    MARGIN,
    TINY_IMG,
    Budget,
    CostModel,
    Run,
    Section,
    Setup,
    release_memory,
)
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

SECTIONS = ('environment', 'correctness', 'dist', 'memory', 'speed')
SECTION_FUNCS: dict[str, Callable[[Run], Section]] = dict(
    environment=checks.section_environment,
    correctness=checks.section_correctness,
    dist=checks.section_dist,
    memory=measurements.section_memory,
    speed=measurements.section_speed,
)
ARCHS = {'ViT-B': 'vit_b', 'ViT-H': 'vit_h'}
SAM2_ARCH = ('Hiera-B+', 'base_plus')
IMG_SIZE = 1024
BATCHES = (1, 2)
TINY_BATCHES = (2,)  # --tiny: one batch (the grids' lines are the same for each)
# Prior cost of a piece of work, seconds per image of its batch, until one has run.
PRIOR_S = {
    'cuda': {
        'environment': 20.0, 'correctness': 5.0, 'dist': 90.0, 'memory:ViT-B': 8.0, 'memory:ViT-H': 15.0,
        'speed:ViT-B': 5.0, 'speed:ViT-H': 10.0, 'speed:Hiera-B+': 5.0,
    },
    'tiny': {
        'environment': 2.0, 'correctness': 2.0, 'dist': 15.0, 'memory:small SAM': 3.0,
        'speed:small SAM': 3.0, 'speed:mini Hiera': 1.5,
    },
}  # fmt: skip
CPU_SLOWDOWN = 200.0  # full-size models on a CPU: the CUDA priors times this


# -------------------------------------------------------------------------- report
def section_result(section: Section) -> dict[str, Any]:
    """A section's JSON: its status (measured, partial, skipped) with the reason, rows, checks and facts."""
    skipped = [r for r in section.rows if 'skipped' in r]
    if section.rows and len(skipped) == len(section.rows):
        status, reason = 'skipped', skipped[0]['skipped']
    elif skipped:
        first = skipped[0]['skipped'].removeprefix('skipped: ')
        status, reason = 'partial', f'{len(skipped)} of {len(section.rows)} rows skipped, the first: {first}'
    else:
        status, reason = 'measured', None
    return dict(status=status, reason=reason, info=section.info, rows=section.rows, checks=section.checks)


def _fmt(value: Any, spec: str = '') -> str:
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else '**no**'
    return format(value, spec)


def _table(
    header: list[str], keys: list[str], rows: list[dict[str, Any]], cells: Callable[[dict], list[str]]
) -> list[str]:
    """A markdown table: ``keys`` columns, then ``cells(row)``, or the row's skip reason or error."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for row in rows:
        first = [_fmt(row.get(k)) if not isinstance(row.get(k), str) else row[k] for k in keys]
        if 'skipped' in row or 'error' in row:
            rest = [row.get('skipped') or f'failed: {row["error"].splitlines()[0][:150]}']
            rest += [''] * (len(header) - len(keys) - 1)
        else:
            rest = cells(row)
        lines.append('| ' + ' | '.join(first + rest) + ' |')
    return lines


def _md_environment(result: dict[str, Any]) -> list[str]:
    info = result['info']
    memory = f'{info["memory_gib"]:.1f} GiB' if info.get('memory_gib') else '-'
    lines = [
        f'- device: {info.get("device")}, {memory}; torch {info.get("torch")}, CUDA {_fmt(info.get("cuda"))}, '
        f'cuDNN {_fmt(info.get("cudnn"))}, Python {info.get("python")}; CPU: {info.get("cpu")}',
        '- attention: a windowed and a global SAMViT block with LoRA, every parameter perturbed, against the '
        "same block with segment_anything's eager attention; differences are max |a - b| / max |b| of the "
        'output / the input gradient; kernels read from torch.profiler',
        '',
    ]
    header = ['arch', 'amp', 'block', 'tokens', 'training attention', 'training forward kernel',
              'training backward kernel', 'inference kernel', 'fused vs eager', 'eager vs fp32', 'fused vs fp32',
              'tolerance', 'ok']  # fmt: skip

    def pair(d: Mapping[str, float]) -> str:
        return f'{d["output"]:.1e} / {d["input_grad"]:.1e}'

    return lines + _table(header, ['arch', 'amp', 'block'], result['rows'], lambda r: [
        str(r['tokens']), f'`{r["attn_impl_training"]}`', r['training_forward'], r['training_backward'],
        r['inference'], pair(r['fused_vs_eager']), pair(r['eager_vs_fp32']), pair(r['fused_vs_fp32']),
        f'{r["tolerance"]:g}', _fmt(r['ok']),
    ])  # fmt: skip


def _md_correctness(result: dict[str, Any]) -> list[str]:
    header = ['preset', 'amp', 'loss', 'finite', 'changed / trainable tensors', "method's tensors changed",
              'frozen tensors changed', 'loss scale after the step', 'ok']  # fmt: skip
    return _table(header, ['preset', 'amp'], result['rows'], lambda r: [
        _fmt(r['loss'], '.4f'), _fmt(r['finite_loss']), f'{r["changed"]} / {r["trainable"]}',
        f'{r["method_changed"]} of {r["method_params"]}', ', '.join(r['frozen_changed']) or 'none',
        _fmt(r.get('loss_scale'), 'g'), _fmt(r['finite_loss'] and r['params_ok']),
    ])  # fmt: skip


def _md_dist(result: dict[str, Any]) -> list[str]:
    header = ['launcher', 'processes', 'exit status', 'distributed', 'backend', 'loss', 'checkpoint']
    return _table(header, ['launcher', 'processes'], result['rows'], lambda r: [
        _fmt(r['returncode']) if not r['timed_out'] else 'timed out', _fmt(r['distributed']), _fmt(r['backend']),
        _fmt(r['loss'], '.4f'), _fmt(r['checkpoint']),
    ])  # fmt: skip


def _md_memory(result: dict[str, Any]) -> list[str]:
    lines = [f'- measured: {result["info"].get("measure")}; predicted: estimate_memory.py', '']
    header = ['arch', 'method', 'batch', 'with_cp', 'measured (MiB)', 'predicted (MiB)', 'measured / predicted',
              'within 10%']  # fmt: skip
    return lines + _table(header, ['arch', 'method', 'batch', 'with_cp'], _repr_cp(result['rows']), lambda r: [
        f'{r["measured_mib"]:,.0f}', f'{r["predicted_mib"]:,.0f}', f'{r["ratio"]:.3f}', _fmt(r['within_claim']),
    ])  # fmt: skip


def _md_speed(result: dict[str, Any]) -> list[str]:
    info = result['info']
    lines = [f'- {info.get("timing")}; memory: {info.get("memory")}', '']
    header = ['encoder', 'method', 'batch', 'with_cp', 'trainable', 'step (ms): median [min, max]', 'images/s',
              'forward (ms)', 'peak (MiB)', 'step / segment_anything + LoRA']  # fmt: skip
    return lines + _table(header, ['encoder', 'method', 'batch', 'with_cp'], _repr_cp(result['rows']), lambda r: [
        f'{r["trainable"]:,}', f'{r["step_ms"]:.1f} [{r["step_ms_min"]:.1f}, {r["step_ms_max"]:.1f}]',
        f'{r["images_per_s"]:.2f}', f'{r["forward_ms"]:.1f}', _fmt(r['peak_mib'], ',.0f'),
        _fmt(r.get('step_over_reference'), '.2f'),
    ])  # fmt: skip


def _repr_cp(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``with_cp`` written as in configs (``'selective'``, ``False``)."""
    return [dict(r, with_cp=f'`{r["with_cp"]!r}`') if 'with_cp' in r else r for r in rows]


SECTION_TITLES = dict(
    environment=('Environment and attention kernels', _md_environment),
    correctness=('Correctness: one tools/train.py --amp iteration per preset', _md_correctness),
    dist=('Launcher: tools/dist_train.sh with one process', _md_dist),
    memory=('Memory of a training step: measured and predicted', _md_memory),
    speed=('Speed of a training step', _md_speed),
)


def markdown(report: dict[str, Any]) -> str:
    commit = report['commit'] or 'unknown'
    if report['uncommitted']:
        commit += f' + uncommitted changes in {", ".join(report["uncommitted"])}'
    failed = report['failed_checks']
    lines = [
        f'## GPU report: {report["device"]}, {report["date"]}',
        '',
        f'- command: `{report["command"]}`',
        f'- commit {commit}; {report["mode"]}',
        f'- budget {report["budget_s"]:.0f} s, used {report["elapsed_s"]:.0f} s',
        f'- checks: {report["checks_passed"]} passed, {len(failed)} failed'
        + ''.join(f'\n  - failed: {c}' for c in failed),
        '',
    ]
    for name, result in report['sections'].items():
        title, render = SECTION_TITLES[name]
        lines += [f'### {title}', '']
        if result['status'] == 'failed':
            lines += [f'failed: {result["error"]}', '']
            continue
        if result['status'] == 'skipped':
            lines += [result['reason'], '']
        elif result['status'] in ('partial', 'stopped'):
            lines += [f'{result["status"]}: {result["reason"]}', '']
        if result.get('rows') or result.get('info'):
            lines += render(result) + ['']
    return '\n'.join(lines)


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    checks = [c for s in report['sections'].values() for c in s.get('checks', [])]
    failed = [c['name'] for c in checks if not c['ok']]
    failed += [
        f'section {name} raised: {s["error"]}'
        for name, s in report['sections'].items()
        if s['status'] == 'failed'
    ]
    report.update(
        checks_passed=sum(c['ok'] for c in checks), failed_checks=failed, exit_status=1 if failed else 0
    )
    (out_dir / 'gpu_report.json').write_text(json.dumps(report, indent=2, default=str) + '\n')
    (out_dir / 'gpu_report.md').write_text(markdown(report))


# ---------------------------------------------------------------------------- main
def tiny_archs() -> tuple[dict[str, Any], tuple[str, Any]]:
    """The demo configs' small SAMViT and mini SAM2Hiera architectures."""
    sam = Config.fromfile(str(DEMO_CONFIG)).model.backbone.arch.to_dict()
    hiera = Config.fromfile(str(DEMO_SAM2_CONFIG)).model.backbone.arch.to_dict()
    return {'small SAM': sam}, ('mini Hiera', hiera)


def first_unit(name: str, setup: Setup) -> tuple[str, float]:
    """(cost kind, images) of the first piece of work of section ``name``."""
    if name in ('memory', 'speed'):
        return f'{name}:{next(iter(setup.archs))}', setup.batches[0]
    return name, 1


def reserve_for(later: list[str], run: Run) -> float:
    """Seconds to keep for the sections ``later``: the first piece of each that can still fit, times :data:`MARGIN`.

    The margin covers a last piece of the running section that takes longer than estimated.
    """
    left = run.budget.remaining()
    estimates = [run.costs.estimate(*first_unit(name, run.setup)) for name in later]
    return MARGIN * sum(e for e in estimates if e <= left)


def priors(device: torch.device, tiny: bool) -> dict[str, float]:
    if tiny:
        return PRIOR_S['tiny']
    scale = 1.0 if device.type == 'cuda' else CPU_SLOWDOWN
    return {kind: seconds * scale for kind, seconds in PRIOR_S['cuda'].items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--device', default=None, help='cuda, cuda:N or cpu (default: cuda; an error without one)'
    )
    parser.add_argument(
        '--tiny', action='store_true', help="the demo's small SAM and Hiera at 32x32 everywhere"
    )
    parser.add_argument(
        '--budget-s', type=float, default=420.0, help='wall-time budget in seconds (default 420)'
    )
    parser.add_argument('--out-dir', type=Path, default=Path('work_dirs/gpu_report'))
    parser.add_argument(
        '--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS), help='default: all'
    )
    parser.add_argument(
        '--warmup', type=bm.non_negative_int, default=None, help='speed: untimed steps (2; 1 with --tiny)'
    )
    parser.add_argument('--repeat', type=bm.positive_int, default=5, help='speed: timed steps (default 5)')
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f'--budget-s must be positive, got {args.budget_s:g}')
    budget = Budget(args.budget_s)
    device_name = args.device or 'cuda'
    if not re.fullmatch(r'cpu|cuda(:\d+)?', device_name):
        parser.error(f'--device must be cpu, cuda or cuda:N, got {device_name!r}')
    device = torch.device(device_name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error(
            'no CUDA device: this report is for a GPU (try every line on a CPU with --device cpu --tiny)'
        )
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    archs, sam2 = tiny_archs() if args.tiny else (dict(ARCHS), SAM2_ARCH)
    setup = Setup(
        device=device,
        tiny=args.tiny,
        img_size=TINY_IMG if args.tiny else IMG_SIZE,
        archs=archs,
        sam2=sam2,
        batches=TINY_BATCHES if args.tiny else BATCHES,
        warmup=args.warmup if args.warmup is not None else (1 if args.tiny else 2),
        repeat=args.repeat,
        work_dir=out_dir / 'work',
    )
    run = Run(setup, budget, CostModel(priors(device, args.tiny)))
    commit, uncommitted = bm.git_state()
    report: dict[str, Any] = dict(
        device=torch.cuda.get_device_name(device) if device.type == 'cuda' else bm.describe_machine({}),
        mode=('tiny models (the demo configs\' small SAM and mini Hiera, 32x32)' if args.tiny
              else f'SAM ViT-B / ViT-H and SAM 2.1 Hiera-B+ at {IMG_SIZE}x{IMG_SIZE}')
        + (', CPU figures' if device.type == 'cpu' else ''),
        date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        command=shlex.join(['python', 'tools/analysis_tools/gpu_report.py', *argv]),
        commit=commit,
        uncommitted=uncommitted,
        torch=torch.__version__,
        budget_s=args.budget_s,
        elapsed_s=0.0,
        sections={},
    )  # fmt: skip
    for i, name in enumerate(SECTIONS):
        if name not in args.sections:
            result = dict(
                status='skipped', reason='skipped: not among --sections', rows=[], checks=[], info={}
            )
        else:
            start = time.perf_counter()
            run.reserve_s = reserve_for([n for n in SECTIONS[i + 1 :] if n in args.sections], run)
            print(f'[{budget.elapsed():.0f} s] {name}', file=sys.stderr, flush=True)

            def progress(section: Section, name: str = name, start: float = start) -> None:
                stopped = 'stopped before the section ended (the rows so far are kept)'
                running = dict(section_result(section), status='stopped', reason=stopped)
                report['sections'][name] = dict(running, seconds=time.perf_counter() - start)
                write_outputs(report, out_dir)

            run.progress = progress
            try:
                result = section_result(SECTION_FUNCS[name](run))
            except Exception as err:  # recorded; the next section runs
                result = dict(status='failed', error=f'{type(err).__name__}: {err}',
                              traceback=traceback.format_exc(), rows=[], checks=[], info={})  # fmt: skip
            release_memory()
            result['seconds'] = time.perf_counter() - start
        report['sections'][name] = result
        report['elapsed_s'] = budget.elapsed()
        write_outputs(report, out_dir)
    for name, result in report['sections'].items():
        print(f'{name}: {result["status"]}' + (f' ({result["reason"]})' if result.get('reason') else ''),
              file=sys.stderr)  # fmt: skip
    for failure in report['failed_checks']:
        print(f'FAILED: {failure}', file=sys.stderr)
    print(f'{out_dir / "gpu_report.md"}, {out_dir / "gpu_report.json"}: {report["checks_passed"]} checks passed, '
          f'{len(report["failed_checks"])} failed, {budget.elapsed():.0f} s of {args.budget_s:.0f} s')  # fmt: skip
    return report['exit_status']


if __name__ == '__main__':
    sys.exit(main())
