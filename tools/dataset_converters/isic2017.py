"""Convert ISIC 2017 (skin lesion segmentation, task 1) to mmseg's layout.

Release: ISIC 2017 Challenge, Part 1 (Codella et al., 2018), the six archives
unpacked side by side::

    ISIC2017/
      ISIC-2017_Training_Data/ISIC_0000000.jpg ...           2000 images
        (the *_superpixels.png files and the metadata CSV are skipped)
      ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png ...   0/255
      ISIC-2017_Validation_Data/ ...                         150 images
      ISIC-2017_Validation_Part1_GroundTruth/ ...
      ISIC-2017_Test_v2_Data/ ...                            600 images
      ISIC-2017_Test_v2_Part1_GroundTruth/ ...

Output (the ``_segmentation`` suffix is dropped; masks: 0 background, 1 lesion)::

    OUT_DIR/img_dir/{train,val,test}/ISIC_xxxxxxx.jpg    2000 / 150 / 600
    OUT_DIR/ann_dir/{train,val,test}/ISIC_xxxxxxx.png

Usage::

    python tools/dataset_converters/isic2017.py /path/to/ISIC2017 [-o data/isic2017]
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

SPLITS = {'train': 'Training', 'val': 'Validation', 'test': 'Test_v2'}


def convert(
    src: str | Path, out_dir: str | Path, threshold: int = 128, nproc: int = 1, overwrite: bool = False
) -> dict[str, int]:
    """Convert ISIC 2017 at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    splits = {}
    for split, part in SPLITS.items():
        splits[split] = pair_samples(
            find_dir(src, f'ISIC-2017_{part}_Data'),
            find_dir(src, f'ISIC-2017_{part}_Part1_GroundTruth'),
            mask_stem=lambda stem: f'{stem}_segmentation',
            image_extensions=('.jpg',),
        )
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.jpg', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/isic2017').parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
