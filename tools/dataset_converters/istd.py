"""Convert ISTD (shadow detection) to mmseg's layout.

Release: ISTD_Dataset (Wang et al., CVPR 2018), image triplets A (shadow
image), B (shadow mask), C (shadow-free image, not used)::

    ISTD_Dataset/
      train/train_A/1-1.png ...   1330 images
      train/train_B/1-1.png ...   0/255 shadow masks
      test/test_A/ ...            540 images
      test/test_B/ ...

Output (masks: 0 background, 1 shadow)::

    OUT_DIR/img_dir/{train,test}/<name>.png
    OUT_DIR/ann_dir/{train,test}/<name>.png

Usage::

    python tools/dataset_converters/istd.py /path/to/ISTD_Dataset [-o data/istd]
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from mmseg_sam.datasets.converters import (
    convert_splits,
    converter_parser,
    find_dir,
    pair_samples,
    read_binary_mask,
)


def convert(
    src: str | Path, out_dir: str | Path, threshold: int = 128, nproc: int = 1, overwrite: bool = False
) -> dict[str, int]:
    """Convert ISTD at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    splits = {}
    for split in ('train', 'test'):
        root = find_dir(src, split)
        splits[split] = pair_samples(root / f'{split}_A', root / f'{split}_B')
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.png', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/istd').parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
