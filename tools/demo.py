"""The embedded demo: generate data, train with tools/train.py, evaluate with tools/test.py.

Without ``SAM_CHECKPOINT`` a small SAM-architecture model with random weights is
trained (the pipeline learns, but this is not SAM's pretrained quality). With
``SAM_CHECKPOINT=/path/sam_vit_b_01ec64.pth`` SAM ViT-B is fine-tuned with LoRA.

Prints the foreground IoU / Dice of the validation split, writes prediction
overlays (PNG) under ``<work-dir>/overlays`` and the training curves to
``<work-dir>/curves.png``.

``--prompted`` trains SAM's whole promptable decoder with box, point and correction-click
prompts on the demo's objects and scores it per object (``InteractiveSegMetric``): it
saves the model as built (``<work-dir>/init.pth``), evaluates it (zero-shot), fine-tunes
from exactly those weights, evaluates again and prints box-prompted IoU, 1-point IoU and
NoC@85 before and after (``--seed`` picks the initial weights and the training run).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMALL_CONFIG = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'
VIT_B_CONFIG = REPO / 'configs/demo/sam-vit-b_lora-qv-r4_1k_demo-binary-256x256.py'
SAM2_SMALL_CONFIG = REPO / 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py'
SAM2_TINY_CONFIG = REPO / 'configs/demo/sam2.1-hiera-tiny_lora-qv-r4_1k_demo-binary-256x256.py'
PROMPTED_SMALL_CONFIG = REPO / 'configs/demo/sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py'
PROMPTED_VIT_B_CONFIG = REPO / 'configs/demo/sam-vit-b_prompted_lora-qv-r4_1k_demo-binary-256x256.py'
PROMPTED_SAM2_SMALL_CONFIG = (
    REPO / 'configs/demo/sam2.1-hiera-mini_prompted_lora-qv-r4_1k_demo-binary-128x128.py'
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--data-root', default=str(REPO / 'data/demo_binary'))
    parser.add_argument('--work-dir', default=str(REPO / 'work_dirs/demo'))
    parser.add_argument(
        '--checkpoint',
        default=os.environ.get('SAM_CHECKPOINT') or None,
        help='SAM ViT-B checkpoint, or SAM 2.1 Hiera-T with --sam2 (default: $SAM_CHECKPOINT)',
    )
    parser.add_argument(
        '--sam2', action='store_true', help="the SAM 2 family: a Hiera encoder and SAM 2's mask decoder head"
    )
    parser.add_argument(
        '--prompted',
        action='store_true',
        help='train and score SAM with box, point and click prompts; zero-shot against fine-tuned',
    )
    parser.add_argument('--seed', type=int, default=0, help='--prompted: initial weights and training seed')
    parser.add_argument('--iters', type=int, default=None, help='override the number of training iterations')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=40)
    return parser.parse_args(argv)


def foreground_scores(pred_dir: Path, ann_dir: Path) -> tuple[float, float, int]:
    """Dataset-level foreground IoU and Dice (mmseg's IoUMetric arithmetic) of label PNGs."""
    import torch
    from mmseg.evaluation.metrics import IoUMetric

    totals = [torch.zeros(2, dtype=torch.float64) for _ in range(4)]
    files = sorted(pred_dir.glob('*.png'))
    if not files:
        raise FileNotFoundError(f'no predictions were written to {pred_dir}')
    for pred_file in files:
        pred = torch.from_numpy(np.array(Image.open(pred_file))).long()
        label = torch.from_numpy(np.array(Image.open(ann_dir / pred_file.name))).long()
        for total, area in zip(totals, IoUMetric.intersect_and_union(pred, label, 2, 255)):
            total += area
    inter, union, pred_area, label_area = totals
    iou = (inter[1] / union[1]).item()
    dice = (2 * inter[1] / (pred_area[1] + label_area[1])).item()
    return iou, dice, len(files)


def run(cmd: list[str]) -> None:
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def save_initial_weights(config: Path, options: list[str], seed: int, out: Path) -> None:
    """The model as ``config`` builds it under ``seed``, saved whole: the zero-shot baseline and the start."""
    import torch
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    from mmseg.registry import MODELS

    import mmseg_sam  # noqa: F401

    cfg = Config.fromfile(config)
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    init_default_scope('mmseg')
    set_random_seed(seed)
    model = MODELS.build(cfg.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, out)


def test_metrics(work_dir: Path) -> dict:
    """The metrics tools/test.py wrote under ``work_dir``."""
    import json

    [path] = sorted(work_dir.glob('*/*.json'))
    return json.loads(path.read_text().splitlines()[-1])


def prompted(args: argparse.Namespace, options: list[str], work_dir: Path) -> None:
    """Zero-shot, fine-tune, evaluate again; prints the prompted scores before and after."""
    if args.sam2:
        config = PROMPTED_SAM2_SMALL_CONFIG
    else:
        config = PROMPTED_VIT_B_CONFIG if args.checkpoint else PROMPTED_SMALL_CONFIG
    options = [*options, f'randomness.seed={args.seed}']
    init = work_dir / 'init.pth'
    save_initial_weights(config, options, args.seed, init)
    py = sys.executable
    run(
        [
            py,
            'tools/test.py',
            str(config),
            str(init),
            '--work-dir',
            str(work_dir / 'zero_shot'),
            '--cfg-options',
            *options,
        ]
    )
    run(
        [
            py,
            'tools/train.py',
            str(config),
            '--work-dir',
            str(work_dir),
            '--cfg-options',
            *options,
            f'load_from={init}',
        ]
    )
    last = (work_dir / 'last_checkpoint').read_text().strip()
    run(
        [
            py,
            'tools/test.py',
            str(config),
            last,
            '--work-dir',
            str(work_dir / 'test'),
            '--show-dir',
            str(work_dir / 'overlays'),
            '--cfg-options',
            *options,
        ]
    )
    before, after = test_metrics(work_dir / 'zero_shot'), test_metrics(work_dir / 'test')
    print(f'\nprompted demo, seed {args.seed}, {int(after["instances"])} validation objects:')
    print(f'{"":>12} {"box IoU":>8} {"1-point IoU":>12} {"NoC@85":>7}')
    for name, scores in (('zero-shot', before), ('fine-tuned', after)):
        print(f'{name:>12} {scores["box_mIoU"]:8.2f} {scores["point_mIoU"]:12.2f} {scores["NoC@85"]:7.2f}')
    print(f'checkpoint: {last}\noverlays:   {work_dir / "overlays"}')


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mmseg_sam.datasets import generate_synthetic_dataset

    start = time.time()
    data = generate_synthetic_dataset(
        args.data_root, num_train=args.num_train, num_val=args.num_val, img_size=128, mode='binary', seed=0
    )
    print(f'demo data: {data["num_train"]} train / {data["num_val"]} val images in {data["root"]}')

    work_dir = Path(args.work_dir)
    options = [
        f'train_dataloader.dataset.data_root={args.data_root}',
        f'val_dataloader.dataset.data_root={args.data_root}',
        f'test_dataloader.dataset.data_root={args.data_root}',
    ]
    if args.prompted and args.sam2 and args.checkpoint:
        raise ValueError(
            '--prompted --sam2 runs the small random-weight Hiera demo; for SAM 2.1 weights train '
            'configs/_base_/models/sam2.1-hiera-base-plus_prompted.py on your data (docs/prompted.md)'
        )
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f'SAM checkpoint not found: {args.checkpoint}')
        config = SAM2_TINY_CONFIG if args.sam2 else VIT_B_CONFIG
        options.append(f'model.sam_checkpoint={args.checkpoint}')
        print(f'fine-tuning {"SAM 2.1 Hiera-T" if args.sam2 else "SAM ViT-B"} from {args.checkpoint}')
    else:
        config = SAM2_SMALL_CONFIG if args.sam2 else SMALL_CONFIG
        real = '/path/sam2.1_hiera_tiny.pt' if args.sam2 else '/path/sam_vit_b_01ec64.pth'
        print(
            f'SAM_CHECKPOINT is not set: training a SMALL {"SAM 2" if args.sam2 else "SAM"}-architecture model '
            f'from RANDOM weights (frozen encoder + LoRA + mask decoder). Set SAM_CHECKPOINT={real} '
            'to fine-tune the real model.'
        )
    if args.iters:
        options += [
            f'train_cfg.max_iters={args.iters}',
            f'train_cfg.val_interval={args.iters}',
            f'param_scheduler.0.end={args.iters}',
            f'default_hooks.checkpoint.interval={args.iters}',
        ]

    if args.prompted:
        prompted(args, options, work_dir)
        return 0
    py = sys.executable
    run([py, 'tools/train.py', str(config), '--work-dir', str(work_dir), '--cfg-options', *options])
    last = (work_dir / 'last_checkpoint').read_text().strip()
    pred_dir = work_dir / 'predictions'
    run(
        [
            py,
            'tools/test.py',
            str(config),
            last,
            '--work-dir',
            str(work_dir / 'test'),
            '--out',
            str(pred_dir),
            '--show-dir',
            str(work_dir / 'overlays'),
            '--cfg-options',
            *options,
        ]
    )

    curves = work_dir / 'curves.png'
    run([py, 'tools/analysis_tools/plot_curves.py', str(work_dir), '--out', str(curves)])

    iou, dice, n = foreground_scores(pred_dir, Path(args.data_root) / 'ann_dir/val')
    print(
        f'\ndemo finished in {time.time() - start:.0f} s: foreground IoU {iou:.4f}, Dice {dice:.4f} '
        f'on {n} validation images'
    )
    print(f'checkpoint: {last}\noverlays:   {work_dir / "overlays"}\ncurves:     {curves}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
