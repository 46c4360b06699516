"""What prompted inference writes: per-image label maps of the objects, and one scores file.

``tools/infer.py`` writes ``masks/<stem>.png`` per image (0 background, ``j + 1`` for
object ``j``) and ``scores.json``, ``{"<image file name>": [IoU of object 0, ...]}`` for
every image whose mask is in the folder. Runs into the same folder add to
``scores.json``: an image segmented again replaces its entry (and its mask), which the
tool reports; the file is replaced atomically, so an interrupted run leaves the
previous one whole.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .inference import label_map_array

__all__ = ['mask_name', 'read_scores', 'save_instance_map', 'write_scores']


def mask_name(image_name: str) -> str:
    """The mask file an image's prediction is written to: ``<stem>.png``."""
    return f'{Path(image_name).stem}.png'


def save_instance_map(label_map: np.ndarray | torch.Tensor, num_objects: int, path: Path) -> int:
    """Write a label map of ``num_objects`` objects as a greyscale PNG; returns its bit depth.

    An 8-bit PNG holds up to 255 objects; with more the PNG is 16-bit (up to 65535),
    which Pillow, OpenCV (``IMREAD_UNCHANGED``) and scikit-image read as the same values.

    Args:
        label_map: (H, W) or (1, H, W) integers, 0 background and ``j + 1`` for object ``j``.
        num_objects: the number of objects the map was made from (sets the bit depth).
        path: the PNG to write (folders are created).

    Returns:
        int: 8 or 16.
    """
    label_map = label_map_array(label_map, 'a label map')
    if num_objects > 65535:
        raise ValueError(f'{num_objects} objects do not fit a 16-bit PNG (at most 65535)')
    if label_map.size and (label_map.min() < 0 or label_map.max() > num_objects):
        raise ValueError(
            f'label map values [{label_map.min()}, {label_map.max()}] outside [0, {num_objects}] for {num_objects} objects'
        )
    bits = 8 if num_objects <= 255 else 16
    image = Image.fromarray(label_map.astype(np.uint8 if bits == 8 else np.uint16))  # mode L or I;16
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return bits


def read_scores(path: Path) -> dict[str, list[float]]:
    """The entries of an existing ``scores.json`` (none when the file does not exist).

    Raises:
        ValueError: the file is not a JSON object of lists of numbers, so merging into
            it would lose it.
    """
    if not path.exists():
        return {}
    remedy = 'move it away or write to another --out-dir'
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f'{path} exists but is not JSON ({err}); new scores would replace it: {remedy}'
        ) from err
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(
            f'{path} exists but is not a scores file ({{"<image file name>": [score, ...]}}); new scores would '
            f'replace it: {remedy}'
        )
    return data


def write_scores(
    path: Path, earlier: dict[str, list[float]], new: dict[str, list[float]]
) -> tuple[list[str], int]:
    """Merge ``new`` entries into ``earlier`` ones and replace ``path`` atomically.

    An earlier entry goes when a new one writes its mask (the same file name, or the same
    stem: ``a.jpg`` replaces the mask of ``a.png``).

    Args:
        path: the scores file.
        earlier: its entries before this run (:func:`read_scores`).
        new: this run's entries, image file name -> scores.

    Returns:
        tuple: the earlier entries replaced, and how many earlier entries were kept.
    """
    masks = {mask_name(name) for name in new}
    replaced = [name for name in earlier if mask_name(name) in masks]
    merged = {name: scores for name, scores in earlier.items() if mask_name(name) not in masks}
    kept = len(merged)
    merged.update(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile('w', dir=path.parent, prefix=f'.{path.name}.', delete=False) as tmp:
        tmp.write(json.dumps(dict(sorted(merged.items())), indent=1))
    os.replace(tmp.name, path)
    return replaced, kept
