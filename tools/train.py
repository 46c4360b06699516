"""Train a segmentor (mmseg's tools/train.py CLI, with mmseg_sam registered)."""

import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.engine import setup_distributed, teardown_distributed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically',
    )
    parser.add_argument(
        '--amp', action='store_true', default=False, help='enable automatic-mixed-precision training'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs (e.g. model.sam_checkpoint=...)',
    )
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher'
    )
    # torchrun passes LOCAL_RANK in the environment; torch.distributed.launch passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_schedule(cfg: Config) -> list[str]:
    """Warn about iteration-based LR schedulers that do not end where training does.

    A ``--cfg-options train_cfg.max_iters=N`` shortens the run, not the schedule: a
    linear decay planned for 2000 iterations then stops at N with the learning rate
    still high, and one that ends before N trains on at its final value (0 for the
    configs' linear decay). Returns the warnings it logged.
    """
    max_iters = cfg.get('train_cfg', {}).get('max_iters')
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else list(schedulers)
    warnings = []
    for i, scheduler in enumerate(schedulers):
        end = scheduler.get('end')
        if not max_iters or scheduler.get('by_epoch', True) or end is None or end == max_iters:
            continue
        where = 'before' if end < max_iters else 'after'
        warnings.append(
            f'param_scheduler[{i}] ({scheduler.get("type")}) ends at iteration {end}, {where} training stops '
            f'(train_cfg.max_iters={max_iters}); to change both write --cfg-options '
            f'train_cfg.max_iters={max_iters} param_scheduler.{i}.end={max_iters}'
        )
    for text in warnings:
        print_log(text, logger='current', level=logging.WARNING)
    return warnings


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir priority: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'PortableAmpOptimWrapper'):
            print_log(
                'AMP training is already enabled in your config.', logger='current', level=logging.WARNING
            )
        else:
            # MMEngine's AmpOptimWrapper on a GPU (fp16, dynamic loss scale); bf16 autocast on CPU-only hosts
            cfg.optim_wrapper.type = 'PortableAmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    check_schedule(cfg)
    # gloo on hosts without a GPU; a DDP wrapper that handles CPU and Conv-LoRA's unused experts
    setup_distributed(cfg)
    cfg.resume = args.resume
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    teardown_distributed()  # every rank done: the process group goes before the interpreter exits


if __name__ == '__main__':
    main()
