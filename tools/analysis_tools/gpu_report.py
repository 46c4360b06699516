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
   output and input gradient within :data:`PARITY_TOL`.
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

``--tiny`` swaps in the demo's small SAM and mini Hiera at 32x32 everywhere, so that the
whole script runs on a CPU in seconds (the test suite runs it).

Budget: before each piece of work (an attention probe, a preset's training iteration, a
grid row, the launcher run) its cost is estimated, and the piece is skipped, with the
reason recorded, when the estimate exceeds what is left of ``--budget-s``. An estimate is
the prior of :data:`PRIOR_S` for that kind of work (seconds per image of the batch) until
one piece of the kind has run, then the mean measured seconds per image of the kind
times the images, times 1.2. Each section leaves the sections after it the estimated cost
of their first piece of work (of those that can still fit), so a long grid is trimmed
rather than a later section skipped.

Output: ``gpu_report.json`` and ``gpu_report.md`` under ``--out-dir`` (rewritten after
every section, so a run that is stopped leaves what it measured), with device, commit,
date and the command. Exit status 1 when a check failed or a section raised (a section
that raises is recorded with its error and the next one runs); a skipped section or row
is not a failure.
"""

import argparse
import contextlib
import copy
import datetime
import gc
import importlib.util
import io
import json
import logging
import math
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import benchmark as bm  # noqa: E402
import estimate_memory as em  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mmseg_sam.datasets import generate_synthetic_dataset  # noqa: E402
from mmseg_sam.models.backbones import SAMViT  # noqa: E402
from mmseg_sam.models.backbones.sam_vit import WITH_CP_LEVELS  # noqa: E402
from mmseg_sam.models.peft.presets import PRESETS, PEFTPreset, preset  # noqa: E402

REPO = TOOLS.parents[1]
SECTIONS = ('environment', 'correctness', 'dist', 'memory', 'speed')
# The segmentor the memory section measures (memory_table.py's), and the demo's small models for --tiny.
MODEL_CONFIG = REPO / 'configs/_base_/models/sam-vit-b_mask-decoder-binary.py'
DEMO_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
DEMO_SAM2_CONFIG = REPO / 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py'
ARCHS = {'ViT-B': 'vit_b', 'ViT-H': 'vit_h'}
SAM2_ARCH = ('Hiera-B+', 'base_plus')
IMG_SIZE = 1024
TINY_IMG = 32  # also the correctness section's data and model size
METHODS = (bm.LORA, bm.CONV_LORA)
BATCHES = (1, 2)
TINY_BATCHES = (2,)  # --tiny: one batch (the grids' lines are the same for each)
AMP = 'bf16'  # the memory and speed grids
TRAIN_AMPS = {'bf16': 'bfloat16', 'fp16': 'float16'}  # --amp of tools/train.py, per dtype
# max |fused - eager| / max |eager|, of a block's output and of its input's gradient
PARITY_TOL = {'bf16': 3e-2, 'fp16': 1e-2}
MEMORY_CLAIM = 0.10  # docs/memory.md: the prediction is within 10% of the measured peak
MARGIN = 1.2  # on a measured cost
# Prior cost of a piece of work, seconds per image of its batch, until one has run.
PRIOR_S = {
    'cuda': {
        'environment': 20.0, 'correctness': 5.0, 'dist': 90.0, 'memory:ViT-B': 8.0, 'memory:ViT-H': 15.0,
        'speed:ViT-B': 5.0, 'speed:ViT-H': 10.0, 'speed:Hiera-B+': 5.0,
    },
    'tiny': {
        'environment': 2.0, 'correctness': 1.5, 'dist': 15.0, 'memory:small SAM': 1.0,
        'speed:small SAM': 1.0, 'speed:mini Hiera': 0.5,
    },
}  # fmt: skip
CPU_SLOWDOWN = 200.0  # full-size models on a CPU: the CUDA priors times this
# SDPA's backends, by the aten operator each runs (its backward adds ``_backward``).
SDPA_KERNELS = {
    '_scaled_dot_product_flash_attention': 'flash',
    '_scaled_dot_product_flash_attention_for_cpu': 'flash (CPU)',
    '_scaled_dot_product_efficient_attention': 'memory-efficient',
    '_scaled_dot_product_cudnn_attention': 'cuDNN',
    '_scaled_dot_product_fused_attention_overrideable': 'fused (overrideable)',
    '_scaled_dot_product_attention_math': 'math',
}


# ----------------------------------------------------------------------------- budget
class Budget:
    """What is left of a wall-time budget.

    Args:
        total_s: the budget, seconds from construction.
        clock: a monotonic clock in seconds.
    """

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if total_s <= 0:
            raise ValueError(f'the budget must be positive, got {total_s!r} s')
        self.total_s = total_s
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()


class CostModel:
    """Estimated seconds of a piece of work: a prior per kind, then what pieces of the kind took.

    Args:
        priors: seconds per unit (image of the batch) of each kind of work.
        default_s: the prior of a kind missing from ``priors``.
    """

    def __init__(self, priors: Mapping[str, float], default_s: float = 10.0) -> None:
        self.priors = dict(priors)
        self.default_s = default_s
        self.measured: dict[str, list[float]] = {}  # seconds per unit of each piece that ran

    def estimate(self, kind: str, units: float = 1.0) -> float:
        """The mean measured seconds per unit of ``kind`` times ``units`` times :data:`MARGIN`, else the prior."""
        if kind in self.measured:
            return statistics.fmean(self.measured[kind]) * units * MARGIN
        return self.priors.get(kind, self.default_s) * units

    def observe(self, kind: str, seconds: float, units: float = 1.0) -> None:
        self.measured.setdefault(kind, []).append(seconds / units)


@dataclass
class Setup:
    """What a run measures, resolved from the command line.

    Attributes:
        device: where models run.
        tiny: the demo's small models at :data:`TINY_IMG` instead of SAM's sizes.
        img_size: the input side of the memory, speed and attention sections.
        archs: label -> SAMViT arch of the grids.
        sam2: (label, SAM2Hiera arch) of the speed section's SAM 2 rows.
        batches: the grids' batch sizes.
        warmup, repeat: the speed section's untimed and timed steps.
        work_dir: generated configs, data and training runs.
    """

    device: torch.device
    tiny: bool
    img_size: int
    archs: dict[str, Any]
    sam2: tuple[str, Any]
    batches: tuple[int, ...]
    warmup: int
    repeat: int
    work_dir: Path

    def method(self, name: str) -> Mapping[str, Any]:
        """SAMViT arguments of a preset at this run's size (its ``tiny`` settings with ``--tiny``)."""
        item = preset(name)
        return item.tiny if self.tiny else item.backbone


