"""Generate the synthetic demo dataset (textured objects on textured backgrounds).

Usage::

    python tools/dataset_converters/generate_demo_data.py data/demo \
        [--num-train 200] [--num-val 40] [--img-size 128 | --img-size H W] \
        [--mode binary|multiclass|multiclass_hue|multiclass_many] [--seed 0] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys

from mmseg_sam.datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description="Generate the synthetic demo segmentation dataset in mmseg's img_dir/ann_dir layout."
    )
    parser.add_argument('out_dir', help='dataset root to write')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=40)
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        default=[128],
        metavar='SIZE',
        help='one int for square images, or H W (default: 128)',
    )
    parser.add_argument('--mode', choices=list(SYNTHETIC_CLASSES), default='binary')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='regenerate even if out_dir holds a dataset with other parameters',
    )
    args = parser.parse_args(argv)
    if len(args.img_size) > 2:
        parser.error(f'--img-size takes one or two ints, got {args.img_size}')
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command-line interface.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success, 1 (after a one-line error message on stderr) when the
        arguments are invalid or the output folder conflicts.
    """
    args = parse_args(argv)
    img_size = args.img_size[0] if len(args.img_size) == 1 else tuple(args.img_size)
    try:
        info = generate_synthetic_dataset(
            args.out_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            img_size=img_size,
            mode=args.mode,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (ValueError, TypeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(
        f'{info["root"]}: {info["num_train"]} train / {info["num_val"]} val images, classes {info["classes"]}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
