"""Tests for the synthetic demo dataset generator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmseg_sam.datasets.synthetic import generate_synthetic_dataset

_SIZE = (48, 80)  # (h, w), deliberately non-square


def _load(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All RGB images (N, h, w, 3) and masks (N, h, w) of a split."""
    names = sorted(p.name for p in (root / 'img_dir' / split).iterdir())
    images = [cv2.imread(str(root / 'img_dir' / split / n))[..., ::-1] for n in names]
    masks = [cv2.imread(str(root / 'ann_dir' / split / n), cv2.IMREAD_UNCHANGED) for n in names]
    return np.stack(images), np.stack(masks)


@pytest.fixture(scope='module')
def binary_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('binary')
    generate_synthetic_dataset(root, num_train=30, num_val=6, img_size=_SIZE)
    return root


@pytest.fixture(scope='module')
def multiclass_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('multiclass')
    generate_synthetic_dataset(root, num_train=30, num_val=6, img_size=_SIZE, mode='multiclass')
    return root


def test_layout_counts_and_shapes(binary_root: Path) -> None:
    for split, n in (('train', 30), ('val', 6)):
        names = [f'{i:05d}.png' for i in range(n)]
        for top in ('img_dir', 'ann_dir'):
            assert sorted(p.name for p in (binary_root / top / split).iterdir()) == names
        images, masks = _load(binary_root, split)
        assert images.shape == (n, *_SIZE, 3) and images.dtype == np.uint8
        assert masks.shape == (n, *_SIZE) and masks.dtype == np.uint8
    meta = json.loads((binary_root / 'meta.json').read_text())
    assert meta['num_train'] == 30 and meta['num_val'] == 6
    assert meta['img_size'] == list(_SIZE) and meta['mode'] == 'binary'
    assert not (binary_root / '.generating').exists()


def test_return_value(tmp_path: Path) -> None:
    info = generate_synthetic_dataset(tmp_path, num_train=1, num_val=1, img_size=32, mode='multiclass')
    assert info == {
        'root': str(tmp_path),
        'classes': ('background', 'stripes', 'checker', 'dots'),
        'palette': info['palette'],
        'num_train': 1,
        'num_val': 1,
    }
    assert len(info['palette']) == 4
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in info['palette'])
    binary = generate_synthetic_dataset(tmp_path / 'b', num_train=1, num_val=1)
    assert binary['classes'] == ('background', 'foreground')
    assert len(binary['palette']) == 2


def test_binary_mask_values_and_foreground_fraction(binary_root: Path) -> None:
    _, masks = _load(binary_root, 'train')
    assert set(np.unique(masks)) == {0, 1}
    assert 0.10 <= (masks > 0).mean() <= 0.60
    # Every image has at least one visible object.
    assert (masks.reshape(len(masks), -1).max(axis=1) == 1).all()


def test_multiclass_mask_values(multiclass_root: Path) -> None:
    _, masks = _load(multiclass_root, 'train')
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    assert 0.10 <= (masks > 0).mean() <= 0.60


def test_deterministic_given_seed(tmp_path: Path, binary_root: Path) -> None:
    same = tmp_path / 'same'
    generate_synthetic_dataset(same, num_train=30, num_val=6, img_size=_SIZE)
    other = tmp_path / 'other'
    generate_synthetic_dataset(other, num_train=30, num_val=6, img_size=_SIZE, seed=1)
    for split in ('train', 'val'):
        for top in ('img_dir', 'ann_dir'):
            for i in (0, 5):
                rel = Path(top, split, f'{i:05d}.png')
                assert (same / rel).read_bytes() == (binary_root / rel).read_bytes()
                assert (other / rel).read_bytes() != (binary_root / rel).read_bytes()


def test_train_and_val_use_different_streams(binary_root: Path) -> None:
    train, _ = _load(binary_root, 'train')
    val, _ = _load(binary_root, 'val')
    assert not np.array_equal(train[:6], val)