@dataclass
class Run:
    """What every section gets: the setup, the budget, the cost model, and the time kept for later sections.

    Attributes:
        reserve_s: seconds the running section leaves to the sections after it (the
            estimated first piece of work of each that can still fit), so that a long grid
            is trimmed rather than a later section skipped.
    """

    setup: Setup
    budget: Budget
    costs: CostModel
    reserve_s: float = 0.0

    def skip_reason(self, kind: str, units: float = 1.0) -> str | None:
        """None when a piece of work of ``kind`` fits what is left of the budget, else why it is skipped."""
        estimate, left = self.costs.estimate(kind, units), self.budget.remaining()
        if estimate <= left - self.reserve_s:
            return None
        kept = (
            f', {self.reserve_s:.0f} s of it kept for the sections after this one' if self.reserve_s else ''
        )
        return f'skipped: needs ~{estimate:.0f} s (estimated), {max(left, 0):.0f} s of the budget left{kept}'

    @contextlib.contextmanager
    def timing(self, kind: str, units: float = 1.0) -> Iterator[None]:
        """Record how long the work inside took, for the next estimate of ``kind``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.costs.observe(kind, time.perf_counter() - start, units)


@dataclass
class Section:
    """The outcome of one section: rows (measured, skipped or failed), checks, and facts."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str = '') -> bool:
        self.checks.append(dict(name=name, ok=bool(ok), detail=detail))
        return bool(ok)

    def row(self, run: Run, kind: str, units: float, key: dict[str, Any], fn: Callable[[], dict]) -> None:
        """Add the row ``key`` measured by ``fn`` if it fits the budget; a row that raises fails its check."""
        reason = run.skip_reason(kind, units)
        if reason:
            self.rows.append(dict(key, skipped=reason))
            return
        try:
            with run.timing(kind, units):
                self.rows.append(dict(key, **fn()))
        except Exception as err:  # e.g. out of memory: the row fails, the section goes on
            self.rows.append(dict(key, error=f'{type(err).__name__}: {err}'))
            self.check(f'{row_name(key)} ran', False, f'{type(err).__name__}: {err}')
        finally:
            release_memory()


