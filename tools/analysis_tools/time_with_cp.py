"""Training-step time of SAM's encoder at each ``with_cp`` level, against its frozen forward, in one run.

One process builds one SAMViT per level (same weights, the preset's PEFT method) and a
frozen one without PEFT, then times, in each of ``--repeat`` rounds (after ``--warmup``
rounds), the frozen forward (eval, no grad) and one training step per level (forward +
backward + AdamW on the trainable parameters, ``mean(encoder output)`` plus the PEFT
auxiliary losses as the loss). The order of the levels rotates from round to round so that
a drift of the machine hits them alike. Ratios are computed per round and reported as
median [min, max] over the rounds, wall clock and process CPU time:

    python tools/analysis_tools/time_with_cp.py --arch vit_b --img-size 1024 --repeat 3

``--levels`` times only the levels named (``False selective True``; the ratios against
``with_cp=False`` need it among them), e.g. ``--levels False --threads 1`` for the step
against the frozen forward alone, as ``benchmark.py --threads 1`` measures it.

``--profile N`` then runs one more step without recomputation under ``torch.profiler``
and prints its N operators with the most self CPU time (where the step's time goes).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable

import torch
from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules

import mmseg_sam  # noqa: F401
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.backbones.sam_vit import WITH_CP_LEVELS
from mmseg_sam.models.peft import collect_aux_losses
from mmseg_sam.models.peft.presets import preset


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall and process CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def spread(values: list[float]) -> str:
    return f'{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--arch', default='vit_b', choices=('vit_b', 'vit_l', 'vit_h'))
    parser.add_argument('--img-size', type=int, default=1024)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--preset', default='lora-qv-r4', help='a preset key of mmseg_sam.models.peft.presets'
    )
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--levels',
        nargs='+',
        default=[str(level) for level in WITH_CP_LEVELS],
        metavar='LEVEL',
        help='the with_cp levels to time: False, selective, True (default: all)',
    )
    parser.add_argument(
        '--profile', type=int, default=0, metavar='N', help='print the N costliest operators of one step'
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error(f'--repeat must be >= 1 and --warmup >= 0, got {args.repeat} and {args.warmup}')
    if args.profile < 0:
        parser.error(f'--profile must be >= 0 (operators to list), got {args.profile}')
    by_name = {str(level): level for level in WITH_CP_LEVELS} | {
        repr(level): level for level in WITH_CP_LEVELS
    }
    unknown = [name for name in args.levels if name not in by_name]
    if unknown:
        parser.error(f'--levels must be among False, selective, True; got {" ".join(unknown)}')
    levels = list(dict.fromkeys(by_name[name] for name in args.levels))
    if args.threads:
        torch.set_num_threads(args.threads)
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    backbone = dict(preset(args.preset).backbone)
    torch.manual_seed(0)
    frozen = SAMViT(arch=args.arch, img_size=args.img_size).eval()
    models = {}
    # --profile runs a step without recomputation, timed or not
    for level in levels + ([False] if args.profile and False not in levels else []):
        torch.manual_seed(0)
        model = SAMViT(arch=args.arch, img_size=args.img_size, with_cp=level, **backbone).train()
        loaded = model.load_state_dict(frozen.state_dict(), strict=False)  # same weights in every model
        # every key the two share is loaded; the rest are the method's own
        assert set(loaded.missing_keys) == set(model.state_dict()) - set(frozen.state_dict()), loaded
        models[level] = model
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    optimizers = {
        level: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
        for level, m in models.items()
    }

    def forward() -> None:
        with torch.no_grad():
            frozen(x)

    def step(level: object) -> Callable[[], None]:
        def run() -> None:
            with collect_aux_losses() as aux:
                outs = models[level](x)
            loss = sum(o.mean() for o in outs) + sum(aux.values())
            loss.backward()
            optimizers[level].step()
            optimizers[level].zero_grad(set_to_none=True)

        return run

    rounds: list[dict[str, tuple[float, float]]] = []
    for i in range(args.warmup + args.repeat):
        order = levels[i % len(levels) :] + levels[: i % len(levels)]
        times = {'forward': timed(forward)}
        for level in order:
            times[repr(level)] = timed(step(level))
        print(f'round {i} ({"warm-up" if i < args.warmup else "timed"}): '
              + ', '.join(f'{k} {w:.1f} s wall / {c:.1f} s CPU' for k, (w, c) in times.items()),
              file=sys.stderr, flush=True)  # fmt: skip
        if i >= args.warmup:
            rounds.append(times)
    print(f'{args.arch}, {args.img_size}x{args.img_size}, batch {args.batch}, {args.preset}, '
          f'{len(rounds)} timed rounds after {args.warmup} warm-up; torch threads {torch.get_num_threads()}')  # fmt: skip
    print()
    print('| ratio | wall: median [min, max] | CPU time: median [min, max] |')
    print('| --- | ---: | ---: |')
    pairs = [(f'step with_cp={lv!r} / frozen forward', repr(lv), 'forward') for lv in levels]
    if False in levels:
        pairs += [
            (f'step with_cp={lv!r} / step with_cp=False', repr(lv), 'False')
            for lv in levels
            if lv is not False
        ]
    for name, num, den in pairs:
        cells = [spread([r[num][k] / r[den][k] for r in rounds]) for k in (0, 1)]
        print(f'| {name} | {cells[0]} | {cells[1]} |')
    print()
    print('| timed | wall s: median [min, max] |')
    print('| --- | ---: |')
    for key in rounds[0]:
        print(f'| {key} | {spread([r[key][0] for r in rounds])} |')
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(False)()
        print()
        print(f'One step with_cp=False, the {args.profile} operators with the most self CPU time:')
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=args.profile))
    return 0


if __name__ == '__main__':
    sys.exit(main())
