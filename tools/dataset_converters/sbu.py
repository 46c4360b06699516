"""Convert SBU-Shadow to mmseg's layout.

Release: SBU-shadow (Vicente et al., ECCV 2016)::

    SBU-shadow/
      SBUTrain4KRecoveredSmall/ShadowImages/lssd1.jpg ...   4089 images
      SBUTrain4KRecoveredSmall/ShadowMasks/lssd1.png ...    0/255 shadow masks
      SBU-Test/ShadowImages/ ...                            638 images
      SBU-Test/ShadowMasks/ ...

Output (masks: 0 background, 1 shadow)::

    OUT_DIR/img_dir/{train,test}/<name>.jpg
    OUT_DIR/ann_dir/{train,test}/<name>.png

Usage::

    python tools/dataset_converters/sbu.py /path/to/SBU-shadow [-o data/sbu]
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
    """Convert SBU-shadow at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    splits = {}
    for split, folder in (('train', 'SBUTrain4KRecoveredSmall'), ('test', 'SBU-Test')):
        root = find_dir(src, folder)
        splits[split] = pair_samples(root / 'ShadowImages', root / 'ShadowMasks', image_extensions=('.jpg',))
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.jpg', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/sbu').parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