def row_name(key: Mapping[str, Any]) -> str:
    return ', '.join(f'{k}={v}' for k, v in key.items())


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def autocast(device: torch.device, amp: str | None) -> torch.autocast:
    dtype = em.AMP_DTYPES[amp or 'none']
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


# ------------------------------------------------------------------ 1. environment
def sdpa_kernels(names: set[str]) -> str:
    """The SDPA backends among profiled operator names (forward or ``_backward``), or ``'-'``."""
    found = {
        SDPA_KERNELS[op]
        for name in names
        if (op := name.removeprefix('aten::').removesuffix('_backward')) in SDPA_KERNELS
    }
    return ', '.join(sorted(found)) or '-'


def profiled_ops(fn: Callable[[], Any]) -> tuple[Any, set[str]]:
    """``fn()`` and the names of the operators it ran."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    return result, {event.name for event in prof.events()}


def rel_diff(a: Tensor, b: Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def attention_rows(setup: Setup, label: str, arch: Any, amp: str) -> list[dict[str, Any]]:
    """Kernels and fused-vs-eager parity of a windowed and a global SAM block in ``amp``.

    The blocks are the first two of ``arch`` with block 1 made global, with LoRA (so that
    training runs the folded form, as in a PEFT step), every parameter perturbed (the
    zero-initialised relative-position tables and LoRA would hide a difference); the eager
    twin runs segment_anything's attention on the same weights.
    """
    device, img = setup.device, setup.img_size
    with torch.device('meta'):
        settings = dict(SAMViT(arch=arch, img_size=img).arch_settings)
    two = dict(settings, num_layers=2, global_attn_indexes=(1,))
    peft = setup.method(bm.LORA)['peft']
    torch.manual_seed(0)
    with torch.device(device):
        fused = SAMViT(arch=two, img_size=img, peft=peft).train()
        eager = SAMViT(arch=two, img_size=img, peft=peft, attn_impl='eager').train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p))
    eager.load_state_dict(fused.state_dict())
    grid = img // settings['patch_size']
    x = torch.randn(1, grid, grid, settings['embed_dims'], generator=gen).to(device)
    upstream = torch.randn(x.shape, generator=gen).to(device)
    rows = []
    for index, kind in ((0, 'windowed'), (1, 'global')):

        def step(block: nn.Module, dtype: str | None) -> tuple[Tensor, Tensor, set[str], set[str]]:
            inp = x.clone().requires_grad_(True)
            with autocast(device, dtype):
                out, fwd_ops = profiled_ops(lambda: block(inp))
            _, bwd_ops = profiled_ops(lambda: (out.float() * upstream).sum().backward())
            return out.detach().float(), inp.grad.float(), fwd_ops, bwd_ops

        out_ref, grad_ref, _, _ = step(eager.blocks[index], None)
        out_eager, grad_eager, _, _ = step(eager.blocks[index], amp)
        out_fused, grad_fused, fwd_ops, bwd_ops = step(fused.blocks[index], amp)
        fused.eval()
        with torch.no_grad(), autocast(device, amp):
            _, infer_ops = profiled_ops(lambda i=index: fused.blocks[i](x))
        fused.train()
        diffs = dict(output=rel_diff(out_fused, out_eager), input_grad=rel_diff(grad_fused, grad_eager))
        rows.append(
            dict(
                arch=label,
                amp=amp,
                block=kind,
                tokens=grid * grid,
                attn_impl_training=fused.blocks[index].attn.grad_impl or fused.blocks[index].attn.attn_impl,
                training_forward=sdpa_kernels(fwd_ops),
                training_backward=sdpa_kernels(bwd_ops),
                inference=sdpa_kernels(infer_ops),
                fused_vs_eager=diffs,
                eager_vs_fp32=dict(
                    output=rel_diff(out_eager, out_ref), input_grad=rel_diff(grad_eager, grad_ref)
                ),
                fused_vs_fp32=dict(
                    output=rel_diff(out_fused, out_ref), input_grad=rel_diff(grad_fused, grad_ref)
                ),
                tolerance=PARITY_TOL[amp],
                ok=max(diffs.values()) <= PARITY_TOL[amp],
            )
        )
    return rows


def section_environment(run: Run) -> Section:
    """Device, versions, SDPA kernels and fused-vs-eager parity."""
    setup, section = run.setup, Section()
    device = setup.device
    info = dict(
        device_type=device.type,
        torch=torch.__version__,
        python=platform.python_version(),
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cpu=bm.describe_machine({}),
        threads=torch.get_num_threads(),
    )
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(
            device=props.name,
            memory_gib=props.total_memory / 2**30,
            capability=f'{props.major}.{props.minor}',
            flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
            mem_efficient_sdp_enabled=torch.backends.cuda.mem_efficient_sdp_enabled(),
            cudnn_sdp_enabled=torch.backends.cuda.cudnn_sdp_enabled(),
        )
    else:
        info.update(device=info['cpu'], memory_gib=None)
    section.info.update(info)
    for label, arch in setup.archs.items():
        for amp in TRAIN_AMPS:
            key = dict(arch=label, amp=amp)
            reason = run.skip_reason('environment')
            if reason:
                section.rows.append(dict(key, block='windowed and global', skipped=reason))
                continue
            with run.timing('environment'):
                rows = attention_rows(setup, label, arch, amp)
            release_memory()
            for row in rows:
                section.rows.append(row)
                section.check(
                    f'{label} {row["block"]} block, {amp}: fused attention matches eager',
                    row['ok'],
                    f'max rel. diff {max(row["fused_vs_eager"].values()):.2e} (tolerance {row["tolerance"]:g})',
                )
    return section


# ------------------------------------------------------------------ 2. correctness
def load_train_main() -> Callable[[list[str]], None]:
    """``tools/train.py``'s ``main``, imported from its file."""
    spec = importlib.util.spec_from_file_location('gpu_report_train_tool', REPO / 'tools/train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def write_train_config(
    path: Path, data_root: Path, backbone: Mapping[str, Any], load_from: Path | None
) -> Path:
    """A one-iteration config over the demo config: ``backbone`` at 32x32, no validation, a full checkpoint."""
    path.write_text(f"""
_base_ = [{str(DEMO_CONFIG)!r}]
data_root = {str(data_root)!r}
load_from = {str(load_from) if load_from else None!r}
model = dict(data_preprocessor=dict(size=({TINY_IMG}, {TINY_IMG})), backbone=dict(_delete_=True, **{dict(backbone)!r}))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=({TINY_IMG}, {TINY_IMG}), keep_ratio=False), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline, serialize_data=False))
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
train_cfg = dict(max_iters=1)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
""")
    return path


