"""Speed and memory of every PEFT method on SAM's (and SAM 2's) image encoder, in one run.

For each row (every preset of ``mmseg_sam.models.peft.presets.PRESETS``, the frozen
encoder without PEFT, and segment_anything's own ``ImageEncoderViT`` frozen and with
LoRA as references) this measures the trainable parameters, the forward time (eval, no
grad), the training-step time and the peak memory, and prints a markdown table followed
by the target ratios:

    python tools/analysis_tools/benchmark.py --arch vit_b --img-size 512 --batch 1 \\
        --warmup 1 --repeat 2 --out-json bench.json --out-png bench.png --out-md bench.md

Every registered backbone family has its rows (its frozen encoder and every preset):
``--family`` picks one (default ``sam``, SAM's ViT, whose rows sit beside the
segment_anything references and keep unprefixed keys; ``sam2``, SAM 2.1's ``SAM2Hiera``;
any other ``SAMBackboneBase`` family by its ``family`` name) or ``all`` (``both``) for
every family in one table at the same input size and batch. ``--methods`` picks rows of
any family (keys of the other families start with ``<family>-``: ``sam2-lora-qv-r4``).
``--arch`` and ``--backbone-options`` set SAM's encoder; ``--family-arch FAMILY ARCH``
and ``--family-options FAMILY KEY=VALUE ...`` set any family's (default: the first of
its ``report_archs``, ``base_plus`` for SAM 2.1):

    python tools/analysis_tools/benchmark.py --family all --family-arch sam2 base_plus \
        --family-options sam2 with_cp=True

A method whose ``needs_places`` the family lacks (SAM-Adapter and LST on SAM2Hiera) is
reported as refused, with its reason, not as a failure. Each family's
``step / frozen fwd`` is relative to its own frozen encoder.

A training step is forward + backward + AdamW step on the trainable parameters, with
``mean(encoder output)`` (+ auxiliary PEFT losses) as the loss. Rows without trainable
parameters (frozen, references) backpropagate to the input instead (the input requires
grad). Times are medians of ``--repeat`` runs after ``--warmup`` runs: wall clock
(the targets' measure) and the CPU time of the process, which varies much less when
other processes share the cores.

Every row runs in its own freshly spawned interpreter. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA, and on CPU the peak RSS of the child
(``resource.getrusage``) minus its RSS when it started, i.e. after the imports; both
cover building the model, the forward runs and the training steps.
"""

import argparse
import ast
import inspect
import json
import logging
import multiprocessing
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules
from torch import nn

import mmseg_sam  # noqa: F401
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.backbones.base import SAMBackboneBase, registered_families
from mmseg_sam.models.backbones.sam_vit import image_encoder_kwargs
from mmseg_sam.models.peft import collect_aux_losses, inject_peft
from mmseg_sam.models.peft.base import refused_places
from mmseg_sam.models.peft.presets import PRESETS, preset
from mmseg_sam.models.sam_modeling import ImageEncoderViT

REPO = Path(__file__).resolve().parents[2]


FROZEN_METHOD = 'decoder-only'  # the preset of the frozen encoder without PEFT
LORA = 'lora-qv-r4'  # preset keys
CONV_LORA = 'conv-lora-r3'
AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# Set by this tool for each row; --backbone-options / --family-options may not override them.
RESERVED_OPTIONS = ('arch', 'img_size', 'peft', 'frozen')
# The family of segment_anything's encoder (the reference rows): its rows keep unprefixed keys.
REFERENCE_FAMILY = SAMViT.family
EVERY_FAMILY = ('all', 'both')  # --family values for every registered family


def family_prefix(family: str) -> str:
    """The row-key prefix of a family's rows: ``''`` for SAM's, else ``'<family>-'`` (``'sam2-'``)."""
    return '' if family == REFERENCE_FAMILY else f'{family}-'


def frozen_key(family: str) -> str:
    """The key of a family's frozen row: ``'frozen'``, ``'sam2-frozen'``."""
    return family_prefix(family) + 'frozen'


