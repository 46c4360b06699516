"""Segment images with a trained model: class-index masks and colour overlays.

Usage::

    python tools/infer.py CONFIG CHECKPOINT INPUTS... --out-dir DIR
        [--batch-size N] [--device cpu|cuda] [--opacity 0.5] [--no-overlay]
        [--palette-mask] [--with-labels] [--cfg-options ...]

INPUTS are image files, folders (their images, not recursive) or glob patterns
(quote them). For every image ``<name>.<ext>`` the tool writes

- ``DIR/masks/<name>.png``: uint8 class indices at the image's own size
  (``--palette-mask``: a palette PNG with the dataset colours, same indices);
- ``DIR/overlays/<name>.png``: the prediction in the dataset palette blended over
  the image (``--opacity``), unless ``--no-overlay``.

CHECKPOINT may be trainable-only (SAMCheckpointHook's default): the frozen weights
come from the config's ``model.sam_checkpoint``. The checkpoint keys are checked
strictly (see ``mmseg_sam.apis.SAMSegInferencer``). Classes and palette come from
the checkpoint's ``dataset_meta``, else from the config's test dataset.
"""

import argparse
import sys
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from mmengine.utils import ProgressBar

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import SAMSegInferencer, list_images, save_index_mask


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    parser.add_argument('--out-dir', required=True, help='writes masks/ and overlays/ here')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--device', default=None, help="'cpu', 'cuda' or 'cuda:N' (default: cuda if available)"
    )
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity in (0, 1]')
    parser.add_argument('--no-overlay', action='store_true', help='write the masks only')
    parser.add_argument('--palette-mask', action='store_true', help='write masks as palette PNGs')
    parser.add_argument('--with-labels', action='store_true', help='write class names on the overlays')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str:
    """Validate the options; return the device to use."""
    if args.batch_size < 1:
        raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
    if not 0 < args.opacity <= 1:
        raise ValueError(f'--opacity must be in (0, 1], got {args.opacity}')
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise ValueError(f'--out-dir {args.out_dir} is a file: give a folder (it is created if missing)')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {device}: CUDA is not available here')
    return device


def output_names(paths: list[Path]) -> list[str]:
    """``<stem>.png`` per image; two inputs with the same stem are an error."""
    seen: dict[str, Path] = {}
    for path in paths:
        name = f'{path.stem}.png'
        if name in seen:
            raise ValueError(f'{seen[name]} and {path} would both be written as {name}; rename one')
        seen[name] = path
    return list(seen)


def infer(args: argparse.Namespace) -> int:
    """Run the model on every input and write the outputs; returns the image count."""
    device = check_args(args)
    paths = list_images(args.inputs)
    names = output_names(paths)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    inferencer = SAMSegInferencer(model=cfg, weights=args.checkpoint, device=device)
    meta = inferencer.model.dataset_meta
    visualizer = inferencer.visualizer
    visualizer.set_dataset_meta(meta['classes'], meta['palette'])
    visualizer.alpha = args.opacity
    out_dir = Path(args.out_dir)
    palette = meta['palette'] if args.palette_mask else None

    progress = ProgressBar(len(paths))
    done = 0
    for batch in inferencer.preprocess([str(p) for p in paths], batch_size=args.batch_size):
        for pred in inferencer.forward(batch):
            path, name = paths[done], names[done]
            mask = pred.pred_sem_seg.data  # (1, H, W) at the image's own size
            save_index_mask(mask, out_dir / 'masks' / name, palette)
            if not args.no_overlay:
                image = inferencer.read_image(str(path))  # as the model saw it (16-bit images scaled)
                visualizer.add_datasample(
                    name,
                    image,
                    pred,
                    draw_gt=False,
                    with_labels=args.with_labels,
                    out_file=str(out_dir / 'overlays' / name),
                )
            done += 1
            progress.update()
    assert done == len(paths), (done, len(paths))
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        count = infer(args)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(
        f'\n{count} images -> {Path(args.out_dir) / "masks"}' + ('' if args.no_overlay else ' and overlays/')
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
