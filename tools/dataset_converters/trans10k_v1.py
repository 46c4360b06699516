"""Convert Trans10K-v1 (transparent things and stuff) to mmseg's layout.

Release: Trans10K (Xie et al., ECCV 2020)::

    Trans10K/
      train/images/1.jpg ...            5000 images
      train/masks/1_mask.png ...        colour masks
      validation/easy/images/, validation/easy/masks/
      validation/hard/images/, validation/hard/masks/    1000 images in all
      test/easy/images/, test/easy/masks/
      test/hard/images/, test/hard/masks/                4428 images in all

Masks are mapped as the official loader (Segment_Transparent_Objects,
``trans10k.py``) does, by the mean of the RGB channels: 0 -> 0 background,
85 (one pure channel, e.g. red) -> 1 things, 255 (white) -> 2 stuff; any other
colour is an error that names the file. Output (easy and hard merged; the
``splits/*.txt`` files list each subset for mmseg's ``ann_file``)::

    OUT_DIR/img_dir/{train,val,test}/<name>.jpg    5000 / 1000 / 4428
    OUT_DIR/ann_dir/{train,val,test}/<name>.png    0 background, 1 things, 2 stuff
    OUT_DIR/splits/{val,test}_{easy,hard}.txt

Usage::

    python tools/dataset_converters/trans10k_v1.py /path/to/Trans10K [-o data/trans10k_v1]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mmseg_sam.datasets.converters import (
    Sample,
    colours_to_index,
    convert_splits,
    converter_parser,
    find_dir,
    load_mask,
    pair_samples,
    write_name_list,
)

_CHANNEL_SUM_TO_CLASS = {0: 0, 255: 1, 765: 2}  # RGB mean 0 / 85 / 255, as the official loader
_EXPECTED = 'RGB means 0 (background), 85 (things, e.g. red) or 255 (stuff, white)'


def read_mask(path: Path) -> np.ndarray:
    """A Trans10K-v1 colour mask as uint8 class indices (0 background, 1 things, 2 stuff)."""
    mask = load_mask(path)
    if mask.ndim == 2:
        mask = np.repeat(mask[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return colours_to_index(mask, lambda c: _CHANNEL_SUM_TO_CLASS.get(sum(c)), path, _EXPECTED)


def _pair(folder: Path) -> list[Sample]:
    return pair_samples(
        folder / 'images', folder / 'masks', mask_stem=lambda stem: f'{stem}_mask', image_extensions=('.jpg',)
    )


def convert(src: str | Path, out_dir: str | Path, nproc: int = 1, overwrite: bool = False) -> dict[str, int]:
    """Convert Trans10K-v1 at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    splits = {'train': _pair(find_dir(src, 'train'))}
    subsets = {}
    for split, folder in (('val', 'validation'), ('test', 'test')):
        root = find_dir(src, folder)
        for level in ('easy', 'hard'):
            subsets[f'{split}_{level}'] = _pair(find_dir(root, level))
        splits[split] = subsets[f'{split}_easy'] + subsets[f'{split}_hard']
    counts = convert_splits(splits, out_dir, read_mask, '.jpg', nproc, overwrite)
    for name, samples in subsets.items():
        write_name_list(out_dir, f'{name}.txt', (s.name for s in samples))
    return counts


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/trans10k_v1', binary=False).parse_args(argv)
    convert(args.src, args.out_dir, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
