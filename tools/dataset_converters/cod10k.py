"""Convert COD10K (camouflaged object detection) to mmseg's layout.

Release: COD10K-v3 (Fan et al., CVPR 2020 / TPAMI 2021), as unpacked from the
authors' download::

    COD10K-v3/
      Train/Image/COD10K-CAM-1-Aquatic-1-BatFish-1.jpg ...   6000 images
      Train/GT_Object/COD10K-CAM-1-Aquatic-1-BatFish-1.png   0/255 object masks
      Test/Image/ ...                                         4000 images
      Test/GT_Object/ ...
      (GT_Edge, GT_Instance, ... are not used)

Following SINet and the rest of the field, only the camouflaged images
(``COD10K-CAM-*``: 3040 train, 2026 test) are kept; ``--include-noncam`` keeps
the non-camouflaged ones too. Output (masks: 0 background, 1 camouflaged)::

    OUT_DIR/img_dir/{train,test}/<name>.jpg
    OUT_DIR/ann_dir/{train,test}/<name>.png

Usage::

    python tools/dataset_converters/cod10k.py /path/to/COD10K-v3 [-o data/cod10k]
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


def is_camouflaged(stem: str) -> bool:
    """Whether a COD10K image name marks a camouflaged image (``COD10K-CAM-...``)."""
    return '-CAM-' in stem


def convert(
    src: str | Path,
    out_dir: str | Path,
    include_noncam: bool = False,
    threshold: int = SOD_GT_THRESHOLD,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Convert COD10K-v3 at ``src`` into ``out_dir``; returns the number of images per split."""
    src = Path(src)
    select = None if include_noncam else is_camouflaged
    splits = {}
    for split, folder in (('train', 'Train'), ('test', 'Test')):
        root = find_dir(src, folder)
        splits[split] = pair_samples(
            root / 'Image', root / 'GT_Object', image_extensions=('.jpg',), select=select
        )
    return convert_splits(
        splits, out_dir, partial(read_binary_mask, threshold=threshold), '.jpg', nproc, overwrite
    )


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser(__doc__, 'data/cod10k', threshold=SOD_GT_THRESHOLD)
    parser.add_argument('--include-noncam', action='store_true', help='keep the non-camouflaged images')
    args = parser.parse_args(argv)
    convert(args.src, args.out_dir, args.include_noncam, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
