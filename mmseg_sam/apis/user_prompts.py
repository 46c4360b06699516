"""Prompts as a user gives them for inference: parsed, checked, and checked against each image.

``tools/infer.py`` takes prompts on the command line (``x0,y0,x1,y1`` boxes, ``x,y[,label]``
points, the same for every image) or as JSON files keyed by image file name::

    boxes.json   {"0001.png": [[x0, y0, x1, y1], ...]}            one object per box
    points.json  {"0001.png": [[x, y, label], ...]}               one object from all the points
                 {"0001.png": [[[x, y, label], ...], ...]}        one object per list

Coordinates are pixel coordinates of the original image in the project's tight-box
convention (``mmseg_sam.datasets.instances``): ``x1`` / ``y1`` are the last pixel
indices, inclusive, so a box satisfies ``0 <= x0 <= x1 <= W - 1`` and
``0 <= y0 <= y1 <= H - 1`` (``x0 == x1`` is a one-pixel-wide box), and a point
``0 <= x <= W - 1``, ``0 <= y <= H - 1``. A label is 1 (positive, the default) or 0
(negative).

Everything here runs before a model is built: a malformed value, a file naming an
image that is not an input, an input without prompts or an image that cannot be read
is an error naming the file, the image and the value, and what was expected.
"""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import torch
from mmengine.structures import InstanceData
from PIL import Image

__all__ = ['MAX_OBJECTS', 'ImagePrompts', 'parse_prompts', 'read_image_size']

MAX_OBJECTS = 65535  # objects per image: the label map is a 16-bit PNG with 0 for background

PromptObject = dict[str, Any]  # {'box': [x0, y0, x1, y1]} and / or {'points': [[x, y, label], ...]}

_BOX = '[x0, y0, x1, y1]'
_POINT = '[x, y] or [x, y, label]'


def _show(value: Any) -> str:
    """A JSON value as the user wrote it, with its JSON type, shortened."""
    kinds = {
        str: 'a string',
        dict: 'an object',
        list: 'a list',
        bool: 'a boolean',
        type(None): 'null',
        int: 'a number',
        float: 'a number',
    }
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    if len(text) > 80:
        text = text[:77] + '...'
    return f'{kinds.get(type(value), type(value).__name__)}, {text}'


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, where: str, expected: str) -> float:
    if not _is_number(value):
        raise ValueError(f'{where}: expected {expected} of numbers, got {_show(value)}')
    if not math.isfinite(value):
        raise ValueError(f'{where}: {value!r} is not a finite number')
    return float(value)


def _label(value: float, where: str) -> int:
    if value not in (0, 1):
        raise ValueError(f'{where}: point label {value!r} must be 1 (positive) or 0 (negative)')
    return int(value)


def _box(value: Any, where: str) -> list[float]:
    if not isinstance(value, list):
        raise ValueError(f'{where}: expected a box {_BOX}, got {_show(value)}')
    if len(value) != 4:
        raise ValueError(f'{where}: a box is {_BOX}, 4 numbers; got {len(value)} ({_show(value)})')
    return [_number(v, where, f'a box {_BOX}') for v in value]


def _point(value: Any, where: str) -> list[float]:
    if not isinstance(value, list):
        raise ValueError(f'{where}: expected a point {_POINT}, got {_show(value)}')
    if len(value) not in (2, 3):
        raise ValueError(f'{where}: a point is {_POINT}, 2 or 3 numbers; got {len(value)} ({_show(value)})')
    x, y, *label = (_number(v, where, f'a point {_POINT}') for v in value)
    return [x, y, _label(label[0], where) if label else 1]


def boxes_entry(value: Any, where: str) -> list[list[float]]:
    """One image's boxes in a boxes file: ``[[x0, y0, x1, y1], ...]``.

    Args:
        value: the JSON value.
        where: the file and image, for errors.

    Returns:
        list: the boxes as floats, one object each.
    """
    if not isinstance(value, list):
        raise ValueError(f'{where}: expected a list of boxes [{_BOX}, ...], got {_show(value)}')
    if not value:
        raise ValueError(f'{where}: the list of boxes is empty; give at least one box {_BOX}')
    if all(_is_number(v) for v in value):
        hint = f': one box is written [{json.dumps(value)}]' if len(value) == 4 else ''
        raise ValueError(f'{where}: expected a list of boxes [{_BOX}, ...], got a flat list of numbers{hint}')
    return [_box(box, f'{where}, box {k}') for k, box in enumerate(value)]


