"""Shared logic of the benchmark converters in ``tools/dataset_converters/``.

Each converter reads one public release in the layout it is published in and
writes mmseg's layout::

    out_dir/
      img_dir/{split}/<name>.jpg|.png   images (JPEGs copied byte for byte,
                                        other formats re-encoded as RGB PNG)
      ann_dir/{split}/<name>.png        uint8 class-index masks (0 background, 1.. classes)

This module holds everything the converters share, so each converter only states
where its release keeps images and masks and how a mask becomes class indices:

- :func:`find_dir`, :func:`pair_samples`: locate folders and pair each image with
  its mask (a missing mask is an error that names the image and the expected mask).
- :func:`load_mask`, :func:`binarize_mask`, :func:`colours_to_index`,
  :func:`check_indices`: mask decoding. Binary masks stored as 0/255 (or
  JPEG-compressed near those values) become 0/1 by a threshold, because mmseg
  ignores label 255: a mask left as 0/255 would train on background only.
  Camouflage and polyp converters use :data:`SOD_GT_THRESHOLD` (``GT > 128``,
  the convention of those fields' evaluation code), the others 128.
- :func:`convert_splits`: write the samples of every split (optionally in
  parallel), checking that each mask has its image's size.

Only numpy and Pillow are used.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

__all__ = [
    'IMAGE_EXTENSIONS',
    'SOD_GT_THRESHOLD',
    'Sample',
    'find_dir',
    'pair_samples',
    'load_mask',
    'binarize_mask',
    'read_binary_mask',
    'colours_to_index',
    'check_indices',
    'bytes_to_mask',
    'read_names',
    'split_by_names',
    'convert_splits',
    'write_name_list',
    'converter_parser',
]

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')
_JPEG = ('.jpg', '.jpeg')
_OUTPUT_IMAGE_SUFFIXES = ('.jpg', '.png')
_MAX_LISTED = 5


@dataclass(frozen=True)
class Sample:
    """One image and its mask in a source release.

    Attributes:
        name: File stem of the converted image and mask.
        image: Path of the source image.
        mask: Path of the source mask.
    """

    name: str
    image: Path
    mask: Path


def _listing(items: Sequence[str]) -> str:
    """``a, b, c`` with at most ``_MAX_LISTED`` entries and a count of the rest."""
    shown = ', '.join(items[:_MAX_LISTED])
    rest = len(items) - _MAX_LISTED
    return f'{shown} and {rest} more' if rest > 0 else shown


def find_dir(root: str | Path, *candidates: str) -> Path:
    """The first existing folder among ``root/candidate``.

    Args:
        root: Folder to look in.
        *candidates: Relative folder names, in order of preference (``'.'`` is
            ``root`` itself).

    Returns:
        The first candidate that is a folder.

    Raises:
        FileNotFoundError: If none is, naming ``root`` and the candidates.
    """
    root = Path(root)
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f'none of the folders {list(candidates)} exists under {root}; '
        f'is {root} the root of the release described in the converter docstring?'
    )


def _files_by_stem(folder: Path, extensions: Collection[str], what: str) -> dict[str, Path]:
    """Map each file stem in ``folder`` with one of ``extensions`` to its path."""
    if not folder.is_dir():
        raise FileNotFoundError(f'{what} folder {folder} does not exist')
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        if path.stem in files:
            raise ValueError(
                f'two {what} files in {folder} share the name {path.stem!r}: '
                f'{files[path.stem].name} and {path.name}'
            )
        files[path.stem] = path
    return files


def pair_samples(
    image_dir: str | Path,
    mask_dir: str | Path,
    *,
    mask_stem: Callable[[str], str] = lambda stem: stem,
    image_extensions: Collection[str] = IMAGE_EXTENSIONS,
    mask_extensions: Collection[str] = ('.png',),
    select: Callable[[str], bool] | None = None,
) -> list[Sample]:
    """Pair every image of ``image_dir`` with its mask in ``mask_dir``.

    Args:
        image_dir: Folder of the images (not searched recursively).
        mask_dir: Folder of the masks.
        mask_stem: Maps an image stem to its mask's stem (ISIC:
            ``ISIC_0000000`` -> ``ISIC_0000000_segmentation``).
        image_extensions: Lower-case suffixes that mark images; other files
            (ISIC's ``*_superpixels.png``, metadata CSVs) are skipped.
        mask_extensions: Lower-case suffixes that mark masks.
        select: Keeps an image when ``select(stem)`` is true (COD10K: only the
            camouflaged images); ``None`` keeps all.

    Returns:
        Samples sorted by name.

    Raises:
        FileNotFoundError: If a folder is missing, if no image is selected, or
            if an image has no mask (the message names the images and the mask
            files that were expected).
        ValueError: If two images or two masks share a stem.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    images = _files_by_stem(image_dir, image_extensions, 'image')
    if select is not None:
        images = {stem: path for stem, path in images.items() if select(stem)}
    if not images:
        raise FileNotFoundError(f'no image ({", ".join(sorted(image_extensions))}) selected in {image_dir}')
    masks = _files_by_stem(mask_dir, mask_extensions, 'mask')
    samples, missing = [], []
    for stem, image in sorted(images.items()):
        mask = masks.get(mask_stem(stem))
        if mask is None:
            missing.append(
                f'{image.name} (expected {mask_dir / mask_stem(stem)}{sorted(mask_extensions)[0]})'
            )
        else:
            samples.append(Sample(stem, image, mask))
    if missing:
        raise FileNotFoundError(f'{len(missing)} image(s) in {image_dir} have no mask: {_listing(missing)}')
    return samples


def load_mask(
    source: str | Path | BinaryIO, name: str | Path | None = None, palette_indices: bool = False
) -> np.ndarray:
    """Decode a mask file into a uint8 array.

    Args:
        source: Path or binary file object of the mask.
        name: How to call the mask in errors (defaults to ``source``).
        palette_indices: Return the indices of a palette ('P') image instead of
            its colours.

    Returns:
        ``(H, W)`` for grey, bilevel and (with ``palette_indices``) palette
        masks; ``(H, W, 3)`` RGB for colour masks (alpha is dropped).

    Raises:
        ValueError: If the file cannot be decoded or its mode is not an 8-bit
            grey, palette or colour mode.
    """
    name = source if name is None else name
    try:
        with Image.open(source) as img:
            mode = img.mode
            if mode in ('1', 'L'):
                return np.asarray(img.convert('L'), dtype=np.uint8)
            if mode == 'P' and palette_indices:
                return np.asarray(img, dtype=np.uint8)
            if mode == 'LA':
                return np.asarray(img.convert('L'), dtype=np.uint8)
            if mode in ('P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr'):
                return np.asarray(img.convert('RGB'), dtype=np.uint8)
    except (OSError, SyntaxError) as err:  # PIL raises these on corrupt files
        raise ValueError(f'cannot decode the mask {name}: {err}') from err
    raise ValueError(f'{name}: unsupported mask mode {mode!r}; expected 8-bit grey, palette or RGB')


#: Lowest foreground value of the camouflage and polyp converters: the fields'
#: evaluation code (PySODMetrics and the papers' scripts) counts ``GT > 128`` as
#: foreground, so a JPEG mask pixel of exactly 128 is background there.
SOD_GT_THRESHOLD = 129


def binarize_mask(mask: np.ndarray, threshold: int = 128, name: str | Path = 'mask') -> np.ndarray:
    """Foreground (1) where ``mask >= threshold``, else background (0).

    Colour masks count a pixel as foreground when any channel reaches the
    threshold, so white, red or any other colour drawn on black works.

    Args:
        mask: uint8 ``(H, W)`` or ``(H, W, C)`` mask, e.g. 0/255 or a JPEG
            mask with values near 0 and 255.
        threshold: Lowest foreground value, in [1, 255].
        name: How to call the mask in errors.

    Returns:
        uint8 ``(H, W)`` array of 0 and 1.

    Raises:
        ValueError: If ``threshold`` is out of range, or if the mask holds only
            0 and 1: it is then already a class-index mask that the threshold
            would turn into background everywhere.
    """
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, np.integer))
        or not 1 <= threshold <= 255
    ):
        raise ValueError(f'threshold must be an int in [1, 255], got {threshold!r}')
    if mask.ndim == 3:
        mask = mask.max(axis=2)  # (H, W, C) -> (H, W)
    foreground = mask >= threshold
    if threshold > 1 and not foreground.any() and int(mask.max()) == 1:
        raise ValueError(
            f'{name} holds only the values 0 and 1: it is already a 0/1 class-index mask, and '
            f"the threshold {threshold} would make it all background. Load it with mmseg's "
            f'LoadAnnotations (or store the foreground as 255).'
        )
    return foreground.astype(np.uint8)


