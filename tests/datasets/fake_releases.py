"""Tiny fake copies of the benchmark releases, each in the layout it is published in.

Every builder writes a few small, non-square images with masks in the release's
own format (0/255 PNG, JPEG-compressed masks, TIFF, colour and palette PNGs) and
returns the class-index labels the converter must produce.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from mmseg_sam.datasets.trans10k import TRANS10K_V2_METAINFO
from tests.conftest import load_tool

SIZE = (40, 56)  # (H, W), non-square so a swapped width and height shows

_Labels = dict[str, dict[str, np.ndarray]]  # split -> name -> expected (H, W) class indices


@dataclass
class FakeRelease:
    """A fake release and what its conversion must give.

    Attributes:
        root: Root of the release (the converter's SRC).
        labels: split -> image name -> expected uint8 class-index label.
        image_suffix: Suffix of the converted images.
        jpeg_masks: Masks are JPEG-compressed (labels match up to edge pixels).
        kwargs: Extra keyword arguments of the converter's ``convert``.
        subsets: Named subsets of a split (Trans10K-v1: ``test_hard``) -> names.
    """

    root: Path
    labels: _Labels
    image_suffix: str
    jpeg_masks: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    subsets: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {split: len(names) for split, names in self.labels.items()}


def load_converter(name: str) -> ModuleType:
    """Import ``tools/dataset_converters/<name>.py`` (registered in sys.modules so it pickles)."""
    module_name = f'dataset_converter_{name}'
    if module_name not in sys.modules:
        load_tool(f'tools/dataset_converters/{name}.py', module_name)
    return sys.modules[module_name]


def _seed(name: str) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(name)) % (2**31)


def blob(name: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A random ellipse, never empty nor full: bool ``(H, W)``."""
    rng = np.random.default_rng(_seed(name))
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def write_image(path: Path, size: tuple[int, int] = SIZE) -> None:
    """A random RGB image, in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(_seed(path.name))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def write_binary_mask(path: Path, foreground: np.ndarray, kind: str = 'L') -> None:
    """Save a foreground mask as a release would.

    Args:
        path: Output file; its suffix picks the format (.png, .jpg, .tif).
        foreground: bool ``(H, W)``.
        kind: ``'L'`` grey 0/255, ``'RGB'`` white on black, ``'red'`` red on black.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = foreground.astype(np.uint8) * 255
    if kind == 'L':
        img = Image.fromarray(grey)
    elif kind == 'RGB':
        img = Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    elif kind == 'red':
        rgb = np.zeros((*grey.shape, 3), np.uint8)
        rgb[..., 0] = grey
        img = Image.fromarray(rgb)
    else:
        raise ValueError(kind)
    img.save(path, quality=75) if path.suffix == '.jpg' else img.save(path)


def _binary_pairs(
    images: Path, masks: Path, names: list[str], img_ext: str, mask_ext: str, kind: str = 'L', mask_stem=None
) -> dict[str, np.ndarray]:
    labels = {}
    for name in names:
        fg = blob(name)
        write_image(images / f'{name}{img_ext}')
        write_binary_mask(masks / f'{mask_stem(name) if mask_stem else name}{mask_ext}', fg, kind)
        labels[name] = fg.astype(np.uint8)
    return labels


def cod10k(root: Path) -> FakeRelease:
    labels = {}
    for split, folder in (('train', 'Train'), ('test', 'Test')):
        cam = [f'COD10K-CAM-1-Aquatic-1-BatFish-{split}1', f'COD10K-CAM-2-Terrestrial-23-Cat-{split}2']
        labels[split] = _binary_pairs(
            root / folder / 'Image', root / folder / 'GT_Object', cam, '.jpg', '.png'
        )
        noncam = f'COD10K-NonCAM-5-Background-1-Sky-{split}3'
        write_image(root / folder / 'Image' / f'{noncam}.jpg')
        write_binary_mask(root / folder / 'GT_Object' / f'{noncam}.png', np.zeros(SIZE, bool))
        write_binary_mask(root / folder / 'GT_Edge' / f'{cam[0]}.png', blob(cam[0]))  # not used
    return FakeRelease(root, labels, '.jpg')


def camo(root: Path) -> FakeRelease:
    labels = {
        'train': _binary_pairs(
            root / 'Images/Train', root / 'GT', ['camourflage_00001', 'camourflage_00003'], '.jpg', '.png'
        ),
        'test': _binary_pairs(root / 'Images/Test', root / 'GT', ['camourflage_00002'], '.jpg', '.png'),
    }
    return FakeRelease(root, labels, '.jpg')


def chameleon(root: Path) -> FakeRelease:
    return FakeRelease(
        root,
        {'test': _binary_pairs(root / 'Imgs', root / 'GT', ['animal-1', 'animal-2'], '.jpg', '.png')},
        '.jpg',
    )


def sbu(root: Path) -> FakeRelease:
    labels = {}
    for split, folder, names in (
        ('train', 'SBUTrain4KRecoveredSmall', ['lssd1', 'lssd2']),
        ('test', 'SBU-Test', ['lssd9']),
    ):
        labels[split] = _binary_pairs(
            root / folder / 'ShadowImages', root / folder / 'ShadowMasks', names, '.jpg', '.png'
        )
    return FakeRelease(root, labels, '.jpg')


def istd(root: Path) -> FakeRelease:
    labels = {}
    for split, names in (('train', ['1-1', '1-2']), ('test', ['90-1'])):
        labels[split] = _binary_pairs(
            root / split / f'{split}_A', root / split / f'{split}_B', names, '.png', '.png'
        )
        for name in names:
            write_image(root / split / f'{split}_C' / f'{name}.png')  # shadow-free images, not used
    return FakeRelease(root, labels, '.png')


def kvasir_seg(root: Path) -> FakeRelease:
    names = [
        'cju0qkwl35piu0993l0dewei2',
        'cju0qoxqj9q6s0835b43399p4',
        'cju0roawvklrq0799vmjorwfv',
        'cju0rx1idathl0835detmsp84',
    ]
    all_labels = _binary_pairs(
        root / 'images', root / 'masks', names, '.jpg', '.jpg'
    )  # Kvasir's masks are JPEGs
    (root / 'kavsir_bboxes.json').write_text('{}')
    test_list = root.parent / f'{root.name}_test.txt'
    test_list.write_text(f'# test split\n{names[2]}.jpg\n')
    labels = {
        'train': {n: all_labels[n] for n in names if n != names[2]},
        'test': {names[2]: all_labels[names[2]]},
    }
    return FakeRelease(root, labels, '.jpg', jpeg_masks=True, kwargs=dict(test_list=test_list))


def cvc_clinicdb(root: Path) -> FakeRelease:
    names = ['1', '2', '3', '4']
    all_labels = _binary_pairs(root / 'Original', root / 'Ground Truth', names, '.tif', '.tif', kind='RGB')
    test_dir = root.parent / f'{root.name}_pranet_test_images'  # a folder naming the test frames
    write_image(test_dir / '3.png')
    labels = {'train': {n: all_labels[n] for n in names if n != '3'}, 'test': {'3': all_labels['3']}}
    return FakeRelease(root, labels, '.png', kwargs=dict(test_list=test_dir))


def isic2017(root: Path) -> FakeRelease:
    labels = {}
    for split, part, names in (
        ('train', 'Training', ['ISIC_0000000', 'ISIC_0000001']),
        ('val', 'Validation', ['ISIC_0001769']),
        ('test', 'Test_v2', ['ISIC_0012086']),
    ):
        data = root / f'ISIC-2017_{part}_Data'
        labels[split] = _binary_pairs(
            data,
            root / f'ISIC-2017_{part}_Part1_GroundTruth',
            names,
            '.jpg',
            '.png',
            mask_stem=lambda n: f'{n}_segmentation',
        )
        write_image(data / f'{names[0]}_superpixels.png')  # not an image of the dataset
        (data / f'ISIC-2017_{part}_Data_metadata.csv').write_text('image_id,age_approximate,sex\n')
    return FakeRelease(root, labels, '.jpg')


def leaf_disease(root: Path) -> FakeRelease:
    orig = root / 'orig_data'
    labels = {
        'train': _binary_pairs(
            orig / 'train_images', orig / 'train_masks', ['00000_0', '00001_0'], '.jpg', '.png', kind='RGB'
        ),
        'test': _binary_pairs(
            orig / 'valid_images', orig / 'valid_masks', ['00100_0'], '.jpg', '.png', kind='RGB'
        ),
    }
    write_image(root / 'aug_data/train_images/00000_0_aug.jpg')  # not used
    return FakeRelease(root, labels, '.jpg')


def massachusetts_roads(root: Path) -> FakeRelease:
    tiff = root / 'tiff'
    labels = {}
    for split, names in (
        ('train', ['10078660_15', '10228690_15']),
        ('val', ['10378780_15']),
        ('test', ['10378780_16']),
    ):
        labels[split] = _binary_pairs(
            tiff / split, tiff / f'{split}_labels', names, '.tiff', '.tif', kind='RGB'
        )
    return FakeRelease(root, labels, '.png')


_V1_COLOURS = {0: (0, 0, 0), 1: (255, 0, 0), 2: (255, 255, 255)}


def _two_class_label(name: str) -> np.ndarray:
    """Background 0 with a class-1 blob and a class-2 blob."""
    label = np.zeros(SIZE, np.uint8)
    label[blob(name + 'a')] = 1
    label[blob(name + 'b')] = 2
    return label


def trans10k_v1(root: Path) -> FakeRelease:
    def pairs(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
        out = {}
        for name in names:
            label = _two_class_label(name)
            rgb = np.zeros((*SIZE, 3), np.uint8)
            for index, colour in _V1_COLOURS.items():
                rgb[label == index] = colour
            write_image(folder / 'images' / f'{name}.jpg')
            (folder / 'masks').mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(folder / 'masks' / f'{name}_mask.png')
            out[name] = label
        return out

    labels = {'train': pairs(root / 'train', ['1', '2'])}
    subsets = {}
    for split, folder, easy, hard in (
        ('val', 'validation', ['101'], ['102']),
        ('test', 'test', ['201'], ['202', '203']),
    ):
        subsets[f'{split}_easy'] = pairs(root / folder / 'easy', easy)
        subsets[f'{split}_hard'] = pairs(root / folder / 'hard', hard)
        labels[split] = {**subsets[f'{split}_easy'], **subsets[f'{split}_hard']}
    return FakeRelease(root, labels, '.jpg', subsets={k: sorted(v) for k, v in subsets.items()})


def _v2_label(name: str) -> np.ndarray:
    rng = np.random.default_rng(_seed(name))
    label = np.zeros(SIZE, np.uint8)
    a, b = rng.choice(np.arange(1, 12), 2, replace=False)
    label[blob(name + 'a')] = a
    label[blob(name + 'b')] = b
    return label


def trans10k_v2(root: Path) -> FakeRelease:
    """train: palette PNGs (indices), validation: RGB colour PNGs, test: grey index PNGs."""
    palette = TRANS10K_V2_METAINFO['palette']
    labels: _Labels = {}
    for split, folder, names, kind in (
        ('train', 'train', ['1', '2'], 'P'),
        ('val', 'validation', ['5001'], 'RGB'),
        ('test', 'test', ['6001'], 'L'),
    ):
        labels[split] = {}
        for name in names:
            label = _v2_label(name)
            write_image(root / folder / 'images' / f'{name}.jpg')
            if kind == 'P':
                img = Image.frombytes('P', (label.shape[1], label.shape[0]), label.tobytes())
                img.putpalette([v for c in palette for v in c])
            elif kind == 'RGB':
                img = Image.fromarray(np.asarray(palette, np.uint8)[label])
            else:
                img = Image.fromarray(label)
            (root / folder / 'masks_12').mkdir(parents=True, exist_ok=True)
            img.save(root / folder / 'masks_12' / f'{name}_mask.png')
            labels[split][name] = label
    return FakeRelease(root, labels, '.jpg')


RELEASES: dict[str, Callable[[Path], FakeRelease]] = {
    'cod10k': cod10k,
    'camo': camo,
    'chameleon': chameleon,
    'sbu': sbu,
    'istd': istd,
    'kvasir_seg': kvasir_seg,
    'cvc_clinicdb': cvc_clinicdb,
    'isic2017': isic2017,
    'leaf_disease': leaf_disease,
    'massachusetts_roads': massachusetts_roads,
    'trans10k_v1': trans10k_v1,
    'trans10k_v2': trans10k_v2,
}


def build_and_convert(name: str, tmp: Path) -> tuple[FakeRelease, Path]:
    """Write the fake release ``name`` under ``tmp/src`` and convert it to ``tmp/out``."""
    release = RELEASES[name](tmp / 'src' / name)
    out = tmp / 'out' / name
    load_converter(name).convert(release.root, out, **release.kwargs)
    return release, out