def points_entry(value: Any, where: str) -> list[list[list[float]]]:
    """One image's points in a points file, as objects (lists of ``[x, y, label]``).

    ``[[x, y, label], ...]`` is one object; ``[[[x, y, label], ...], ...]`` one object per list.

    Args:
        value: the JSON value.
        where: the file and image, for errors.
    """
    expected = f'a list of points [{_POINT}, ...] (one object) or of such lists (one object each)'
    if not isinstance(value, list):
        raise ValueError(f'{where}: expected {expected}, got {_show(value)}')
    if not value:
        raise ValueError(f'{where}: the list of points is empty; give at least one point {_POINT}')
    if all(_is_number(v) for v in value):
        hint = f': one point is written [{json.dumps(value)}]' if len(value) in (2, 3) else ''
        raise ValueError(f'{where}: expected {expected}, got a flat list of numbers{hint}')
    nested = isinstance(value[0], list) and bool(value[0]) and isinstance(value[0][0], list)
    objects = value if nested else [value]
    out = []
    for j, points in enumerate(objects):
        here = f'{where}, object {j}' if nested else where
        if not isinstance(points, list) or not points:
            raise ValueError(
                f'{here}: expected a non-empty list of points [{_POINT}, ...], got {_show(points)}'
            )
        out.append([_point(point, f'{here}, point {k}') for k, point in enumerate(points)])
    return out


def _numbers(text: str, counts: tuple[int, ...], option: str, expected: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) not in counts or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f'{option} {text.strip()!r} is neither a JSON file nor {expected} (comma-separated numbers)'
        )
    return values


def read_prompt_file(path: Path, option: str, names: Sequence[str]) -> dict[str, Any]:
    """A prompt file's JSON object, its keys checked against the input images' file names.

    Args:
        path: the JSON file.
        option: ``'--boxes'`` or ``'--points'``, for errors.
        names: the input images' file names.

    Raises:
        ValueError: not UTF-8 JSON, not an object, or a key that is no input's file name.
    """
    try:
        text = path.read_text(encoding='utf-8')
    except UnicodeDecodeError as err:
        raise ValueError(f'{option} file {path} is not a UTF-8 text file: {err}') from err
    if not text.strip():
        raise ValueError(
            f'{option} file {path} is empty: expected a JSON object {{"<image file name>": ...}}'
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f'{option} file {path} is not JSON: {err}') from err
    if not isinstance(data, dict):
        raise ValueError(
            f'{option} file {path} must be a JSON object mapping image file names to prompts, '
            f'{{"0001.png": ...}}; got {_show(data)}'
        )
    unknown = [key for key in data if key not in names]
    if unknown:
        by_name = {Path(key).name: key for key in unknown if Path(key).name in names}
        hint = (
            f'; keys are file names, not paths: write {json.dumps(next(iter(by_name)))} for '
            f'{json.dumps(next(iter(by_name.values())))}'
            if by_name
            else ''
        )
        shown = ', '.join(json.dumps(k) for k in unknown[:5]) + (', ...' if len(unknown) > 5 else '')
        some = ', '.join(sorted(names)[:3]) + (', ...' if len(names) > 3 else '')
        raise ValueError(
            f'{option} file {path} names {len(unknown)} image(s) that are not among the {len(names)} input '
            f'images ({some}): {shown}{hint}'
        )
    return data


def _per_image(
    values: list[str] | None,
    option: str,
    names: Sequence[str],
    literal: Callable[[list[str]], list],
    entry: Callable[[Any, str], list],
) -> tuple[dict[str, list] | None, str]:
    """Prompts per image name from one option, and where they came from (for errors)."""
    if not values:
        return None, ''
    files = [v for v in values if Path(v).suffix.lower() == '.json' or Path(v).is_file()]
    if not files:
        parsed = literal(values)
        return {name: parsed for name in names}, option
    if len(values) > 1:
        raise ValueError(f'{option}: give one JSON file, or values without a file; got {values}')
    path = Path(values[0])
    if not path.is_file():
        raise FileNotFoundError(f'{option} file not found: {path}')
    data = read_prompt_file(path, option, names)
    source = f'{option} file {path}'
    return {name: entry(value, f'{source}, image {name!r}') for name, value in data.items()}, source


def _literal_boxes(values: list[str]) -> list[list[float]]:
    """``x0,y0,x1,y1`` strings, one object each."""
    return [_numbers(text, (4,), '--boxes', 'x0,y0,x1,y1') for text in values]


def _literal_points(values: list[str]) -> list[list[list[float]]]:
    """``x,y[,label]`` strings as one object."""
    points = []
    for text in values:
        x, y, *label = _numbers(text, (2, 3), '--points', 'x,y or x,y,label')
        points.append([x, y, _label(label[0], f'--points {text.strip()!r}') if label else 1])
    return [points]