def demo_backbone(item: PEFTPreset) -> dict[str, Any]:
    """The demo's small SAMViT at 32x32 with the preset's ``tiny`` method."""
    backbone = Config.fromfile(str(DEMO_CONFIG)).model.backbone.to_dict()
    backbone.pop('peft', None)
    return {**backbone, 'img_size': TINY_IMG, 'frozen': True, **copy.deepcopy(dict(item.tiny))}


def logged_loss(log: str) -> float | None:
    """The ``loss`` of the last training iteration a log printed, or None."""
    values = re.findall(r'Iter\(train\).*?\sloss: (\S+)', log)
    return float(values[-1]) if values else None


def start_weights(item: PEFTPreset, data_root: Path, work: Path) -> dict[str, Any]:
    """The preset's model, saved as the iterations' ``load_from``; its values and which parameters may change.

    Zero-initialised trainable tensors (LoRA's B) are perturbed first, so that every
    trainable tensor before them gets a gradient too.
    """
    work.mkdir(parents=True, exist_ok=True)
    generate_synthetic_dataset(data_root, num_train=2, num_val=1, img_size=TINY_IMG)  # once: then a no-op
    config = write_train_config(work / 'gpu_report_start.py', data_root, demo_backbone(item), None)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.add_(0.05 * torch.randn_like(p))
    path = work / 'start.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return dict(
        path=path,
        values={n: p.detach().clone() for n, p in model.named_parameters()},
        trainable=trainable,
        method={n for n in trainable if n.startswith('backbone.')},
    )