def read_binary_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """:func:`load_mask` then :func:`binarize_mask`: a 0/1 ``(H, W)`` uint8 mask."""
    return binarize_mask(load_mask(path), threshold, path)


def _colour_codes(mask: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(H, W)`` int64 codes ``r << 16 | g << 8 | b``."""
    m = mask.astype(np.int64)
    return (m[..., 0] << 16) | (m[..., 1] << 8) | m[..., 2]


def colours_to_index(
    mask: np.ndarray,
    colour_to_index: Callable[[tuple[int, int, int]], int | None],
    name: str | Path,
    expected: str,
) -> np.ndarray:
    """Map every colour of an RGB mask to a class index.

    Args:
        mask: uint8 ``(H, W, 3)`` RGB mask.
        colour_to_index: Returns the class index of an ``(r, g, b)`` colour, or
            ``None`` for a colour that is not allowed.
        name: How to call the mask in errors.
        expected: Description of the allowed colours, for the error message.

    Returns:
        uint8 ``(H, W)`` class-index mask.

    Raises:
        ValueError: If the mask is not RGB, or has a colour that maps to
            ``None`` (the message names the file, the colours and their pixel
            counts).
    """
    if mask.ndim != 3 or mask.shape[2] != 3:
        raise ValueError(f'{name}: expected an RGB colour mask, got an array of shape {mask.shape}')
    codes, inverse, counts = np.unique(_colour_codes(mask).ravel(), return_inverse=True, return_counts=True)
    lut = np.zeros(len(codes), np.uint8)
    unknown = []
    for i, code in enumerate(codes.tolist()):
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        index = colour_to_index(colour)
        if index is None:
            unknown.append(f'{colour} ({counts[i]} px)')
        else:
            lut[i] = index
    if unknown:
        raise ValueError(f'{name}: unknown colour(s) {_listing(unknown)}; expected {expected}')
    return lut[inverse].reshape(mask.shape[:2])


def check_indices(mask: np.ndarray, num_classes: int, name: str | Path) -> np.ndarray:
    """Return a ``(H, W)`` class-index mask after checking its values are < ``num_classes``.

    Raises:
        ValueError: If the mask is not single-channel or holds a value
            ``>= num_classes`` (the message names the file and the values).
    """
    if mask.ndim != 2:
        raise ValueError(f'{name}: expected a single-channel index mask, got shape {mask.shape}')
    bad = np.unique(mask[mask >= num_classes]).tolist()
    if bad:
        raise ValueError(f'{name}: class indices {bad} out of range; expected 0..{num_classes - 1}')
    return mask.astype(np.uint8)


def read_names(path: str | Path) -> set[str]:
    """Image names (stems) listed by a text file or held by a folder.

    Args:
        path: A text file with one name per line (an image extension is
            stripped; blank lines and ``#`` comments are skipped), or a folder
            whose file stems are the names (e.g. PraNet's
            ``TestDataset/Kvasir/images``).

    Returns:
        The set of names.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it lists no name.
    """
    path = Path(path)
    if path.is_dir():
        names = {p.stem for p in path.iterdir() if p.is_file() and not p.name.startswith('.')}
    elif path.is_file():
        names = set()
        for line in path.read_text().splitlines():
            line = line.split('#', 1)[0].strip()
            if line:
                names.add(
                    line[: -len(Path(line).suffix)] if Path(line).suffix.lower() in IMAGE_EXTENSIONS else line
                )
    else:
        raise FileNotFoundError(f'split list {path} does not exist')
    if not names:
        raise ValueError(f'split list {path} names no image')
    return names


def split_by_names(
    samples: Sequence[Sample], test_names: Collection[str], source: str | Path
) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into ``(train, test)``: test holds exactly ``test_names``.

    Raises:
        ValueError: If a test name is not among the samples (a different
            release, or a wrong list): the message names them.
    """
    names = {s.name for s in samples}
    absent = sorted(set(test_names) - names)
    if absent:
        raise ValueError(f'{len(absent)} test image(s) of the split are not in {source}: {_listing(absent)}')
    test_names = set(test_names)
    train = [s for s in samples if s.name not in test_names]
    test = [s for s in samples if s.name in test_names]
    return train, test


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file without decoding its pixels."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, SyntaxError) as err:
        raise ValueError(f'cannot decode the image {path}: {err}') from err


def _write_image(src: Path, dst: Path) -> None:
    """Copy a JPEG to ``.jpg`` or an RGB PNG to ``.png``; re-encode others as PNG."""
    suffix = src.suffix.lower()
    if dst.suffix == '.jpg':
        if suffix not in _JPEG:
            raise ValueError(f'{src}: expected a JPEG image (this dataset is stored as .jpg), got {suffix}')
        shutil.copyfile(src, dst)
        return
    with Image.open(src) as img:
        if suffix == '.png' and img.mode == 'RGB':
            shutil.copyfile(src, dst)
        else:
            img.convert('RGB').save(dst)


def _convert_one(job: tuple[Sample, Path, Path, Callable[[Path], np.ndarray]]) -> None:
    """Write one image and its class-index mask (a top-level function, so it pickles)."""
    sample, img_dst, ann_dst, mask_fn = job
    label = mask_fn(sample.mask)
    height, width = _image_size(sample.image)
    if label.shape != (height, width):
        raise ValueError(
            f'mask {sample.mask} is {label.shape[1]}x{label.shape[0]} (WxH) but its image '
            f'{sample.image} is {width}x{height}'
        )
    _write_image(sample.image, img_dst)
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(ann_dst)


def _prepare_dir(folder: Path, overwrite: bool) -> None:
    """Create ``folder``; refuse (or, with ``overwrite``, empty) a non-empty one."""
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f'{folder} is not empty; pass --overwrite to replace its files')
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def convert_splits(
    splits: Mapping[str, Sequence[Sample]],
    out_dir: str | Path,
    mask_fn: Callable[[Path], np.ndarray],
    image_suffix: str,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write the samples of each split in mmseg's ``img_dir``/``ann_dir`` layout.

    Args:
        splits: Split name -> samples, e.g. ``{'train': [...], 'test': [...]}``.
        out_dir: Output root.
        mask_fn: Reads a source mask and returns its uint8 ``(H, W)`` class
            indices; must be picklable when ``nproc > 1`` (a module-level
            function or a ``functools.partial`` of one).
        image_suffix: ``'.jpg'`` (source JPEGs are copied; other formats are an
            error) or ``'.png'`` (RGB PNGs are copied, other images re-encoded).
        nproc: Worker processes.
        overwrite: Replace the files of non-empty output split folders.

    Returns:
        Split name -> number of converted samples.

    Raises:
        ValueError: On a bad argument, an empty split, two samples of a split
            with the same name, a mask whose size differs from its image's, or
            a mask ``mask_fn`` rejects.
        FileExistsError: If an output split folder is not empty and
            ``overwrite`` is false.
    """
    if image_suffix not in _OUTPUT_IMAGE_SUFFIXES:
        raise ValueError(f'image_suffix must be one of {_OUTPUT_IMAGE_SUFFIXES}, got {image_suffix!r}')
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f'nproc must be an int >= 1, got {nproc!r}')
    out_dir = Path(out_dir)
    jobs = []
    for split, samples in splits.items():
        if not samples:
            raise ValueError(f'split {split!r} has no sample')
        seen: dict[str, Sample] = {}
        for s in samples:
            if s.name in seen:
                raise ValueError(
                    f'two images of split {split!r} would both be written as {s.name}: '
                    f'{seen[s.name].image} and {s.image}'
                )
            seen[s.name] = s
    for split, samples in splits.items():
        img_dir, ann_dir = out_dir / 'img_dir' / split, out_dir / 'ann_dir' / split
        _prepare_dir(img_dir, overwrite)
        _prepare_dir(ann_dir, overwrite)
        jobs += [
            (s, img_dir / f'{s.name}{image_suffix}', ann_dir / f'{s.name}.png', mask_fn) for s in samples
        ]
    if nproc == 1:
        for job in jobs:
            _convert_one(job)
    else:
        with multiprocessing.Pool(nproc) as pool:
            for _ in pool.imap_unordered(_convert_one, jobs, chunksize=16):
                pass
    counts = {split: len(samples) for split, samples in splits.items()}
    for split, n in counts.items():
        print(f'{split}: {n} images -> {out_dir / "img_dir" / split}, masks -> {out_dir / "ann_dir" / split}')
    return counts


def write_name_list(out_dir: str | Path, filename: str, names: Iterable[str]) -> Path:
    """Write ``out_dir/splits/filename`` with one name per line (an mmseg ``ann_file``)."""
    path = Path(out_dir) / 'splits' / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{n}\n' for n in sorted(names)))
    return path


def converter_parser(
    doc: str, default_out: str, binary: bool = True, threshold: int = 128
) -> argparse.ArgumentParser:
    """The command line every converter shares: ``SRC [-o OUT_DIR] [--nproc N] [--overwrite]``.

    Args:
        doc: The converter's module docstring (shown by ``--help``).
        default_out: Default of ``--out-dir``.
        binary: Add ``--threshold`` (binary masks).
        threshold: Default of ``--threshold`` (:data:`SOD_GT_THRESHOLD` for
            camouflage and polyp releases).

    Returns:
        The parser; converters may add their own options.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='root of the downloaded release (layout above)')
    parser.add_argument('-o', '--out-dir', default=default_out, help=f'output root (default: {default_out})')
    parser.add_argument('--nproc', type=int, default=1, help='worker processes (default: 1)')
    parser.add_argument('--overwrite', action='store_true', help='replace files in non-empty output folders')
    if binary:
        parser.add_argument(
            '--threshold',
            type=int,
            default=threshold,
            help=f'mask values >= this are foreground (default: {threshold}, for 0/255 and JPEG masks)',
        )
    return parser


def bytes_to_mask(data: bytes, name: str, palette_indices: bool = False) -> np.ndarray:
    """:func:`load_mask` on the bytes of a mask file (what mmengine's fileio returns)."""
    return load_mask(io.BytesIO(data), name, palette_indices)
