"""Synthetic "textured objects on textured backgrounds" demo dataset.

The generated dataset follows mmseg's folder layout::

    root/
      img_dir/{train,val}/<name>.png   RGB images (stored by cv2 as BGR PNG)
      ann_dir/{train,val}/<name>.png   uint8 masks: 0 background, 1..K objects
      meta.json                        generation parameters, written last

Each image has a smooth, low-contrast background (smooth noise, a gradient or a
long-period wave) and 1-3 objects (ellipses and convex polygons) filled with a
fine, high-contrast texture. Both backgrounds and objects get random colours,
so colour alone does not tell objects from background: a model has to look at
texture. In ``'multiclass'`` mode the class of an object is its texture family
(stripes, checkerboard or dots); in ``'binary'`` mode all objects are class 1.

``'multiclass_hue'`` mode has 8 object classes, the hue families 0, 45, ..., 315
degrees, on grey backgrounds. Inside each object the hue varies smoothly (a noise
field of about 16-pixel cells) over the class hue +- 45 degrees, i.e. across
both neighbouring classes: any small patch is ambiguous between two classes,
while the object's average hue identifies its class. The class is a property of
the whole segment, as for many classes of natural images whose parts look alike.

``'multiclass_many'`` mode has 24 object classes, every pair of a texture family
(stripes, checker, dots) and a hue family (0, 45, ..., 315 degrees, +-10 degrees):
each object is its texture drawn in a light and a dark shade of its hue, on a near-grey
background. Telling the classes apart takes both the texture and the colour, and many
classes share each of them: the many-class task of the head comparison
(docs/multiclass.md).

Only numpy and OpenCV are used, so the generator runs without torch or mmseg.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ['generate_synthetic_dataset', 'SYNTHETIC_CLASSES', 'SYNTHETIC_PALETTE']

#: Bump when the images a given set of parameters produces change, so that an
#: existing dataset from an older generator is not silently reused.
GENERATOR_VERSION = 1

SYNTHETIC_CLASSES: dict[str, tuple[str, ...]] = {
    'binary': ('background', 'foreground'),
    'multiclass': ('background', 'stripes', 'checker', 'dots'),
    'multiclass_hue': ('background', *(f'hue{h}' for h in range(0, 360, 45))),
    'multiclass_many': (
        'background',
        *(f'{t}-hue{h}' for t in ('stripes', 'checker', 'dots') for h in range(0, 360, 45)),
    ),
}
SYNTHETIC_PALETTE: dict[str, list[list[int]]] = {
    'binary': [[0, 0, 0], [220, 20, 60]],
    'multiclass': [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]],
    'multiclass_hue': [
        [0, 0, 0],
        [255, 0, 0],
        [255, 191, 0],
        [128, 255, 0],
        [0, 255, 64],
        [0, 255, 255],
        [0, 64, 255],
        [128, 0, 255],
        [255, 0, 191],
    ],
}

_TEXTURES = ('stripes', 'checker', 'dots')
_MANY_HUE_JITTER = 10.0  # degrees a 'multiclass_many' object's hue strays from its family's


def _hsv_to_rgb(hue: float, sat: float, val: float) -> list[int]:
    """One colour: hue in degrees, saturation and value in [0, 1] -> [r, g, b] in 0..255."""
    hsv = np.array([[[hue % 360, sat, val]]], np.float32)
    return [int(round(c * 255)) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]]


SYNTHETIC_PALETTE['multiclass_many'] = [
    [0, 0, 0],
    *(_hsv_to_rgb(h, 1.0, val) for val in (1.0, 0.75, 0.5) for h in range(0, 360, 45)),
]
_HUE_SPACING = 45.0  # degrees between the class hues of 'multiclass_hue'
_HUE_CELL = 16  # pixels per cell of the within-object hue noise (at 128 px)
_SPLITS = ('train', 'val')
_META = 'meta.json'
_IN_PROGRESS = '.generating'
_MIN_SIZE = 32


def _check_count(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f'{name} must be an int, got {value!r}')
    if value < 1:
        raise ValueError(f'{name} must be >= 1, got {value}')
    return int(value)


def _check_img_size(img_size: Any) -> tuple[int, int]:
    """Normalise ``img_size`` (int or ``(h, w)``) to ``(h, w)``."""
    if isinstance(img_size, (int, np.integer)) and not isinstance(img_size, bool):
        size = (int(img_size), int(img_size))
    elif (
        isinstance(img_size, Sequence)
        and not isinstance(img_size, str)
        and len(img_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in img_size)
    ):
        size = (int(img_size[0]), int(img_size[1]))
    else:
        raise TypeError(f'img_size must be an int or a pair (h, w) of ints, got {img_size!r}')
    if min(size) < _MIN_SIZE:
        raise ValueError(f'img_size must be >= {_MIN_SIZE} on each side, got {img_size!r}')
    return size


def _rotated_coords(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle and shifted by a random offset."""
    theta = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = math.cos(theta), math.sin(theta)
    u = x * c + y * s + rng.uniform(0, 100)
    v = -x * s + y * c + rng.uniform(0, 100)
    return u, v