def train_one_iteration(
    train_main: Callable[[list[str]], None],
    item: PEFTPreset,
    amp: str,
    start: Mapping[str, Any],
    data_root: Path,
    work: Path,
) -> dict[str, Any]:
    """One ``tools/train.py --amp`` iteration of ``item`` from ``start`` (in this process): its loss, what changed."""
    work.mkdir(parents=True, exist_ok=True)
    name = f'gpu_report_{bm.slug(item.name)}_{amp}'  # the Runner's experiment name: one per run
    config = write_train_config(work / f'{name}.py', data_root, demo_backbone(item), start['path'])
    log = io.StringIO()  # the Runner's logger writes to the stdout it finds
    argv = [
        str(config),
        '--work-dir',
        str(work),
        '--amp',
        '--cfg-options',
        f'optim_wrapper.dtype={TRAIN_AMPS[amp]}',
    ]
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train_main(argv)
    (work / 'train.log').write_text(log.getvalue())
    after = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=True)['state_dict']
    changed = {n for n, value in start['values'].items() if not torch.equal(after[n].cpu(), value.cpu())}
    trainable, method = start['trainable'], start['method']
    loss = logged_loss(log.getvalue())
    return dict(
        loss=loss,
        finite_loss=loss is not None and math.isfinite(loss),
        changed=len(changed),
        trainable=len(trainable),
        method_changed=len(changed & method),
        method_params=len(method),
        frozen_changed=sorted(changed - trainable)[:5],
        # only trainable tensors changed; the method's among them (none for decoder-only)
        params_ok=changed <= trainable and bool(changed & method) == bool(method),
    )


def section_correctness(run: Run) -> Section:
    """One ``tools/train.py --amp`` iteration of every preset, in bf16 and then in fp16."""
    section = Section()
    root = run.setup.work_dir / 'correctness'
    data = run.setup.work_dir / 'data'
    train_main = load_train_main()
    starts: dict[str, dict[str, Any]] = {}
    for amp in TRAIN_AMPS:
        for item in PRESETS:

            def iteration(item: PEFTPreset = item, amp: str = amp) -> dict[str, Any]:
                work = root / bm.slug(item.name)
                if item.name not in starts:
                    starts[item.name] = start_weights(item, data, work)
                return train_one_iteration(train_main, item, amp, starts[item.name], data, work / amp)

            section.row(run, 'correctness', 1, dict(preset=item.name, amp=amp), iteration)
            row = section.rows[-1]
            if 'skipped' in row or 'error' in row:
                continue
            section.check(f'{item.name}, {amp}: finite loss', row['finite_loss'], f'loss {row["loss"]}')
            section.check(
                f"{item.name}, {amp}: only trainable parameters changed, the method's among them",
                row['params_ok'],
                f'{row["changed"]} changed of {row["trainable"]} trainable; method {row["method_changed"]} of '
                f'{row["method_params"]}; frozen ones changed: {row["frozen_changed"] or "none"}',
            )
    return section


