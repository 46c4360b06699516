"""The embedded demo: generate data, train with tools/train.py, evaluate with tools/test.py.

Without ``SAM_CHECKPOINT`` a small SAM-architecture model with random weights is
trained (the pipeline learns, but this is not SAM's pretrained quality). With
``SAM_CHECKPOINT=/path/sam_vit_b_01ec64.pth`` SAM ViT-B is fine-tuned with LoRA.

Prints the foreground IoU / Dice of the validation split, writes prediction
overlays (PNG) under ``<work-dir>/overlays`` and the training curves to
``<work-dir>/curves.png``.
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