def families() -> dict[str, type[SAMBackboneBase]]:
    """The registered backbone families, SAM's first."""
    found = registered_families()
    return {REFERENCE_FAMILY: found[REFERENCE_FAMILY], **found}


@dataclass
class Row:
    """One measured configuration.

    Args:
        key: the name for ``--methods``.
        name: the name in the table.
        kind: ``'reference'`` (segment_anything's ``ImageEncoderViT``, frozen, eager
            attention, no checkpointing) or a backbone family's name (``'sam'``:
            SAMViT, ``'sam2'``: SAM2Hiera), built with that family's arch and options.
        overrides: the backbone's keyword arguments of the method (``peft``, ``frozen``);
            for a reference, only ``peft`` is used.
    """

    key: str
    name: str
    kind: str
    overrides: dict = field(default_factory=dict)


def slug(name: str) -> str:
    """``'LoRA (r 4, q v)'`` -> ``'lora-r-4-q-v'``."""
    return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


def all_rows() -> list[Row]:
    """References; then per family its frozen encoder and every preset of ``PRESETS`` (SAM's first)."""
    rows = [
        Row('sam-encoder', 'segment_anything encoder (frozen; eager, no checkpointing)', 'reference'),
        Row(
            'sam-encoder-lora',
            f'segment_anything encoder + {preset(LORA).name} (eager, no checkpointing)',
            'reference',
            dict(peft=preset(LORA).peft),
        ),
    ]
    for family, cls in families().items():
        label = '' if family == REFERENCE_FAMILY else f'{cls.family_title}: '
        prefix = family_prefix(family)
        rows.append(
            Row(frozen_key(family), f'{label}frozen, no PEFT', family, dict(preset(FROZEN_METHOD).backbone))
        )
        rows += [
            Row(prefix + item.key, label + item.name, family, dict(item.backbone))
            for item in PRESETS
            if item.key != FROZEN_METHOD
        ]
    return rows


ROWS: dict[str, Row] = {row.key: row for row in all_rows()}


# ----------------------------------------------------------------------------- models
def build_reference(arch_settings: Mapping[str, Any], img_size: int, peft: Mapping | None) -> ImageEncoderViT:
    """segment_anything's encoder with SAMViT's architecture, frozen, then ``peft``."""
    encoder = ImageEncoderViT(**image_encoder_kwargs(arch_settings, img_size))
    encoder.requires_grad_(False)
    if peft:
        inject_peft(encoder, peft)
    return encoder


def build_family(family: str, opts: Mapping[str, Any], **overrides: Any) -> SAMBackboneBase:
    """The ``family``'s encoder at its arch with its options (and the input size, where it takes one)."""
    cls = families()[family]
    kwargs = dict(arch=opts['archs'][family], **opts['options'][family], **overrides)
    if 'img_size' in inspect.signature(cls).parameters:  # SAMViT sizes its position tables
        kwargs['img_size'] = opts['img_size']
    return cls(**kwargs)


def build_row(row: Row, opts: Mapping[str, Any]) -> nn.Module:
    """The model of ``row``: a reference encoder, or its family's encoder with the row's method."""
    if row.kind == 'reference':
        return build_reference(opts['arch_settings'], opts['img_size'], row.overrides.get('peft'))
    return build_family(row.kind, opts, **row.overrides)


