"""Plot training curves (losses, learning rate, validation metrics) of a work dir.

Usage::

    python tools/analysis_tools/plot_curves.py WORK_DIR [--run TIMESTAMP] [--out curves.png]
        [--keys 'loss*' mIoU ...]

Reads the scalars MMEngine's ``LocalVisBackend`` logs to
``WORK_DIR/<timestamp>/vis_data/scalars.json`` (the newest run unless ``--run``;
WORK_DIR may also be a run folder or the scalars.json itself) and draws, against
the training iteration:

- losses: every key whose last dotted part starts with ``loss`` (``loss``,
  ``decode.loss_ce``, Conv-LoRA's ``loss_moe``, ...);
- the learning rate (``lr``);
- validation metrics: the keys of the records logged at validation (``mIoU``,
  ``mDice``, ``aAcc``, per-class ``IoU.*``, ...).

``--keys`` plots only the keys matching the given names or shell patterns (any
logged key, e.g. ``grad_norm``); keys that are neither losses, learning rates nor
validation metrics get an ``other`` panel. The PNG goes to ``--out`` (default
``<run folder>/curves.png``).
"""

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SCALARS = Path('vis_data/scalars.json')
# Bookkeeping, not curves.
_SKIPPED = {'iter', 'step', 'epoch', 'time', 'data_time', 'memory', 'base_lr'}
PANELS = ('loss', 'lr', 'val', 'other')
_TITLES = {'loss': 'losses', 'lr': 'learning rate', 'val': 'validation', 'other': 'other'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('work_dir', help='work dir, run folder or scalars.json')
    parser.add_argument('--run', help='run folder name (timestamp) inside WORK_DIR (default: the newest)')
    parser.add_argument('--out', help='PNG to write (default: <run folder>/curves.png)')
    parser.add_argument('--keys', nargs='+', help='keys or shell patterns to plot (default: losses, lr, val)')
    return parser.parse_args(argv)


def find_scalars(work_dir: str | Path, run: str | None = None) -> Path:
    """The scalars.json of a run.

    Raises:
        FileNotFoundError: no such path, no logged run, or no run named ``run``
            (the message lists the runs there are).
    """
    work_dir = Path(work_dir)
    if work_dir.is_file():
        return work_dir
    if not work_dir.is_dir():
        raise FileNotFoundError(f'work dir not found: {work_dir}')
    if run is None and (work_dir / SCALARS).is_file():
        return work_dir / SCALARS
    runs = sorted(p.parent.parent.name for p in work_dir.glob(f'*/{SCALARS}'))
    if not runs:
        raise FileNotFoundError(
            f'no <run>/{SCALARS} under {work_dir}: was it trained with '
            "vis_backends=[dict(type='LocalVisBackend')] and has it logged anything yet?"
        )
    if run is None:
        run = runs[-1]  # timestamps (YYYYMMDD_HHMMSS) sort by time
    elif run not in runs:
        raise FileNotFoundError(f'no run {run!r} with {SCALARS} in {work_dir}; runs: {runs}')
    return work_dir / run / SCALARS


def read_scalars(path: str | Path) -> list[dict[str, float]]:
    """One dict per logged line (numeric values only).

    Raises:
        ValueError: a line is not a JSON object (names the file and line), or the
            file holds no record.
    """
    records = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}:{lineno}: not JSON ({err.msg}): {line[:80]!r}') from err
        if not isinstance(record, dict):
            raise ValueError(f'{path}:{lineno}: expected a JSON object, got {type(record).__name__}')
        records.append(
            {
                k: float(v)
                for k, v in record.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
    if not records:
        raise ValueError(f'{path} holds no logged scalars')
    return records


def is_train_record(record: dict[str, float]) -> bool:
    """Training lines carry ``iter``; validation lines only the ``step`` they were run at."""
    return 'iter' in record


def _x(record: dict[str, float]) -> float:
    return record.get('iter', record.get('step', 0.0))


def classify(key: str, train_keys: set[str], val_keys: set[str]) -> str:
    """The panel of a key: ``'loss'``, ``'lr'``, ``'val'`` or ``'other'``."""
    last = key.rsplit('.', 1)[-1]
    if last.startswith('loss') and key in train_keys:
        return 'loss'
    if last == 'lr':
        return 'lr'
    if key in val_keys and key not in train_keys:
        return 'val'
    return 'other'


def select_panels(
    records: Sequence[dict[str, float]], patterns: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Which keys go to which panel.

    Args:
        records: from :func:`read_scalars`.
        patterns: keys or shell patterns; None: losses, lr and validation metrics.

    Returns:
        dict[str, list[str]]: non-empty panels, in :data:`PANELS` order.

    Raises:
        ValueError: a pattern matches no key, or there is nothing to plot (both list
            the logged keys).
    """
    train_keys = {k for r in records if is_train_record(r) for k in r}
    val_keys = {k for r in records if not is_train_record(r) for k in r}
    logged = sorted((train_keys | val_keys) - {'iter', 'step', 'epoch'})
    if patterns is None:
        keys = [k for k in logged if k not in _SKIPPED and classify(k, train_keys, val_keys) != 'other']
    else:
        keys = []
        for pattern in patterns:
            matched = [k for k in logged if fnmatchcase(k, pattern)]
            if not matched:
                raise ValueError(f'--keys {pattern!r} matches no logged key; logged: {logged}')
            keys += [k for k in matched if k not in keys]
    if not keys:
        raise ValueError(f'nothing to plot: no loss, lr or validation metric among the logged keys {logged}')
    panels: dict[str, list[str]] = {name: [] for name in PANELS}
    for key in keys:
        panels[classify(key, train_keys, val_keys)].append(key)
    return {name: sorted(found) for name, found in panels.items() if found}


def plot_curves(records: Sequence[dict[str, float]], panels: dict[str, list[str]], title: str = '') -> Figure:
    """One panel per group, each key a line against the iteration.

    Validation metrics are drawn from validation records, everything else from
    training records (``--keys`` may name a key logged in both: both are drawn).
    """
    fig = Figure(figsize=(8, 2.6 * len(panels) + 0.6), dpi=100, layout='constrained')
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (panel, keys) in zip(axes, panels.items()):
        for key in keys:
            for train in (True, False):
                points = [(_x(r), r[key]) for r in records if key in r and is_train_record(r) == train]
                if not points:
                    continue
                xs, ys = zip(*points)
                marker = '' if train and len(points) > 1 else 'o'
                label = key if train or panel == 'val' else f'{key} (val)'
                ax.plot(xs, ys, marker=marker, markersize=4, label=label)
        values = [r[k] for k in keys for r in records if k in r]
        if panel == 'loss' and min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale('log')
        ax.set_title(_TITLES[panel], fontsize=10, loc='left')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc='best')
    axes[-1].set_xlabel('iteration')
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scalars = find_scalars(args.work_dir, args.run)
        records = read_scalars(scalars)
        panels = select_panels(records, args.keys)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    run_dir = scalars.parent.parent if scalars.parent.name == 'vis_data' else scalars.parent
    out = Path(args.out) if args.out else run_dir / 'curves.png'
    fig = plot_curves(records, panels, title=f'{run_dir.parent.name}/{run_dir.name}')
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(out))
    print(f'{", ".join(f"{p}: {k}" for p, k in panels.items())} -> {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