# ------------------------------------------------------------------------- 3. dist
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_dist_train(config: Path, work: Path, timeout_s: float) -> dict[str, Any]:
    """``tools/dist_train.sh CONFIG 1 --amp`` (bf16) in its own process group; its log, loss and backend."""
    env = {
        k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')
    }
    env.update(PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    cmd = [str(REPO / 'tools/dist_train.sh'), str(config), '1', '--work-dir', str(work), '--amp']
    cmd += ['--cfg-options', f'optim_wrapper.dtype={TRAIN_AMPS[AMP]}']
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=timeout_s)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its worker
        log, _ = proc.communicate()
        returncode = None
    (work / 'dist_train.log').write_text(log)
    backend = re.search(r"dist_cfg: \{[^}]*'backend': '(\w+)'", log)
    return dict(
        command=shlex.join(['tools/dist_train.sh', *cmd[1:]]),
        returncode=returncode,
        timed_out=returncode is None,
        distributed='Distributed training: True' in log,
        backend=backend.group(1) if backend else None,
        loss=logged_loss(log),
        checkpoint=(work / 'iter_1.pth').is_file(),
        log_tail=log[-3000:] if returncode != 0 else '',
    )


def section_dist(run: Run) -> Section:
    """The launcher path: ``tools/dist_train.sh`` with one process, NCCL on CUDA, gloo on a CPU."""
    section = Section()
    work = run.setup.work_dir / 'dist'
    work.mkdir(parents=True, exist_ok=True)
    data = run.setup.work_dir / 'data'
    expected = 'nccl' if run.setup.device.type == 'cuda' else 'gloo'
    release_memory()

    def launch() -> dict[str, Any]:
        generate_synthetic_dataset(data, num_train=2, num_val=1, img_size=TINY_IMG)
        config = write_train_config(work / 'gpu_report_dist.py', data, demo_backbone(preset(bm.LORA)), None)
        return run_dist_train(config, work, timeout_s=max(run.budget.remaining(), 1.0))

    section.row(run, 'dist', 1, dict(launcher='tools/dist_train.sh', processes=1), launch)
    row = section.rows[-1]
    if 'skipped' not in row and 'error' not in row:
        section.check(
            'tools/dist_train.sh exited 0', row['returncode'] == 0, f'exit status {row["returncode"]}'
        )
        section.check(
            f'distributed with {expected}',
            row['distributed'] and row['backend'] == expected,
            f'backend {row["backend"]}',
        )
        finite = row['loss'] is not None and math.isfinite(row['loss'])
        section.check('finite loss, checkpoint written', finite and row['checkpoint'], f'loss {row["loss"]}')
    return section


# ----------------------------------------------------------------------- 4. memory
def segmentor_cfg(setup: Setup, arch: Any, method: str) -> dict[str, Any]:
    """The binary segmentor's model config with ``arch`` and the preset ``method`` at the run's size."""
    if setup.tiny:
        cfg = em.load_config(DEMO_CONFIG)
    else:
        cfg = em.load_config(MODEL_CONFIG, {'model.backbone.arch': arch})
    model = em.model_cfg_for_estimate(cfg, setup.img_size, method)
    model['backbone'].update(copy.deepcopy(dict(setup.method(method))))
    return model


