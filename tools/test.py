"""Test (and evaluate) a segmentor (mmseg's tools/test.py CLI, with mmseg_sam registered)."""

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from mmseg.registry import MODELS

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis.zero_shot import zero_shot_config
from mmseg_sam.datasets.transforms import flip_tta_pipeline
from mmseg_sam.engine import setup_distributed, teardown_distributed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        help="checkpoint file, or 'none' for the zero-shot baseline: the model fine-tuning starts from, "
        "model.sam_checkpoint's weights without the config's PEFT method (SAM itself, whatever the method's "
        'initialisation), the baseline a fine-tuned checkpoint is compared with',
    )
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='directory to save the predictions: label maps (PNG); prompted models also per-instance masks '
        '(COCO RLE) and scores (JSON)',
    )
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--show-interval',
        type=int,
        default=1,
        help='draw every N-th test image with --show/--show-dir (mmseg defaults to 50; here 1: all)',
    )
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override settings in the config, key=value pairs'
    )
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher'
    )
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: cfg.tta_pipeline, or a horizontal flip of the test pipeline',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace) -> Config:
    """Turn on mmseg's SegVisualizationHook for --show / --show-dir."""
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks; refer to usage '
            '"visualization=dict(type=\'VisualizationHook\')"'
        )
    hook = default_hooks['visualization']
    hook['draw'] = True
    hook['interval'] = args.show_interval
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    zero_shot = args.checkpoint.lower() == 'none'
    if zero_shot:
        cfg, zero_shot_message = zero_shot_config(cfg)
    cfg.load_from = None if zero_shot else args.checkpoint
    logger = cfg.get('default_hooks', {}).get('logger')
    if logger is not None and logger.get('type') in ('LoggerHook', 'mmengine.LoggerHook'):
        # mmengine's LoggerHook writes the test metrics' JSON from every rank into one file
        logger['type'] = 'MainProcessLoggerHook'  # the same hook, the file written by rank 0 only
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        segmentor = MODELS.get(cfg.model.type)
        if segmentor is not None and not getattr(segmentor, 'supports_tta', True):
            raise ValueError(
                f'--tta does not apply to {cfg.model.type}: its predictions follow per-instance prompts, which a '
                'flipped image would need flipped too; evaluate without --tta'
            )
        if 'tta_pipeline' not in cfg:  # horizontal flip at the test size (SAMSegTTAModel merges)
            cfg.tta_pipeline = flip_tta_pipeline(cfg.test_dataloader.dataset.pipeline)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:  # every metric writes its predictions to args.out (prompted: per-instance JSON)
        metrics = (
            cfg.test_evaluator if isinstance(cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        )
        for metric in metrics:
            metric['output_dir'] = args.out
            metric['keep_results'] = True

    # gloo on hosts without a GPU; a DDP wrapper that handles CPU and Conv-LoRA's unused experts
    setup_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    if zero_shot:
        runner.logger.info(zero_shot_message)
    runner.test()
    teardown_distributed()  # every rank done: the process group goes before the interpreter exits


if __name__ == '__main__':
    main()