def encoder_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of every encoder output plus the auxiliary PEFT losses (Conv-LoRA's)."""
    with collect_aux_losses() as aux:
        out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum(o.float().mean() for o in outs)
    return loss + sum(aux.values())


# ------------------------------------------------------------------------ measurement
def peak_rss_mib() -> float:
    """The peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU milliseconds of ``fn()``, synchronising CUDA around it.

    The CPU time (all threads of the process) is what ``fn`` cost when other processes
    share the cores, so it moves much less than the wall time on a loaded machine.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu_start) * 1000


def _timings(
    fn: Callable[[], None], device: torch.device, warmup: int, repeat: int
) -> dict[str, list[float]]:
    """``repeat`` timed runs of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    runs = [_timed(fn, device) for _ in range(repeat)]
    return dict(wall=[w for w, _ in runs], cpu=[c for _, c in runs])


def measure(row: Row, opts: Mapping[str, Any]) -> dict[str, Any]:
    """Build ``row`` and time its forward and training step; memory as in the module doc."""
    if opts['threads']:
        torch.set_num_threads(opts['threads'])
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    device = torch.device(opts['device'])
    rss_start = peak_rss_mib()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    try:
        model = build_row(row, opts).to(device)
    except ValueError as err:  # arguments were checked in main(): the method refuses this backbone
        if row.kind == 'reference' or not refused_places(families()[row.kind], row.overrides.get('peft')):
            raise
        return dict(refused=str(err))
    params = [p for p in model.parameters() if p.requires_grad]
    report = getattr(model, 'peft_report', None)
    x = torch.randn(opts['batch'], 3, opts['img_size'], opts['img_size'], device=device)
    dtype = AMP_DTYPES[opts['amp']]

    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def forward() -> None:
        with torch.no_grad(), autocast():
            model(x)

    # Rows without trainable parameters backpropagate to the input.
    x_step = x if params else x.detach().requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
    scaler = torch.amp.GradScaler(device.type, enabled=opts['amp'] == 'fp16' and bool(params))

    def step() -> None:
        with autocast():
            loss = encoder_loss(model, x_step)
        scaler.scale(loss).backward()
        if optimizer is not None:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        else:
            x_step.grad = None

    model.eval()
    fwd = _timings(forward, device, opts['warmup'], opts['repeat'])
    model.train()
    stp = _timings(step, device, opts['warmup'], opts['repeat'])
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = peak_rss_mib() - rss_start
    return dict(
        trainable=sum(p.numel() for p in params),
        peft_report_total=report.total if report is not None else None,
        forward_ms=statistics.median(fwd['wall']),
        step_ms=statistics.median(stp['wall']),
        forward_cpu_ms=statistics.median(fwd['cpu']),
        step_cpu_ms=statistics.median(stp['cpu']),
        forward_ms_all=fwd['wall'],
        step_ms_all=stp['wall'],
        peak_mem_mib=peak,
        attn_impl=getattr(model, 'attn_impl', None),
        attn_impls_used=sorted(
            {m.attn_impl for m in model.modules() if m is not model and hasattr(m, 'attn_impl')}
        ),
        with_cp=getattr(model, 'with_cp', None),
        device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
    )


def _child(row: Row, opts: Mapping[str, Any], conn: Connection) -> None:
    """Worker entry point: send ``measure(row)``, or the error it raised, through ``conn``."""
    try:
        result = measure(row, opts)
    except BaseException as err:  # reported in the row, e.g. out of memory
        result = dict(error=f'{type(err).__name__}: {err}', traceback=traceback.format_exc())
    conn.send(result)
    conn.close()


def run_isolated(row: Row, opts: Mapping[str, Any]) -> dict[str, Any]:
    """``measure(row)`` in a fresh interpreter.

    Spawned, not forked: a forked child shares the parent's library pages without
    counting them, so re-touching them would inflate its RSS growth; and CUDA must
    not be initialised across a fork.
    """
    ctx = multiprocessing.get_context('spawn')
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(row, opts, sender))
    proc.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None:
        result = dict(error=f'the worker process died (exit code {proc.exitcode}; killed for memory?)')
    return result