def _object_texture(rng: np.random.Generator, family: str, h: int, w: int, scale: float) -> np.ndarray:
    """A fine, high-contrast pattern in [0, 1] of the given family.

    Args:
        rng: Random generator.
        family: One of ``'stripes'``, ``'checker'``, ``'dots'``.
        h: Height in pixels.
        w: Width in pixels.
        scale: Multiplier of the pattern period (1 for 128-pixel images).

    Returns:
        A float32 ``(h, w)`` array in [0, 1].
    """
    u, v = _rotated_coords(rng, h, w)
    if family == 'stripes':
        period = max(rng.uniform(6, 12) * scale, 3.0)
        wave = np.sin(u * (2 * math.pi / period))
        return np.clip(wave * 2.0 + 0.5, 0, 1)  # soft square wave
    if family == 'checker':
        cell = max(rng.uniform(5, 9) * scale, 3.0)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if family == 'dots':
        period = max(rng.uniform(7, 11) * scale, 4.0)
        radius = period * rng.uniform(0.18, 0.28)
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        return np.clip(radius - np.sqrt(du * du + dv * dv) + 0.5, 0, 1)
    raise ValueError(f'unknown texture family {family!r}, expected one of {_TEXTURES}')


def _background_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth, low-frequency pattern in [0, 1] (noise, gradient or wave)."""
    kind = rng.integers(3)
    if kind == 0:  # smooth noise
        cells = int(rng.integers(2, 6))
        gh = max(2, round(cells * h / min(h, w)))
        gw = max(2, round(cells * w / min(h, w)))
        low = rng.random((gh, gw), dtype=np.float32)
        t = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # linear gradient
        u, _ = _rotated_coords(rng, h, w)
        t = u
    else:  # long-period wave
        u, v = _rotated_coords(rng, h, w)
        period = rng.uniform(0.4, 1.0) * min(h, w)
        t = np.sin(u * (2 * math.pi / period)) + 0.5 * np.sin(v * (2 * math.pi / period))
    t = t - t.min()
    return t / max(float(t.max()), 1e-6)


def _colour_pair(rng: np.random.Generator, min_dist: float, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours whose distance lies in ``[min_dist, max_dist]``."""
    while True:
        c1 = rng.uniform(0, 255, 3)
        direction = rng.normal(size=3)
        direction /= max(np.linalg.norm(direction), 1e-6)
        c2 = c1 + direction * rng.uniform(min_dist, max_dist)
        if np.all((c2 >= 0) & (c2 <= 255)):
            return c1.astype(np.float32), c2.astype(np.float32)


