"""Convert CVC-ClinicDB (polyps) to mmseg's layout, with PraNet's train/test split.

Release: CVC-ClinicDB (Bernal et al., 2015), 612 frames of 384x288, either the
original TIFFs or the PNG copy many mirrors carry::

    CVC-ClinicDB/
      Original/1.tif ... 612.tif        (or PNG/Original/1.png, TIF/Original/...)
      Ground Truth/1.tif ... 612.tif    0/255 masks (or PNG/Ground Truth/, GroundTruth/)

Split: the release has none. Polyp papers since PraNet (Fan et al., MICCAI
2020) test on the 62 frames listed below (the file names of PraNet's released
``TestDataset/CVC-ClinicDB`` predictions) and train on the other 550, together
with 900 Kvasir-SEG images (see kvasir_seg.py). ``--test-list`` replaces the
list with a text file of names or a folder whose file names are the test
frames. Images are written as PNG. Output (masks: 0 background, 1 polyp)::

    OUT_DIR/img_dir/{train,test}/<n>.png    550 / 62
    OUT_DIR/ann_dir/{train,test}/<n>.png

Usage::

    python tools/dataset_converters/cvc_clinicdb.py /path/to/CVC-ClinicDB [-o data/cvc_clinicdb]
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
    read_names,
    split_by_names,
)

PRANET_TEST = tuple(
    str(n)
    for n in (
        14, 21, 25, 31, 42, 50, 52, 61, 65, 66, 73, 80, 89, 100, 106, 119, 134, 148, 154, 163, 166,
        171, 179, 181, 185, 191, 205, 240, 251, 266, 279, 287, 300, 307, 349, 353, 374, 381, 388,
        397, 400, 404, 425, 429, 431, 442, 453, 459, 464, 474, 481, 483, 492, 526, 529, 545, 555,
        559, 561, 569, 571, 575,
    )
)  # fmt: skip

_EXTENSIONS = ('.tif', '.tiff', '.png', '.bmp', '.jpg')


def convert(
    src: str | Path,
    out_dir: str | Path,
    test_list: str | Path | None = None,
    threshold: int = SOD_GT_THRESHOLD,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Convert CVC-ClinicDB at ``src`` into ``out_dir``; returns the number of images per split.

    Args:
        src: Root of the release.
        out_dir: Output root.
        test_list: Text file or folder naming the test frames; ``None`` uses
            PraNet's split.
        threshold: Mask values >= this are polyp (default 129: the field's ``GT > 128``).
        nproc: Worker processes.
        overwrite: Replace files in non-empty output folders.
    """
    src = Path(src)
    root = src if (src / 'Original').is_dir() else find_dir(src, 'PNG', 'TIF')
    images = find_dir(root, 'Original')
    masks = find_dir(root, 'Ground Truth', 'GroundTruth', 'Ground_Truth')
    samples = pair_samples(images, masks, image_extensions=_EXTENSIONS, mask_extensions=_EXTENSIONS)
    test_names = PRANET_TEST if test_list is None else read_names(test_list)
    train, test = split_by_names(samples, test_names, images)
    mask_fn = partial(read_binary_mask, threshold=threshold)
    return convert_splits({'train': train, 'test': test}, out_dir, mask_fn, '.png', nproc, overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser(__doc__, 'data/cvc_clinicdb', threshold=SOD_GT_THRESHOLD)
    parser.add_argument('--test-list', help="file or folder naming the test frames (default: PraNet's 62)")
    args = parser.parse_args(argv)
    convert(args.src, args.out_dir, args.test_list, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
