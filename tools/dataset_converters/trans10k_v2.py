"""Convert Trans10K-v2 (11 fine-grained transparent classes) to mmseg's layout.

Release: Trans10K-v2 (Xie et al., IJCAI 2021, "Segmenting Transparent Objects in
the Wild with Transformer")::

    Trans10K_cls12/   (or Trans10K_v2/)
      train/images/1.jpg ...          5000 images
      train/masks_12/1_mask.png ...   masks
      validation/images/, validation/masks_12/    1000
      test/images/, test/masks_12/                4428

Masks are read as Trans2Seg's loader reads them when they are palette or grey
PNGs (the pixel values are the class indices 0..11); colour (RGB) masks are
mapped through Trans2Seg's colour table (``TRANS10K_V2_METAINFO['palette']`` in
mmseg_sam/datasets/trans10k.py). An index >= 12 or an unknown colour is an
error that names the file. Classes: background, shelf, jar or tank, freezer,
window, glass door, eyeglass, cup, floor glass, glass bowl, water bottle,
storage box. Output::

    OUT_DIR/img_dir/{train,val,test}/<name>.jpg    5000 / 1000 / 4428
    OUT_DIR/ann_dir/{train,val,test}/<name>.png    class indices 0..11

Usage::

    python tools/dataset_converters/trans10k_v2.py /path/to/Trans10K_cls12 [-o data/trans10k_v2]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mmseg_sam.datasets.converters import (
    check_indices,
    colours_to_index,
    convert_splits,
    converter_parser,
    find_dir,
    load_mask,
    pair_samples,
)
from mmseg_sam.datasets.trans10k import TRANS10K_V2_METAINFO

NUM_CLASSES = len(TRANS10K_V2_METAINFO['classes'])
COLOUR_TO_CLASS = {tuple(c): i for i, c in enumerate(TRANS10K_V2_METAINFO['palette'])}


def read_mask(path: Path) -> np.ndarray:
    """A Trans10K-v2 mask (palette/grey indices or RGB colours) as uint8 class indices."""
    mask = load_mask(path, palette_indices=True)
    if mask.ndim == 2:
        return check_indices(mask, NUM_CLASSES, path)
    return colours_to_index(
        mask, COLOUR_TO_CLASS.get, path, f'a colour of the Trans10K-v2 palette {list(COLOUR_TO_CLASS)}'
    )


def convert(src: str | Path, out_dir: str | Path, nproc: int = 1, overwrite: bool = False) -> dict[str, int]:
    """Convert Trans10K-v2 at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    splits = {}
    for split, folder in (('train', 'train'), ('val', 'validation'), ('test', 'test')):
        root = find_dir(src, folder)
        splits[split] = pair_samples(
            root / 'images',
            root / 'masks_12',
            mask_stem=lambda stem: f'{stem}_mask',
            image_extensions=('.jpg',),
        )
    return convert_splits(splits, out_dir, read_mask, '.jpg', nproc, overwrite)


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/trans10k_v2', binary=False).parse_args(argv)
    convert(args.src, args.out_dir, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