def step_peak(model: nn.Module, batch: int, img_size: int, amp: str, device: torch.device, base: int) -> int:
    """Peak bytes of a steady-state training step (the second of two), as ``estimate_memory.py`` counts it.

    The step is the estimator's: its stand-in loss under autocast, backward, AdamW. On
    CUDA, ``max_memory_allocated`` minus ``base`` (allocated before the model was built);
    on a CPU, what the step's allocations reach above its start (the allocator's events)
    plus the weights, AdamW state and images alive at its start.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    images = torch.randn(batch, 3, img_size, img_size, device=device)

    def step() -> None:
        with autocast(device, amp):
            loss = em.stand_in_loss(model, images)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # AdamW's state exists from here on, as in the estimate
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor)]
    alive = em.storage_bytes(list(model.parameters()) + list(model.buffers()) + state + [images])
    _, _, peak = em._allocated(step)
    return alive + peak


def section_memory(run: Run) -> Section:
    """Measured peak of a training step next to ``estimate_memory.py``'s prediction, over the grid."""
    setup, section = run.setup, Section()
    device = setup.device
    section.info['measure'] = (
        'torch.cuda.max_memory_allocated of the second training step'
        if device.type == 'cuda'
        else 'CPU allocator events (torch.profiler) of the second training step: a CPU figure, not a GPU one'
    )
    for label, arch in setup.archs.items():
        for method in METHODS:
            model_cfg = segmentor_cfg(setup, arch, method)
            built: dict[str, Any] = {}

            def measure(batch: int, with_cp: Any, model_cfg: dict = model_cfg, built: dict = built) -> dict:
                if not built:
                    with torch.device('meta'):
                        built['meta'] = em.build_model(model_cfg)
                    built['base'] = torch.cuda.memory_allocated(device) if device.type == 'cuda' else 0
                    with torch.device(device):
                        built['model'] = em.build_model(model_cfg)
                built['meta'].backbone.with_cp = with_cp
                built['model'].backbone.with_cp = with_cp
                predicted = em.estimate(None, batch, setup.img_size, AMP, meta_model=built['meta']).peak
                measured = step_peak(built['model'], batch, setup.img_size, AMP, device, built['base'])
                ratio = measured / predicted
                return dict(
                    measured_mib=measured / em.MIB,
                    predicted_mib=predicted / em.MIB,
                    ratio=ratio,
                    within_claim=abs(ratio - 1) <= MEMORY_CLAIM,
                )

            for batch in setup.batches:
                for with_cp in WITH_CP_LEVELS:
                    key = dict(arch=label, method=method, batch=batch, with_cp=with_cp)
                    section.row(
                        run, f'memory:{label}', batch, key, lambda b=batch, cp=with_cp: measure(b, cp)
                    )
            built.clear()
            release_memory()
    done = [r for r in section.rows if 'ratio' in r]
    section.info['within_claim'] = f'{sum(r["within_claim"] for r in done)} of {len(done)} rows within 10%'
    return section


# ------------------------------------------------------------------------ 5. speed
def speed_rows(setup: Setup) -> list[tuple[str, Any, bm.Row, dict[str, Any]]]:
    """(encoder label, SAMViT arch, benchmark row, backbone options) of the speed grid, in the order they run.

    Per SAM size: segment_anything's encoder with the same LoRA, then LoRA and Conv-LoRA
    at each ``with_cp`` level; then SAM 2.1's Hiera with LoRA and Conv-LoRA.
    """
    lora_peft = setup.method(bm.LORA)['peft']
    rows = []
    for label, arch in setup.archs.items():
        reference = bm.Row(
            'sam-encoder-lora', f'segment_anything encoder + {bm.LORA}', 'reference', dict(peft=lora_peft)
        )
        rows.append((label, arch, reference, {}))
        for method in METHODS:
            for with_cp in WITH_CP_LEVELS:
                row = bm.Row(bm.slug(method), method, 'samvit', dict(setup.method(method)))
                rows.append((label, arch, row, dict(with_cp=with_cp)))
    sam2_label, first_arch = setup.sam2[0], next(iter(setup.archs.values()))
    for method in METHODS:
        row = bm.Row(bm.SAM2_PREFIX + bm.slug(method), method, 'sam2hiera', dict(setup.method(method)))
        rows.append((sam2_label, first_arch, row, {}))
    return rows


