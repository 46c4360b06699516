"""Convert CAMO (camouflaged objects) to mmseg's layout.

Release: CAMO-V.1.0-CVIU2019 (Le et al., CVIU 2019)::

    CAMO-V.1.0-CVIU2019/
      Images/Train/camourflage_00001.jpg ...   1000 images
      Images/Test/camourflage_00002.jpg ...    250 images
      GT/camourflage_00001.png ...             1250 0/255 masks of both splits
                                               (GT/Train and GT/Test also accepted)

Output (masks: 0 background, 1 camouflaged)::

    OUT_DIR/img_dir/{train,test}/<name>.jpg
    OUT_DIR/ann_dir/{train,test}/<name>.png

Usage::

    python tools/dataset_converters/camo.py /path/to/CAMO-V.1.0-CVIU2019 [-o data/camo]
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from mmseg_sam.datasets.converters import (
    SOD_GT_THRESHOLD,
    convert_splits,
    converter_parser,
    find_dir,
    pair_samples,
    read_binary_mask,
)


def convert(
    src: str | Path,
    out_dir: str | Path,
    threshold: int = SOD_GT_THRESHOLD,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Convert CAMO at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    images = find_dir(src, 'Images')
    splits = {}
    for split, folder in (('train', 'Train'), ('test', 'Test')):
        masks = find_dir(src, f'GT/{folder}', 'GT')
        splits[split] = pair_samples(find_dir(images, folder), masks, image_extensions=('.jpg',))
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.jpg', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/camo', threshold=SOD_GT_THRESHOLD).parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
