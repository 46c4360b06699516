"""Convert the Massachusetts Roads dataset to mmseg's layout.

Release: Massachusetts Roads (Mnih, 2013), 1500x1500 aerial tiles, in either
of its two published layouts::

    massachusetts-roads-dataset/          (Kaggle mirror; tiff/ preferred, png/ also read)
      tiff/train/10078660_15.tiff ...      1108 images
      tiff/train_labels/10078660_15.tif    0/255 road masks
      tiff/val/, tiff/val_labels/          14
      tiff/test/, tiff/test_labels/        49

    mass_roads/                           (the author's site)
      train/sat/*.tiff, train/map/*.tif
      valid/sat/, valid/map/
      test/sat/, test/map/

Images are written as PNG. Output (masks: 0 background, 1 road)::

    OUT_DIR/img_dir/{train,val,test}/<name>.png    1108 / 14 / 49
    OUT_DIR/ann_dir/{train,val,test}/<name>.png

Usage::

    python tools/dataset_converters/massachusetts_roads.py /path/to/massachusetts-roads-dataset \
        [-o data/massachusetts_roads]
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

_EXTENSIONS = ('.tiff', '.tif', '.png')


def convert(
    src: str | Path, out_dir: str | Path, threshold: int = 128, nproc: int = 1, overwrite: bool = False
) -> dict[str, int]:
    """Convert Massachusetts Roads at ``src`` into ``out_dir``; returns the number of images per split."""
    root = find_dir(src, 'tiff', 'png', '.')
    if (root / 'train_labels').is_dir():  # Kaggle: <split>/ and <split>_labels/
        folders = {s: (root / s, root / f'{s}_labels') for s in ('train', 'val', 'test')}
    elif (root / 'train' / 'sat').is_dir():  # the author's site: <split>/sat and <split>/map
        folders = {
            s: (root / part / 'sat', root / part / 'map')
            for s, part in (('train', 'train'), ('val', 'valid'), ('test', 'test'))
        }
    else:
        raise FileNotFoundError(
            f'{root} holds neither train/ + train_labels/ (Kaggle layout) nor train/sat/ + train/map/ '
            f"(the author's layout)"
        )
    splits = {
        split: pair_samples(images, masks, image_extensions=_EXTENSIONS, mask_extensions=_EXTENSIONS)
        for split, (images, masks) in folders.items()
    }
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.png', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/massachusetts_roads').parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