def test_second_call_does_not_rewrite(tmp_path: Path) -> None:
    kwargs = dict(num_train=3, num_val=2, img_size=32)
    generate_synthetic_dataset(tmp_path, **kwargs)
    files = sorted(tmp_path.rglob('*.png')) + [tmp_path / 'meta.json']
    for f in files:  # an old mtime that a rewrite would change
        os.utime(f, (1_000_000, 1_000_000))
    info = generate_synthetic_dataset(tmp_path, **kwargs)
    assert info['num_train'] == 3
    assert all(f.stat().st_mtime == 1_000_000 for f in files)


def test_parameter_mismatch_raises_unless_overwrite(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path, num_train=3, num_val=2, img_size=32)
    with pytest.raises(ValueError, match=r"'num_train': 3.*'num_train': 4"):
        generate_synthetic_dataset(tmp_path, num_train=4, num_val=2, img_size=32)
    with pytest.raises(ValueError, match=r"'mode': 'binary'.*'mode': 'multiclass'"):
        generate_synthetic_dataset(tmp_path, num_train=3, num_val=2, img_size=32, mode='multiclass')
    # overwrite regenerates, and removes the files of the larger old dataset.
    generate_synthetic_dataset(tmp_path, num_train=2, num_val=1, img_size=32, overwrite=True)
    assert len(list((tmp_path / 'img_dir' / 'train').iterdir())) == 2
    assert len(list((tmp_path / 'ann_dir' / 'val').iterdir())) == 1
    assert json.loads((tmp_path / 'meta.json').read_text())['num_train'] == 2


def test_incomplete_dataset_is_regenerated(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path, num_train=3, num_val=2, img_size=32)
    victim = tmp_path / 'ann_dir' / 'train' / '00001.png'
    expected = victim.read_bytes()
    victim.unlink()
    generate_synthetic_dataset(tmp_path, num_train=3, num_val=2, img_size=32)
    assert victim.read_bytes() == expected


def test_foreign_files_without_meta_raise(tmp_path: Path) -> None:
    folder = tmp_path / 'img_dir' / 'train'
    folder.mkdir(parents=True)
    (folder / 'someone_elses.png').write_bytes(b'x')
    with pytest.raises(ValueError, match='no meta.json'):
        generate_synthetic_dataset(tmp_path, num_train=1, num_val=1, img_size=32)
    assert (folder / 'someone_elses.png').exists()


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        (dict(num_train=0), ValueError, 'num_train must be >= 1, got 0'),
        (dict(num_val=-1), ValueError, 'num_val must be >= 1, got -1'),
        (dict(num_train=2.0), TypeError, 'num_train must be an int, got 2.0'),
        (dict(img_size=31), ValueError, r'img_size must be >= 32.*31'),
        (dict(img_size=(64, 16)), ValueError, r'img_size.*\(64, 16\)'),
        (dict(img_size=(64, 64, 3)), TypeError, r'img_size.*\(64, 64, 3\)'),
        (dict(mode='instance'), ValueError, "mode.*'instance'"),
        (dict(seed=-3), ValueError, 'seed must be >= 0, got -3'),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        generate_synthetic_dataset(tmp_path / 'ds', **kwargs)
    assert not (tmp_path / 'ds').exists()


def _balanced_accuracy(pred: np.ndarray, target: np.ndarray, k: int) -> float:
    return float(np.mean([(pred[target == c] == c).mean() for c in range(k)]))


@pytest.mark.parametrize('mode', ['binary', 'multiclass'])
def test_colour_alone_does_not_separate_classes(mode: str, binary_root: Path, multiclass_root: Path) -> None:
    """A nearest-class-mean colour classifier is close to chance level."""
    root, k = (binary_root, 2) if mode == 'binary' else (multiclass_root, 4)
    images, masks = _load(root, 'train')
    pixels = images.reshape(-1, 3).astype(np.float64)
    labels = masks.reshape(-1)
    means = np.stack([pixels[labels == c].mean(axis=0) for c in range(k)])
    dist = ((pixels[:, None, :] - means[None]) ** 2).sum(axis=-1)
    accuracy = _balanced_accuracy(dist.argmin(axis=1), labels, k)
    assert accuracy < 1 / k + 0.15