def speed_row(setup: Setup, arch: Any, row: bm.Row, options: dict[str, Any], batch: int) -> dict[str, Any]:
    """``benchmark.py``'s measurement of ``row`` in this process, the model built on the device."""
    with torch.device('meta'):
        settings = dict(SAMViT(arch=arch, img_size=setup.img_size).arch_settings)
    opts = dict(
        arch=arch, arch_settings=settings, img_size=setup.img_size, batch=batch, device=str(setup.device),
        amp=AMP, warmup=setup.warmup, repeat=setup.repeat, threads=None, backbone_options=options,
        sam2_arch=setup.sam2[1], sam2_options={},
    )  # fmt: skip
    with torch.device(setup.device):
        result = bm.measure(row, opts)
    steps = result['step_ms_all']
    median = statistics.median(steps)
    return dict(
        kind=row.kind,
        trainable=result['trainable'],
        step_ms=median,
        step_ms_min=min(steps),
        step_ms_max=max(steps),
        steps=len(steps),
        images_per_s=batch * 1000 / median,
        forward_ms=result['forward_ms'],
        peak_mib=result['peak_mem_mib'] if setup.device.type == 'cuda' else None,
    )


def section_speed(run: Run) -> Section:
    """Training-step time and images/s (``benchmark.py``'s measurement) over the grid, with the references."""
    setup, section = run.setup, Section()
    section.info['timing'] = (
        f'encoder step (forward + backward + AdamW), {AMP} autocast; median and range of {setup.repeat} steps '
        f'after {setup.warmup} warm-up'
    )
    cuda = setup.device.type == 'cuda'
    section.info['memory'] = 'CUDA max allocated of the encoder step' if cuda else 'not measured on a CPU'
    for batch in setup.batches:
        for label, arch, row, options in speed_rows(setup):
            key = dict(encoder=label, method=row.name, batch=batch, with_cp=options.get('with_cp', False))
            section.row(
                run, f'speed:{label}', batch, key,
                lambda arch=arch, row=row, options=options, batch=batch: speed_row(setup, arch, row, options, batch),
            )  # fmt: skip
    measured = [r for r in section.rows if 'step_ms' in r]
    for r in measured:  # each SAMViT row against segment_anything + LoRA at its size and batch
        refs = [
            x
            for x in measured
            if x['kind'] == 'reference' and (x['encoder'], x['batch']) == (r['encoder'], r['batch'])
        ]
        if r['kind'] == 'samvit' and refs:
            r['step_over_reference'] = r['step_ms'] / refs[0]['step_ms']
    return section


SECTION_FUNCS: dict[str, Callable[[Run], Section]] = dict(
    environment=section_environment,
    correctness=section_correctness,
    dist=section_dist,
    memory=section_memory,
    speed=section_speed,
)


# -------------------------------------------------------------------------- report
def section_result(section: Section) -> dict[str, Any]:
    """A section's JSON: its status (measured, partial, skipped) with the reason, rows, checks and facts."""
    skipped = [r for r in section.rows if 'skipped' in r]
    if section.rows and len(skipped) == len(section.rows):
        status, reason = 'skipped', skipped[0]['skipped']
    elif skipped:
        status, reason = (
            'partial',
            f'{len(skipped)} of {len(section.rows)} rows skipped: {skipped[0]["skipped"]}',
        )
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
              'frozen tensors changed', 'ok']  # fmt: skip
    return _table(header, ['preset', 'amp'], result['rows'], lambda r: [
        _fmt(r['loss'], '.4f'), _fmt(r['finite_loss']), f'{r["changed"]} / {r["trainable"]}',
        f'{r["method_changed"]} of {r["method_params"]}', ', '.join(r['frozen_changed']) or 'none',
        _fmt(r['finite_loss'] and r['params_ok']),
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
        elif result['status'] == 'partial':
            lines += [f'partial: {result["reason"]}', '']
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
    """Seconds to keep for the sections ``later``: the first piece of each that can still fit."""
    left = run.budget.remaining()
    estimates = [run.costs.estimate(*first_unit(name, run.setup)) for name in later]
    return sum(e for e in estimates if e <= left)


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
