"""Convert CHAMELEON (76 camouflaged animals, a test-only set) to mmseg's layout.

Release: the CHAMELEON set as distributed with the COD test sets (e.g. SINet's
``TestDataset/CHAMELEON``; also ``CHAMELEON_TestingDataset``)::

    CHAMELEON/
      Imgs/animal-1.jpg ...    76 images (a folder named Image or Images also works)
      GT/animal-1.png ...      0/255 masks (or GT_Object)

Output (masks: 0 background, 1 camouflaged)::

    OUT_DIR/img_dir/test/<name>.jpg
    OUT_DIR/ann_dir/test/<name>.png

Usage::

    python tools/dataset_converters/chameleon.py /path/to/CHAMELEON [-o data/chameleon]
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
    """Convert CHAMELEON at ``src`` into ``out_dir``; returns ``{'test': n}``."""
    src = Path(src)
    samples = pair_samples(
        find_dir(src, 'Imgs', 'Image', 'Images'), find_dir(src, 'GT', 'GT_Object'), image_extensions=('.jpg',)
    )
    mask_fn = partial(read_binary_mask, threshold=threshold)
    return convert_splits({'test': samples}, out_dir, mask_fn, '.jpg', nproc, overwrite)


def main(argv: list[str] | None = None) -> int:
    args = converter_parser(__doc__, 'data/chameleon', threshold=SOD_GT_THRESHOLD).parse_args(argv)
    convert(args.src, args.out_dir, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