def test_texture_separates_foreground(binary_root: Path) -> None:
    """Local contrast alone tells object interiors from background well."""
    images, masks = _load(binary_root, 'train')
    kernel = np.ones((7, 7), np.uint8)
    contrast, labels = [], []
    for image, mask in zip(images, masks):
        x = image.astype(np.float32)
        mean = cv2.blur(x, (7, 7))
        std = np.sqrt(np.clip(cv2.blur(x * x, (7, 7)) - mean * mean, 0, None))
        # Keep pixels whose 7x7 window lies inside one class.
        pure = cv2.erode(mask, kernel) == cv2.dilate(mask, kernel)
        contrast.append(std.sum(axis=-1)[pure])
        labels.append(mask[pure])
    contrast, label = np.concatenate(contrast), np.concatenate(labels)
    # Noise (sigma <= 6 per channel) and smooth backgrounds stay below ~20; object
    # textures of well separated colours mostly exceed 50.
    accuracy = _balanced_accuracy((contrast > 30).astype(np.uint8), label, 2)
    assert accuracy > 0.9


@pytest.fixture(scope='module')
def hue_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('multiclass_hue')
    generate_synthetic_dataset(root, num_train=40, num_val=2, img_size=128, mode='multiclass_hue')
    return root


def test_multiclass_hue_classes_and_meta(hue_root: Path) -> None:
    _, masks = _load(hue_root, 'train')
    assert set(np.unique(masks)) == set(range(9))  # background + all 8 hue classes occur
    meta = json.loads((hue_root / 'meta.json').read_text())
    assert meta['mode'] == 'multiclass_hue'
    assert meta['classes'] == [
        'background',
        'hue0',
        'hue45',
        'hue90',
        'hue135',
        'hue180',
        'hue225',
        'hue270',
        'hue315',
    ]
    assert len(meta['palette']) == 9


def test_multiclass_hue_pixels_are_ambiguous_but_segments_are_not(hue_root: Path) -> None:
    """Nearest class hue per pixel is often wrong; the segment's mean hue mostly right.

    This is the property the toy exists for: the class is a property of the whole
    segment (see the module docstring), so a head that classifies segments has
    information that a per-pixel classifier must gather from context.
    """
    images, masks = _load(hue_root, 'train')
    pixel_acc, segment_ok, background_sat = [], [], []
    for image, mask in zip(images, masks):
        hsv = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)
        background_sat.append(hsv[..., 1][mask == 0].mean())
        for c in range(1, 9):
            hue = np.deg2rad(hsv[..., 0][mask == c])
            if hue.size < 20:
                continue
            pixel_acc.append(np.mean(np.rint(np.rad2deg(hue) / 45) % 8 == c - 1))
            mean_hue = np.rad2deg(np.arctan2(np.sin(hue).mean(), np.cos(hue).mean())) % 360
            segment_ok.append(np.rint(mean_hue / 45) % 8 == c - 1)
    assert np.mean(pixel_acc) < 0.72, np.mean(pixel_acc)  # measured 0.63
    assert np.mean(segment_ok) > 0.8, np.mean(segment_ok)  # measured 0.875
    assert np.mean(background_sat) < 0.15  # grey backgrounds: hue carries no background signal


def test_unknown_mode_lists_the_modes(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"mode must be one of \('binary', 'multiclass', 'multiclass_hue', 'multiclass_many'\), got 'hue'",
    ):
        generate_synthetic_dataset(tmp_path, num_train=1, num_val=1, img_size=32, mode='hue')