# -------------------------------------------------------------------------- reporting
def targets(results: dict[str, dict], with_cp: bool) -> list[dict[str, Any]]:
    """The target ratios (step time and memory goals) whose rows were measured and did not fail."""

    def value(key: str, field_name: str) -> float | None:
        r = results.get(key)
        return None if r is None or 'error' in r else r[field_name]

    lora, conv_lora = LORA, CONV_LORA
    prefix = 'with_cp ' if with_cp else ''
    specs = [
        (f'{prefix}LoRA step / segment_anything+LoRA step', (lora, 'step_ms'), ('sam-encoder-lora', 'step_ms'),
         1.4 if with_cp else 0.8),
        (f'{prefix}LoRA peak memory / segment_anything+LoRA peak memory', (lora, 'peak_mem_mib'),
         ('sam-encoder-lora', 'peak_mem_mib'), 0.3 if with_cp else 0.5),
        ('Conv-LoRA step / LoRA step', (conv_lora, 'step_ms'), (lora, 'step_ms'), 1.15),
        ('LoRA step / frozen forward', (lora, 'step_ms'), ('frozen', 'forward_ms'), 2.5),
    ]  # fmt: skip
    out = []
    for name, num, den, goal in specs:
        a, b = value(*num), value(*den)
        if a is None or not b:
            continue
        target = dict(name=name, ratio=a / b, goal=goal, met=a / b <= goal, ratio_cpu_time=None)
        if num[1].endswith('_ms'):  # the same ratio of process CPU times
            a_cpu, b_cpu = value(num[0], num[1][:-3] + '_cpu_ms'), value(den[0], den[1][:-3] + '_cpu_ms')
            target['ratio_cpu_time'] = a_cpu / b_cpu if b_cpu else None
        out.append(target)
    return out


def describe_machine(results: dict[str, dict]) -> str:
    """The GPU(s) the workers reported, else the CPU model and core count."""
    gpus = sorted({r['device_name'] for r in results.values() if r.get('device_name')})
    if gpus:
        return ', '.join(gpus)
    model = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'CPU {model}, {os.cpu_count()} logical cores'


def git_state() -> tuple[str | None, list[str]]:
    """The short HEAD commit and the uncommitted or untracked files of the code that runs."""
    try:
        head = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ['git', 'status', '--porcelain', '--', 'mmseg_sam', 'tools/analysis_tools'],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, []
    return head, [line[3:] for line in status.splitlines()]


