"""What every section of ``gpu_report.py`` gets: the run's setup, its budget and cost model, and the section record.

The budget: before each piece of work (an attention probe, a preset's training
iteration, a grid row, the launcher run) its cost is estimated, and the piece is skipped,
with the reason recorded, when the estimate exceeds what is left of the budget minus what
is kept for the sections after the running one. An estimate is a prior for that kind of
work (seconds per image of the batch) until one piece of the kind has run, then the mean
measured seconds per image of the kind times :data:`MARGIN`, or the slowest measured if
that is more, times the images.
"""

import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchmark as bm
import estimate_memory as em
import torch

from mmseg_sam.models.peft.presets import preset

REPO = Path(__file__).resolve().parents[2]
# The demo's small models: the correctness section's model, and every model with --tiny.
DEMO_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
DEMO_SAM2_CONFIG = REPO / 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py'
TINY_IMG = 32  # also the correctness section's data and model size
METHODS = (bm.LORA, bm.CONV_LORA)  # the memory and speed grids' methods
AMP = 'bf16'  # the memory and speed grids, and the launcher run
TRAIN_AMPS = {'bf16': 'bfloat16', 'fp16': 'float16'}  # --amp of tools/train.py, per dtype
MARGIN = 1.2  # on a measured cost


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
        """Seconds for ``units`` of ``kind``: per unit, the prior until a piece of the kind ran, then the
        mean measured times :data:`MARGIN` or the slowest measured, whichever is more."""
        if kind in self.measured:
            per_unit = self.measured[kind]
            return max(statistics.fmean(per_unit) * MARGIN, max(per_unit)) * units
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
        """Backbone arguments of a preset: the papers' settings (the demo's small models take them too)."""
        return preset(name).backbone


@dataclass
class Run:
    """What every section gets: the setup, the budget, the cost model, and the time kept for later sections.

    Attributes:
        reserve_s: seconds the running section leaves to the sections after it (the
            estimated first piece of work of each that can still fit), so that a long grid
            is trimmed rather than a later section skipped.
        progress: called with the running section after each of its rows (the report
            writes its files then, so that a run that is stopped keeps its rows).
    """

    setup: Setup
    budget: Budget
    costs: CostModel
    reserve_s: float = 0.0
    progress: Callable[['Section'], None] | None = None

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

    def row(
        self, run: Run, kind: str, units: float, key: dict[str, Any], fn: Callable[[], dict | list[dict]]
    ) -> None:
        """Add the row ``key`` measured by ``fn`` if it fits the budget; a row that raises fails its check.

        ``fn`` returns the row's values, or a list of rows (each added with ``key`` under its own values).
        """
        reason = run.skip_reason(kind, units)
        if reason:
            self.rows.append(dict(key, skipped=reason))
        else:
            start = time.perf_counter()
            try:
                with run.timing(kind, units):
                    result = fn()
                self.rows += [dict(key, **r) for r in (result if isinstance(result, list) else [result])]
                reason = f'{time.perf_counter() - start:.1f} s'
            except Exception as err:  # e.g. out of memory: the row fails, the section goes on
                self.rows.append(dict(key, error=f'{type(err).__name__}: {err}'))
                self.check(f'{row_name(key)} ran', False, f'{type(err).__name__}: {err}')
                reason = f'FAILED: {type(err).__name__}: {err}'
            finally:
                release_memory()
        print(f'[{run.budget.elapsed():.0f} s]   {row_name(key)}: {reason}', file=sys.stderr, flush=True)
        if run.progress is not None:
            run.progress(self)


def row_name(key: Mapping[str, Any]) -> str:
    return ', '.join(f'{k}={v}' for k, v in key.items())


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def autocast(device: torch.device, amp: str | None) -> torch.autocast:
    dtype = em.AMP_DTYPES[amp or 'none']
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
