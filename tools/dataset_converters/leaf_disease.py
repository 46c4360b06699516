"""Convert the leaf disease segmentation dataset to mmseg's layout.

Release: "Leaf Disease Segmentation with Train/Valid Split" (S. R. Rath, Kaggle
2023), the dataset the Conv-LoRA paper cites; only the original images are used,
not its ``aug_data`` copies::

    leaf-disease-segmentation/
      orig_data/train_images/00000_0.jpg ...   498 images
      orig_data/train_masks/00000_0.png ...    masks, disease near 255 on 0
      orig_data/valid_images/ ...              90 images
      orig_data/valid_masks/ ...
      (aug_data/ is not used)

SRC may be the Kaggle root or its ``orig_data`` folder. The release's valid
split is the test set of the papers. Output (masks: 0 background, 1 disease)::

    OUT_DIR/img_dir/{train,test}/<name>.jpg    498 / 90
    OUT_DIR/ann_dir/{train,test}/<name>.png

Usage::

    python tools/dataset_converters/leaf_disease.py /path/to/leaf-disease-segmentation [-o data/leaf_disease]
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
    """Convert the leaf disease release at ``src`` into ``out_dir``; returns the number of images per split."""
    root = find_dir(src, 'orig_data', '.')
    splits = {}
    for split, part in (('train', 'train'), ('test', 'valid')):
        splits[split] = pair_samples(
            find_dir(root, f'{part}_images'),
            find_dir(root, f'{part}_masks'),
            image_extensions=('.jpg', '.jpeg'),
        )
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.jpg', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/leaf_disease').parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