def _fmt(value: float | None, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    cfg, env = report['config'], report['environment']
    rows = report['rows']
    samvit = next((r for r in rows if r['kind'] == REFERENCE_FAMILY and 'error' not in r), None)
    attn = None
    if samvit and samvit['attn_impl'] is not None:
        attn = f'`{samvit["attn_impl"]}` (blocks use: {", ".join(samvit["attn_impls_used"]) or "-"})'
    commit = env['commit'] or 'unknown'
    if env['uncommitted']:
        commit += f' + uncommitted changes in {", ".join(env["uncommitted"])}'
    cp = ' **with_cp=True (activation checkpointing)**' if report['with_cp'] else ''
    present = row_families(rows)
    lines = [
        f'### {encoders_title(cfg, present)}, {cfg["img_size"]}x{cfg["img_size"]}, batch {cfg["batch"]}, '
        f'{cfg["device"]}, amp {cfg["amp"]}{cp}',
        '',
    ]
    for family in present:
        cls = families()[family]
        line = f'- {cls.__name__} options: `{cfg["options"][family] or {}}`'
        if family == REFERENCE_FAMILY:
            line += '; attn_impl: ' + (
                attn or 'none (this SAMViT has no attn_impl option: segment_anything eager attention)'
            )
        else:
            line += f'; {cls.family_title} rows: step / frozen fwd relative to its frozen encoder'
        lines.append(line)
    lines += [
        f'- commit {commit}; torch {env["torch"]}, {env["machine"]}, {env["threads"]} torch threads',
        f'- times: median of {cfg["repeat"]} after {cfg["warmup"]} warm-up; step = forward + backward + AdamW '
        'on the trainable parameters (frozen rows: backward to the input)',
        f'- memory: {report["memory_measure"]}',
        f'- load average (1 min) at start / end: {env["load_average_start"]:.1f} / {env["load_average_end"]:.1f}',
        '',
        '| method | trainable | forward (ms) | train step (ms) | step / frozen fwd | peak memory (MiB) '
        '| forward CPU (ms) | step CPU (ms) |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ]
    for r in rows:
        if 'error' in r:
            lines.append(f'| {r["name"]} | failed: {r["error"].splitlines()[0][:120]} | | | | | | |')
            continue
        if 'refused' in r:
            lines.append(f'| {r["name"]} | refused: {r["refused"]} | | | | | | |')
            continue
        lines.append(
            f'| {r["name"]} | {r["trainable"]:,} | {r["forward_ms"]:.1f} | {r["step_ms"]:.1f} | '
            f'{_fmt(r["step_over_frozen_forward"], ".2f")} | {r["peak_mem_mib"]:.0f} '
            f'| {r["forward_cpu_ms"]:.0f} | {r["step_cpu_ms"]:.0f} |'
        )
    if report['targets']:
        lines += [
            '',
            '| target ratio | measured (wall) | goal | met | same ratio of CPU times |',
            '| --- | ---: | ---: | --- | ---: |',
        ]
        for t in report['targets']:
            lines.append(
                f'| {t["name"]} | {t["ratio"]:.2f}x | <= {t["goal"]}x | {"yes" if t["met"] else "no"} '
                f'| {_fmt(t["ratio_cpu_time"], ".2f")}{"x" if t["ratio_cpu_time"] is not None else ""} |'
            )
    return '\n'.join(lines) + '\n'


def row_families(rows: list[Mapping[str, Any]]) -> list[str]:
    """The families whose encoders ``rows`` measure, in family order (the references count as SAM's)."""
    kinds = {REFERENCE_FAMILY if r['kind'] == 'reference' else r['kind'] for r in rows}
    return [family for family in families() if family in kinds]


def encoders_title(cfg: Mapping[str, Any], present: list[str]) -> str:
    """``'SAM encoder, vit_b'``, ``'SAM 2.1 Hiera encoder, base_plus'``, joined by ``' vs '``."""
    return ' vs '.join(f'{families()[f].family_title} encoder, {cfg["arch_names"][f]}' for f in present)


def plot(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars of step time and peak memory per row."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in report['rows'] if 'error' not in r and 'refused' not in r]
    names = [r['name'] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(14, 1.0 + 0.35 * len(rows)), sharey=True)
    axes[0].barh(names, [r['step_ms'] for r in rows], color='tab:blue')
    axes[0].set_xlabel('training step (ms, median)')
    axes[1].barh(names, [r['peak_mem_mib'] for r in rows], color='tab:orange')
    axes[1].set_xlabel(f'peak memory (MiB; {report["memory_short"]})')
    axes[0].invert_yaxis()
    cfg = report['config']
    title = encoders_title(cfg, row_families(rows))
    fig.suptitle(
        f'{title}, {cfg["img_size"]}x{cfg["img_size"]}, batch {cfg["batch"]}, '
        f'{cfg["device"]}, amp {cfg["amp"]}' + (', with_cp' if report['with_cp'] else '')
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- main
def parse_arch(text: str, zoo: Mapping[str, Any] | None = None) -> str | dict:
    """A size name of ``zoo`` (SAM's by default: ``vit_b`` / ``vit_l`` / ``vit_h``) or a dict literal."""
    zoo = SAMViT.arch_zoo if zoo is None else zoo
    if text in zoo:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected one of {sorted(zoo)} or a dict literal, got {text!r}')
    return value


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: a Python literal where it is one (``True``, ``4``, ``(1, 2)``), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text!r}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--arch', type=parse_arch, default='vit_b', help='vit_b, vit_l, vit_h or a dict literal'
    )
    names = list(families())
    parser.add_argument(
        '--family',
        choices=(*names, *EVERY_FAMILY),
        default=REFERENCE_FAMILY,
        help=f'default rows without --methods: one family ({", ".join(names)}; {REFERENCE_FAMILY} with the '
        'segment_anything references) or all of them (all, both)',
    )
    parser.add_argument(
        '--family-arch',
        nargs=2,
        action='append',
        default=[],
        metavar=('FAMILY', 'ARCH'),
        help="a family's encoder size: a name of its arch_zoo or a dict literal (default: the first of its "
        'report_archs); repeat for several families',
    )
    parser.add_argument(
        '--family-options',
        nargs='+',
        action='append',
        default=[],
        metavar='FAMILY KEY=VALUE',
        help="keyword arguments of a family's encoder for each of its rows, e.g. sam2 with_cp=True",
    )
    parser.add_argument('--img-size', type=positive_int, default=1024)
    parser.add_argument('--batch', type=positive_int, default=1)
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument(
        '--methods', nargs='+', default=None, help='row keys (see --list-methods); default all'
    )
    parser.add_argument('--list-methods', action='store_true', help='print the row keys and names, then exit')
    parser.add_argument('--amp', choices=tuple(AMP_DTYPES), default='none', help='autocast dtype')
    parser.add_argument(
        '--backbone-options',
        nargs='+',
        action=DictAction,
        default={},
        help='key=value passed to SAMViT for every SAMViT row, e.g. attn_impl=sdpa with_cp=True',
    )
    parser.add_argument('--warmup', type=non_negative_int, default=2)
    parser.add_argument('--repeat', type=positive_int, default=5, help='timed runs; the median is reported')
    parser.add_argument('--threads', type=positive_int, default=None, help="torch threads (default: torch's)")
    parser.add_argument('--out-json', type=Path)
    parser.add_argument('--out-png', type=Path)
    parser.add_argument('--out-md', type=Path)
    return parser


def select_rows(
    parser: argparse.ArgumentParser, keys: list[str] | None, family: str = REFERENCE_FAMILY
) -> list[Row]:
    if keys is None:
        return [
            row
            for row in ROWS.values()
            if family in EVERY_FAMILY
            or row.kind == family
            or (row.kind == 'reference' and family == REFERENCE_FAMILY)
        ]
    by_name = {row.name: row for row in ROWS.values()}
    unknown = [k for k in keys if k not in ROWS and k not in by_name]
    if unknown:
        parser.error(f'unknown --methods {unknown}; choose from {list(ROWS)}')
    chosen = [ROWS.get(k) or by_name[k] for k in keys]
    return list({row.key: row for row in chosen}.values())  # unique, in the given order


def family_settings(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each family's arch and encoder options from ``--arch`` / ``--backbone-options`` (SAM's) and
    ``--family-arch`` / ``--family-options`` (any family's)."""
    known = families()
    archs = {family: cls.report_archs[0] for family, cls in known.items()}
    options: dict[str, dict[str, Any]] = {family: {} for family in known}
    archs[REFERENCE_FAMILY], options[REFERENCE_FAMILY] = args.arch, dict(args.backbone_options)

    def family_of(name: str, flag: str) -> type[SAMBackboneBase]:
        if name not in known:
            parser.error(f'{flag} {name!r} is not a registered family; choose from {list(known)}')
        return known[name]

    for name, text in args.family_arch:
        try:
            archs[name] = parse_arch(text, family_of(name, '--family-arch').arch_zoo)
        except argparse.ArgumentTypeError as err:
            parser.error(f'--family-arch {name}: {err}')
    for name, *pairs in args.family_options:
        family_of(name, '--family-options')
        bad = [pair for pair in pairs if '=' not in pair]
        if bad or not pairs:
            parser.error(f'--family-options {name} takes KEY=VALUE pairs, got {pairs!r}')
        options[name].update({k: parse_value(v) for k, v in (pair.split('=', 1) for pair in pairs)})
    return archs, options


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # keep stdout a clean table
    if args.list_methods:
        for row in ROWS.values():
            print(f'{row.key}\t{row.name}')
        return 0
    rows = select_rows(parser, args.methods, args.family)
    archs, options = family_settings(parser, args)
    for family, given in options.items():
        reserved = [k for k in given if k in RESERVED_OPTIONS]
        if reserved:
            flag = '--backbone-options' if family == REFERENCE_FAMILY else f'--family-options {family}'
            parser.error(
                f'{flag} {reserved} are set by the benchmark per row; not allowed: {RESERVED_OPTIONS}'
            )
    if not re.fullmatch(r'cpu|cuda(:\d+)?', args.device):
        parser.error(f'--device must be cpu, cuda or cuda:N, got {args.device!r}')
    patch = 16 if isinstance(args.arch, str) else args.arch.get('patch_size', 16)
    if args.img_size % patch:
        parser.error(f'--img-size {args.img_size} is not divisible by the patch size {patch}')
    opts = dict(
        archs=archs,
        options=options,
        img_size=args.img_size,
        batch=args.batch,
        device=args.device,
        amp=args.amp,
        warmup=args.warmup,
        repeat=args.repeat,
        threads=args.threads,
    )
    probes: dict[str, SAMBackboneBase] = {}
    for family in dict.fromkeys([REFERENCE_FAMILY, *row_families([asdict(r) for r in rows])]):
        cls = families()[family]
        try:  # validates the arch and the options before any worker starts
            with torch.device('meta'):
                probes[family] = build_family(family, opts)
        except (TypeError, ValueError) as err:
            parser.error(f'{cls.__name__}(arch={archs[family]!r}, **{options[family]}): {err}')
        if args.img_size % probes[family].size_divisor:
            parser.error(
                f'--img-size {args.img_size} is not a multiple of {probes[family].size_divisor} '
                f'({cls.__name__} size_divisor); the {family} rows need it'
            )
    opts['arch_settings'] = dict(probes[REFERENCE_FAMILY].arch_settings)  # the references' architecture
    with_cp = any(bool(given.get('with_cp', False)) for given in options.values())
    del probes

    (commit, uncommitted), load_start = git_state(), os.getloadavg()[0]  # before the (long) run
    results: dict[str, dict] = {}
    for i, row in enumerate(rows, 1):
        result = run_isolated(row, opts)
        results[row.key] = result
        if 'error' in result:
            print(f'[{i}/{len(rows)}] {row.name}: FAILED {result["error"]}', file=sys.stderr, flush=True)
        elif 'refused' in result:
            print(f'[{i}/{len(rows)}] {row.name}: refused: {result["refused"]}', file=sys.stderr, flush=True)
        else:
            print(
                f'[{i}/{len(rows)}] {row.name}: forward {result["forward_ms"]:.1f} ms, '
                f'step {result["step_ms"]:.1f} ms, peak {result["peak_mem_mib"]:.0f} MiB',
                file=sys.stderr,
                flush=True,
            )
    for row in rows:  # each family relative to its own frozen encoder
        result = results[row.key]
        frozen = frozen_key(REFERENCE_FAMILY if row.kind == 'reference' else row.kind)
        frozen_fwd = results.get(frozen, {}).get('forward_ms')
        if 'error' not in result and 'refused' not in result:
            result['step_over_frozen_forward'] = result['step_ms'] / frozen_fwd if frozen_fwd else None

    cuda = args.device.startswith('cuda')
    report = dict(
        config=dict(
            arch_names={f: arch if isinstance(arch, str) else 'custom arch' for f, arch in archs.items()},
            **{
                k: opts[k]
                for k in ('archs', 'options', 'img_size', 'batch', 'device', 'amp', 'warmup', 'repeat')
            },
        ),
        environment=dict(
            commit=commit,
            uncommitted=uncommitted,
            torch=torch.__version__,
            python=platform.python_version(),
            machine=describe_machine(results),
            threads=args.threads or torch.get_num_threads(),
            load_average_start=load_start,
            load_average_end=os.getloadavg()[0],
        ),
        memory_measure=(
            'torch.cuda.max_memory_allocated of the worker process (weights, optimizer state, activations)'
            if cuda
            else 'peak RSS (resource.getrusage ru_maxrss) of the worker process minus its RSS after the '
            'imports, i.e. building the model, forward and training steps'
        ),
        memory_short='CUDA max allocated' if cuda else 'peak RSS - RSS after imports',
        with_cp=with_cp,
        rows=[dict(asdict(row), **results[row.key]) for row in rows],
        targets=targets(results, with_cp),
    )
    text = markdown(report)
    print(text, end='')
    if args.out_md:
        args.out_md.write_text(text)
    if args.out_json:
        args.out_json.write_text(json.dumps(report, indent=2, default=str) + '\n')
    if args.out_png:
        plot(report, args.out_png)
    return 1 if any('error' in r for r in results.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