@dataclass
class ImagePrompts:
    """One image's objects and where their prompts came from.

    Attributes:
        name: the image's file name.
        objects: each ``{'box': [x0, y0, x1, y1]}`` and / or ``{'points': [[x, y, label], ...]}``.
        source: the options and files the prompts came from, for errors.
    """

    name: str
    objects: list[PromptObject]
    source: str

    def check_inside(self, height: int, width: int) -> None:
        """Refuse boxes and points outside a ``width`` x ``height`` image (see the module docstring)."""
        where = f'{self.source}, image {self.name!r}'
        rule = 'inclusive pixel indices of the original image'
        for j, obj in enumerate(self.objects):
            if 'box' in obj:
                x0, y0, x1, y1 = obj['box']
                if not (0 <= x0 <= x1 <= width - 1 and 0 <= y0 <= y1 <= height - 1):
                    raise ValueError(
                        f'{where}, object {j}: box {obj["box"]} does not fit the {width}x{height} (WxH) image: '
                        f'expected 0 <= x0 <= x1 <= {width - 1} and 0 <= y0 <= y1 <= {height - 1} ({rule}; '
                        'x0 == x1 is one pixel wide)'
                    )
            for x, y, _ in obj.get('points', []):
                if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                    raise ValueError(
                        f'{where}, object {j}: point ({x}, {y}) is outside the {width}x{height} (WxH) image: '
                        f'expected 0 <= x <= {width - 1} and 0 <= y <= {height - 1} ({rule})'
                    )

    def instances(self) -> InstanceData:
        """The objects as ``SAMPromptedEncoderDecoder.predict_with_prompts`` takes them.

        Returns:
            InstanceData: ``boxes`` (N, 4) when every object has a box; ``points`` (N, K, 2)
            and ``point_labels`` (N, K), padded with SAM's label -1, when any object has points.
        """
        data = InstanceData()
        if all('box' in obj for obj in self.objects):
            data.boxes = torch.tensor([obj['box'] for obj in self.objects], dtype=torch.float32)  # (N, 4)
        if any('points' in obj for obj in self.objects):
            k = max(len(obj.get('points', [])) for obj in self.objects)
            coords = torch.zeros(len(self.objects), k, 2)  # (N, K, 2)
            labels = torch.full((len(self.objects), k), -1, dtype=torch.long)  # (N, K)
            for j, obj in enumerate(self.objects):
                for i, (x, y, label) in enumerate(obj.get('points', [])):
                    coords[j, i] = torch.tensor([x, y])
                    labels[j, i] = int(label)
            data.points, data.point_labels = coords, labels
        return data


def parse_prompts(
    boxes: list[str] | None, points: list[str] | None, names: Sequence[str]
) -> dict[str, ImagePrompts]:
    """Objects per input image from ``--boxes`` / ``--points`` values (see the module docstring).

    Args:
        boxes: ``x0,y0,x1,y1`` strings (one object each, in every image) or one JSON file.
        points: ``x,y[,label]`` strings (one object, in every image) or one JSON file.
        names: the input images' file names (the keys of the files).

    Returns:
        dict: file name -> its :class:`ImagePrompts`; with boxes and points, object ``j``
        has box ``j`` and point list ``j``.

    Raises:
        ValueError: a malformed value (naming the file, image and value), a file naming an
            image that is not an input, an input without prompts, box and point lists that
            do not pair up, or more than :data:`MAX_OBJECTS` objects in an image.
        FileNotFoundError: a ``.json`` value that is not a file.
    """
    box_lists, box_source = _per_image(boxes, '--boxes', names, _literal_boxes, boxes_entry)
    point_lists, point_source = _per_image(points, '--points', names, _literal_points, points_entry)
    source = ' and '.join(s for s in (box_source, point_source) if s)
    out: dict[str, ImagePrompts] = {}
    for name in names:
        name_boxes = None if box_lists is None else box_lists.get(name)
        name_points = None if point_lists is None else point_lists.get(name)
        if name_boxes is not None and name_points is not None:
            if len(name_boxes) != len(name_points):
                raise ValueError(
                    f'image {name!r}: {len(name_boxes)} boxes ({box_source}) and {len(name_points)} point lists '
                    f'({point_source}); give one point list per box (object j gets box j and point list j)'
                )
            objects = [dict(box=b, points=p) for b, p in zip(name_boxes, name_points)]
        elif name_boxes is not None:
            objects = [dict(box=b) for b in name_boxes]
        elif name_points is not None:
            objects = [dict(points=p) for p in name_points]
        else:
            raise ValueError(
                f'no prompt for input image {name} in {source}: every input needs its boxes or points'
            )
        if len(objects) > MAX_OBJECTS:
            raise ValueError(
                f'image {name!r} ({source}): {len(objects)} objects; at most {MAX_OBJECTS} fit the 16-bit label '
                'map (0 is background)'
            )
        out[name] = ImagePrompts(name, objects, source)
    return out


def read_image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file as the image loaders give it, from its header where possible.

    Pillow reads the header (EXIF orientation 5-8, a quarter turn, swaps the sides, as
    OpenCV's colour decoding turns the image); a file Pillow cannot identify is decoded
    with OpenCV.

    Raises:
        ValueError: the file is empty or neither library can read it.
    """
    if path.stat().st_size == 0:
        raise ValueError(f'image file {path} is empty (0 bytes)')
    try:
        with Image.open(path) as img:
            width, height = img.size
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        return (width, height) if turned else (height, width)
    except (OSError, SyntaxError, ValueError):
        pass
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(
            f'cannot read image file {path}: neither Pillow nor OpenCV can decode it (truncated or corrupt?)'
        )
    return img.shape[0], img.shape[1]