def _blend(t: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Map a [0, 1] pattern to colours between ``c1`` and ``c2``: (h, w, 3)."""
    return c1 + t[..., None] * (c2 - c1)


def _object_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random ellipse or convex polygon as a uint8 0/1 mask.

    The object's area equals that of a disc whose diameter is 15-45% of the
    shorter image side; it is placed so that it lies (nearly) inside the image.
    """
    short = min(h, w)
    diameter = rng.uniform(0.15, 0.45) * short
    area = math.pi * diameter * diameter / 4
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        aspect = rng.uniform(0.45, 1.0)
        a = math.sqrt(area / (math.pi * aspect))  # semi-axes a >= b, a*b*pi = area
        b = a * aspect
        reach = a
        pts = None
    else:
        n = int(rng.integers(3, 9))
        hull_area = 0.0
        while hull_area < 0.8:  # reject slivers (a unit disc has area pi)
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = rng.uniform(0.6, 1.0, n)
            pts = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
            hull = cv2.convexHull(pts.astype(np.float32))[:, 0]
            hull_area = cv2.contourArea(hull)
        pts = hull * math.sqrt(area / hull_area)
        reach = float(np.max(np.linalg.norm(pts, axis=1)))
    cy = rng.uniform(min(reach, h / 2), max(h - reach, h / 2))
    cx = rng.uniform(min(reach, w / 2), max(w - reach, w / 2))
    if pts is None:
        cv2.ellipse(
            mask,
            (round(cx), round(cy)),
            (max(1, round(a)), max(1, round(b))),
            rng.uniform(0, 180),
            0,
            360,
            1,
            thickness=-1,
        )
    else:
        poly = np.round(pts + np.array([cx, cy])).astype(np.int32)
        cv2.fillPoly(mask, [poly], 1)
    return mask


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Bicubically upsampled uniform noise with about ``cell``-pixel cells, in [0, 1]."""
    low = rng.random((max(2, round(h / cell)), max(2, round(w / cell))), dtype=np.float32)
    t = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(t, 0, 1)


def _render_hue_sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``'multiclass_hue'`` image: hue-class objects on a grey background."""
    scale = max(min(h, w) / 128, 0.5)
    g1 = rng.uniform(40, 215)
    g2 = np.clip(g1 + rng.uniform(-40, 40), 0, 255)
    tint = rng.normal(0, 4, 3)  # a near-grey background: objects are told apart by hue, not saturation alone
    image = _blend(_background_texture(rng, h, w), g1 + tint, g2 + tint).astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    num_objects = int(rng.choice([1, 2, 3], p=[0.25, 0.4, 0.35]))
    num_classes = len(SYNTHETIC_CLASSES['multiclass_hue']) - 1
    for _ in range(num_objects):
        label = int(rng.integers(num_classes))
        obj = _object_mask(rng, h, w).astype(bool)
        noise = _smooth_noise(rng, h, w, _HUE_CELL * scale)
        hue = (label * _HUE_SPACING + (2 * noise - 1) * _HUE_SPACING) % 360
        sat = np.full((h, w), rng.uniform(0.55, 1.0), np.float32)
        val = rng.uniform(0.6, 1.0) * (0.85 + 0.15 * _smooth_noise(rng, h, w, 4 * scale))
        rgb = cv2.cvtColor(np.stack([hue, sat, val], axis=-1).astype(np.float32), cv2.COLOR_HSV2RGB)
        image[obj] = rgb[obj] * 255
        mask[obj] = label + 1
    image += rng.normal(0, rng.uniform(2, 6), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _render_many_sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``'multiclass_many'`` image: objects of 24 texture x hue classes on a near-grey background."""
    scale = max(min(h, w) / 128, 0.5)
    g1 = rng.uniform(40, 215)
    g2 = np.clip(g1 + rng.uniform(-40, 40), 0, 255)
    tint = rng.normal(0, 4, 3)
    image = _blend(_background_texture(rng, h, w), g1 + tint, g2 + tint).astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    num_hues = len(SYNTHETIC_CLASSES['multiclass_many'][1:]) // len(_TEXTURES)
    for _ in range(int(rng.choice([1, 2, 3, 4], p=[0.15, 0.3, 0.3, 0.25]))):
        label = int(rng.integers(len(_TEXTURES) * num_hues))
        family, hue_class = divmod(label, num_hues)
        obj = _object_mask(rng, h, w).astype(bool)
        hue = hue_class * 360 / num_hues + rng.uniform(-_MANY_HUE_JITTER, _MANY_HUE_JITTER)
        light = np.array(_hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0)), np.float32)
        dark = np.array(_hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.25, 0.5)), np.float32)
        image[obj] = _blend(_object_texture(rng, _TEXTURES[family], h, w, scale), dark, light)[obj]
        mask[obj] = label + 1
    image += rng.normal(0, rng.uniform(2, 6), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _render_sample(rng: np.random.Generator, h: int, w: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its mask.

    Args:
        rng: Random generator (advanced by the call).
        h: Image height.
        w: Image width.
        mode: ``'binary'``, ``'multiclass'``, ``'multiclass_hue'`` or ``'multiclass_many'``.

    Returns:
        ``(image, mask)``: an RGB uint8 ``(h, w, 3)`` array and a uint8
        ``(h, w)`` class-index mask.
    """
    if mode == 'multiclass_hue':
        return _render_hue_sample(rng, h, w)
    if mode == 'multiclass_many':
        return _render_many_sample(rng, h, w)
    scale = max(min(h, w) / 128, 0.5)
    c1, c2 = _colour_pair(rng, 25, 70)
    image = _blend(_background_texture(rng, h, w), c1, c2)
    mask = np.zeros((h, w), np.uint8)
    num_objects = int(rng.choice([1, 2, 3], p=[0.25, 0.4, 0.35]))
    for _ in range(num_objects):
        label = int(rng.integers(len(_TEXTURES)))
        obj = _object_mask(rng, h, w).astype(bool)
        o1, o2 = _colour_pair(rng, 130, 260)
        texture = _object_texture(rng, _TEXTURES[label], h, w, scale)
        image[obj] = _blend(texture, o1, o2)[obj]
        mask[obj] = label + 1 if mode == 'multiclass' else 1
    image += rng.normal(0, rng.uniform(2, 6), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _split_dirs(root: Path) -> list[Path]:
    return [root / top / split for top in ('img_dir', 'ann_dir') for split in _SPLITS]


def _is_complete(root: Path, counts: dict[str, int]) -> bool:
    """Whether every expected image and mask file exists."""
    for split in _SPLITS:
        names = {f'{i:05d}.png' for i in range(counts[split])}
        for top in ('img_dir', 'ann_dir'):
            folder = root / top / split
            if not folder.is_dir() or not names <= {p.name for p in folder.iterdir()}:
                return False
    return True


def generate_synthetic_dataset(
    root: str | Path,
    num_train: int = 200,
    num_val: int = 40,
    img_size: int | tuple[int, int] = 128,
    mode: str = 'binary',
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the synthetic demo dataset in mmseg's folder layout.

    Images are written to ``root/img_dir/{train,val}/NNNNN.png`` and masks to
    ``root/ann_dir/{train,val}/NNNNN.png``; ``root/meta.json`` records the
    parameters and is written after all images. Calling again with the same
    parameters on a complete dataset returns without writing anything.

    Args:
        root: Output directory; created if missing.
        num_train: Number of training images (>= 1).
        num_val: Number of validation images (>= 1).
        img_size: Image size, an int for square images or ``(h, w)``; every
            side must be >= 32.
        mode: ``'binary'`` (class 1 for every object), ``'multiclass'``
            (classes 1-3 = stripes, checkerboard, dots texture) or
            ``'multiclass_hue'`` (classes 1-8 = hue families) or ``'multiclass_many'``
            (classes 1-24 = texture x hue families; see the module docstring).
        seed: Seed of the random streams; train and validation images come
            from different streams derived from it.
        overwrite: Regenerate even if ``root`` holds a dataset made with other
            parameters or files of unknown origin.

    Returns:
        A dict with ``'root'`` (str), ``'classes'`` (tuple of class names),
        ``'palette'`` (list of ``[r, g, b]``), ``'num_train'`` and
        ``'num_val'``.

    Raises:
        TypeError: If a count, ``img_size`` or ``seed`` has the wrong type.
        ValueError: If a count is < 1, a side of ``img_size`` is < 32, ``mode``
            is unknown or ``seed`` is negative; or, unless ``overwrite``, if
            ``root`` holds a dataset generated with different parameters or
            image/mask folders without a ``meta.json``.
    """
    num_train = _check_count('num_train', num_train)
    num_val = _check_count('num_val', num_val)
    h, w = _check_img_size(img_size)
    if mode not in SYNTHETIC_CLASSES:
        raise ValueError(f'mode must be one of {tuple(SYNTHETIC_CLASSES)}, got {mode!r}')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f'seed must be an int, got {seed!r}')
    if seed < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')

    root = Path(root)
    params = {
        'generator_version': GENERATOR_VERSION,
        'num_train': num_train,
        'num_val': num_val,
        'img_size': [h, w],
        'mode': mode,
        'seed': int(seed),
    }
    info = {
        'root': str(root),
        'classes': SYNTHETIC_CLASSES[mode],
        'palette': [list(c) for c in SYNTHETIC_PALETTE[mode]],
        'num_train': num_train,
        'num_val': num_val,
    }
    counts = {'train': num_train, 'val': num_val}

    meta_path = root / _META
    marker = root / _IN_PROGRESS
    if not overwrite:
        if meta_path.is_file():
            existing = json.loads(meta_path.read_text())
            existing_params = {k: existing.get(k) for k in params}
            if existing_params != params:
                raise ValueError(
                    f'{root} already holds a synthetic dataset generated with '
                    f'{existing_params}, but {params} was requested; use another '
                    f'root or overwrite=True'
                )
            if _is_complete(root, counts):
                return info
        elif not marker.exists() and any(d.is_dir() and any(d.iterdir()) for d in _split_dirs(root)):
            raise ValueError(
                f'{root} holds img_dir/ann_dir files but no {_META}, so they were '
                f'not made by this generator; use another root or overwrite=True'
            )

    # Start from empty split folders so no stale images survive.
    meta_path.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(params))
    for folder in _split_dirs(root):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob('*.png'):
            old.unlink()

    train_seq, val_seq = np.random.SeedSequence(int(seed)).spawn(2)
    for split, seq in zip(_SPLITS, (train_seq, val_seq)):
        rng = np.random.default_rng(seq)
        for i in range(counts[split]):
            image, mask = _render_sample(rng, h, w, mode)
            name = f'{i:05d}.png'
            if not (
                cv2.imwrite(str(root / 'img_dir' / split / name), image[..., ::-1])
                and cv2.imwrite(str(root / 'ann_dir' / split / name), mask)
            ):
                raise OSError(f'could not write {split} sample {name} under {root}')

    meta = dict(params, classes=list(info['classes']), palette=info['palette'])
    meta_path.write_text(json.dumps(meta, indent=2) + '\n')
    marker.unlink()
    return info
