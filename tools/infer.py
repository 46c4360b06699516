"""Segment images with a trained model: class-index masks and colour overlays.

Usage::

    python tools/infer.py CONFIG CHECKPOINT INPUTS... --out-dir DIR
        [--batch-size N] [--device cpu|cuda] [--opacity 0.5] [--no-overlay]
        [--palette-mask] [--with-labels] [--cfg-options ...]
        [--boxes FILE.json | x0,y0,x1,y1 ...] [--points FILE.json | x,y[,label] ...]

INPUTS are image files, folders (their images, not recursive) or glob patterns
(quote them). For every image ``<name>.<ext>`` the tool writes

- ``DIR/masks/<name>.png``: uint8 class indices at the image's own size
  (``--palette-mask``: a palette PNG with the dataset colours, same indices);
- ``DIR/overlays/<name>.png``: the prediction in the dataset palette blended over
  the image (``--opacity``), unless ``--no-overlay``.

Prompted models (``SAMPromptedEncoderDecoder`` configs) segment the objects that
prompts describe, as segment_anything's ``SamPredictor`` does, in the pixel
coordinates of each original image:

- ``--boxes x0,y0,x1,y1 [x0,y0,x1,y1 ...]``: one object per box, in every image;
- ``--points x,y[,label] [...]``: one object from all the points (label 1 positive,
  the default, 0 negative), in every image; with one box, box and points make one
  object;
- ``--boxes FILE.json`` / ``--points FILE.json``: prompts per image, keyed by the image's
  file name: ``{"0001.png": [[x0, y0, x1, y1], ...]}`` (one object per box) and
  ``{"0001.png": [[x, y, label], ...]}`` (one object) or ``[[[x, y, label], ...], ...]``
  (one object per list); with both files, object ``j`` of an image gets box ``j`` and
  point list ``j``.

A prompted model writes ``masks/<name>.png`` with 0 background and ``j + 1`` for object
``j`` (where objects overlap, the higher predicted IoU on top), ``overlays/<name>.png``
with each object in its own colour and the prompts drawn (boxes; positive points green,
negative red), and ``scores.json``: each object's predicted IoU. A prompt file naming an
image that is not among the inputs, an input without prompts, a box or point outside its
image, or prompts given to a prompt-free model is an error naming them.

CHECKPOINT may be trainable-only (SAMCheckpointHook's default): the frozen weights
come from the config's ``model.sam_checkpoint``. The checkpoint keys are checked
strictly (see ``mmseg_sam.apis.SAMSegInferencer``). Classes and palette come from
the checkpoint's ``dataset_meta``, else from the config's test dataset.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.structures import InstanceData
from mmengine.utils import ProgressBar
from PIL import Image

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import SAMSegInferencer, list_images, save_index_mask


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    parser.add_argument('--out-dir', required=True, help='writes masks/ and overlays/ here')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--device', default=None, help="'cpu', 'cuda' or 'cuda:N' (default: cuda if available)"
    )
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity in (0, 1]')
    parser.add_argument('--no-overlay', action='store_true', help='write the masks only')
    parser.add_argument('--palette-mask', action='store_true', help='write masks as palette PNGs')
    parser.add_argument('--with-labels', action='store_true', help='write class names on the overlays')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument(
        '--boxes',
        nargs='+',
        help='prompted models: x0,y0,x1,y1 boxes (one object each) or a JSON file per image',
    )
    parser.add_argument(
        '--points',
        nargs='+',
        help='prompted models: x,y[,label] points (one object) or a JSON file per image',
    )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str:
    """Validate the options; return the device to use."""
    if args.batch_size < 1:
        raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
    if not 0 < args.opacity <= 1:
        raise ValueError(f'--opacity must be in (0, 1], got {args.opacity}')
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise ValueError(f'--out-dir {args.out_dir} is a file: give a folder (it is created if missing)')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f"--device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {device}: CUDA is not available here')
    return device


def output_names(paths: list[Path]) -> list[str]:
    """``<stem>.png`` per image; two inputs with the same stem are an error."""
    seen: dict[str, Path] = {}
    for path in paths:
        name = f'{path.stem}.png'
        if name in seen:
            raise ValueError(f'{seen[name]} and {path} would both be written as {name}; rename one')
        seen[name] = path
    return list(seen)


def infer(args: argparse.Namespace) -> int:
    """Run the model on every input and write the outputs; returns the image count."""
    device = check_args(args)
    paths = list_images(args.inputs)
    names = output_names(paths)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    prompted = cfg.model.get('type') == 'SAMPromptedEncoderDecoder'
    if (args.boxes or args.points) and not prompted:
        raise ValueError(
            f'--boxes / --points prompt a prompted model, but {args.config} builds {cfg.model.get("type")} '
            '(prompt-free): use a config with SAMPromptedEncoderDecoder (configs/prompted/, a *_prompted_* demo)'
        )
    if prompted:
        if not (args.boxes or args.points):
            raise ValueError(f'{args.config} is a prompted model: give --boxes and / or --points')
        prompts = read_prompts(args.boxes, args.points, paths)
        pipeline = cfg.test_dataloader.dataset.pipeline  # no instances at inference: pack the image only
        cfg.test_dataloader.dataset.pipeline = [
            dict(step, type='PackSegInputs') if step.get('type') == 'PackPromptedSegInputs' else step
            for step in pipeline
        ]
        inferencer = SAMSegInferencer(model=cfg, weights=args.checkpoint, device=device)
        return infer_prompted(inferencer, paths, names, prompts, args)
    inferencer = SAMSegInferencer(model=cfg, weights=args.checkpoint, device=device)
    meta = inferencer.model.dataset_meta
    visualizer = inferencer.visualizer
    visualizer.set_dataset_meta(meta['classes'], meta['palette'])
    visualizer.alpha = args.opacity
    out_dir = Path(args.out_dir)
    palette = meta['palette'] if args.palette_mask else None

    progress = ProgressBar(len(paths))
    done = 0
    for batch in inferencer.preprocess([str(p) for p in paths], batch_size=args.batch_size):
        for pred in inferencer.forward(batch):
            path, name = paths[done], names[done]
            mask = pred.pred_sem_seg.data  # (1, H, W) at the image's own size
            save_index_mask(mask, out_dir / 'masks' / name, palette)
            if not args.no_overlay:
                image = inferencer.read_image(str(path))  # as the model saw it (16-bit images scaled)
                visualizer.add_datasample(
                    name,
                    image,
                    pred,
                    draw_gt=False,
                    with_labels=args.with_labels,
                    out_file=str(out_dir / 'overlays' / name),
                )
            done += 1
            progress.update()
    assert done == len(paths), (done, len(paths))
    return done


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) not in count:
        raise ValueError(
            f'{what} {text!r} is neither a file nor {" or ".join(str(c) for c in count)} numbers'
        )
    return values


def _read_json(path: str, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f'{what} file {path} is not JSON: {err}') from err
    if not isinstance(data, dict):
        raise ValueError(
            f'{what} file {path} must map image file names to prompts, got {type(data).__name__}'
        )
    return data


def _point_objects(value: Any, where: str) -> list[list[list[float]]]:
    """A point entry as objects: ``[[x, y, l], ...]`` is one object, ``[[[x, y, l], ...], ...]`` several."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            f'{where}: expected a list of [x, y, label] points (or of such lists), got {value!r}'
        )
    objects = value if isinstance(value[0], list) and value[0] and isinstance(value[0][0], list) else [value]
    for points in objects:
        for point in points:
            if not isinstance(point, list) or len(point) not in (2, 3):
                raise ValueError(f'{where}: a point is [x, y] or [x, y, label], got {point!r}')
    return [[[*p[:2], p[2] if len(p) == 3 else 1] for p in points] for points in objects]


def read_prompts(
    boxes: list[str] | None, points: list[str] | None, paths: list[Path]
) -> dict[str, list[dict[str, Any]]]:
    """Objects per input file name from ``--boxes`` / ``--points`` (see the module docstring).

    Returns:
        dict: file name -> objects, each ``{'box': [x0, y0, x1, y1]}`` and / or
        ``{'points': [[x, y, label], ...]}``.

    Raises:
        ValueError: a malformed value, a file naming an image that is not an input, an input
            without prompts, or box and point lists that do not pair up.
    """
    files = {p.name for p in paths}

    def per_image(values: list[str] | None, what: str, literal: Any) -> dict[str, list] | None:
        if not values:
            return None
        if len(values) == 1 and Path(values[0]).is_file():
            data = _read_json(values[0], what)
            unknown = sorted(set(data) - files)
            if unknown:
                raise ValueError(
                    f'{what} file {values[0]} names {unknown}, which are not among the {len(files)} input images'
                )
            return data
        if any(Path(v).suffix == '.json' for v in values):
            missing = [v for v in values if Path(v).suffix == '.json' and not Path(v).is_file()]
            raise FileNotFoundError(f'{what} file not found: {missing}')
        return {name: literal(values) for name in files}

    box_lists = per_image(boxes, '--boxes', lambda vs: [_numbers(v, (4,), 'box') for v in vs])
    point_lists = per_image(
        points, '--points', lambda vs: [[[*_numbers(v, (2, 3), 'point'), 1][:3] for v in vs]]
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(files):
        objects: list[dict[str, Any]] = []
        name_boxes = None if box_lists is None else box_lists.get(name)
        name_points = None if point_lists is None else point_lists.get(name)
        if name_points is not None:
            name_points = _point_objects(name_points, f'--points for {name}')
        if name_boxes is not None and name_points is not None:
            if len(name_boxes) != len(name_points):
                raise ValueError(
                    f'{name}: {len(name_boxes)} boxes and {len(name_points)} point lists; give one point list per '
                    'box (object j gets box j and point list j)'
                )
            objects = [dict(box=b, points=p) for b, p in zip(name_boxes, name_points)]
        elif name_boxes is not None:
            objects = [dict(box=b) for b in name_boxes]
        elif name_points is not None:
            objects = [dict(points=p) for p in name_points]
        if not objects:
            raise ValueError(f'no prompt for input image {name}: every input needs its boxes or points')
        out[name] = objects
    return out


def check_prompts(objects: list[dict[str, Any]], name: str, height: int, width: int) -> None:
    """Refuse boxes and points outside the image (``width`` x ``height`` pixels) and bad labels."""
    for j, obj in enumerate(objects):
        if 'box' in obj:
            if len(obj['box']) != 4:
                raise ValueError(f'{name}, object {j}: a box is [x0, y0, x1, y1], got {obj["box"]}')
            x0, y0, x1, y1 = obj['box']
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise ValueError(
                    f'{name}, object {j}: box {obj["box"]} is not inside the {width}x{height} image with x0 < x1, '
                    'y0 < y1 (pixel coordinates of the original image)'
                )
        for x, y, label in obj.get('points', []):
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(
                    f'{name}, object {j}: point ({x}, {y}) is outside the {width}x{height} image'
                )
            if label not in (0, 1):
                raise ValueError(
                    f'{name}, object {j}: point label {label!r} must be 1 (positive) or 0 (negative)'
                )


def _prompt_data(objects: list[dict[str, Any]]) -> InstanceData:
    """The objects as ``predict_with_prompts`` takes them (points padded with SAM's label -1)."""
    data = InstanceData()
    if all('box' in obj for obj in objects):
        data.boxes = torch.tensor([obj['box'] for obj in objects], dtype=torch.float32)
    elif any('box' in obj for obj in objects):
        raise ValueError('give every object of an image a box, or none')
    if any('points' in obj for obj in objects):
        k = max(len(obj.get('points', [])) for obj in objects)
        coords = torch.zeros(len(objects), k, 2)
        labels = torch.full((len(objects), k), -1, dtype=torch.long)
        for j, obj in enumerate(objects):
            for i, (x, y, label) in enumerate(obj.get('points', [])):
                coords[j, i] = torch.tensor([x, y])
                labels[j, i] = int(label)
        data.points, data.point_labels = coords, labels
    return data


def infer_prompted(
    inferencer: SAMSegInferencer,
    paths: list[Path],
    names: list[str],
    prompts: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
) -> int:
    """Segment each image's prompted objects; write masks, overlays (prompts drawn) and scores."""
    model = inferencer.model
    out_dir = Path(args.out_dir)
    visualizer = inferencer.visualizer
    scores_out: dict[str, list[float]] = {}
    progress = ProgressBar(len(paths))
    for path, name in zip(paths, names):
        [batch] = list(inferencer.preprocess([str(path)], batch_size=1))
        data = model.data_preprocessor(batch, False)
        [sample] = data['data_samples']
        height, width = sample.metainfo['ori_shape'][:2]
        objects = prompts[path.name]
        check_prompts(objects, path.name, height, width)
        sample.prompts = _prompt_data(objects).to(data['inputs'].device)
        [pred] = model.predict_with_prompts(data['inputs'], [sample])
        save_index_mask(pred.pred_sem_seg.data, out_dir / 'masks' / name)
        scores_out[path.name] = [round(float(s), 4) for s in pred.pred_instances.scores]
        if not args.no_overlay:
            draw_prompted(
                visualizer,
                inferencer.read_image(str(path)),
                pred,
                objects,
                args.opacity,
                out_dir / 'overlays' / name,
            )
        progress.update()
    (out_dir / 'scores.json').write_text(json.dumps(scores_out, indent=1))
    return len(paths)


_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_prompted(
    visualizer: Any, image: np.ndarray, pred: Any, objects: list[dict[str, Any]], opacity: float, out: Path
) -> None:
    """The image with each object's mask in its own colour and its prompts drawn."""
    visualizer.set_image(image)
    masks = pred.pred_instances.masks.cpu().numpy()
    colours = [_COLOURS[j % len(_COLOURS)] for j in range(len(masks))]
    if len(masks):
        visualizer.draw_binary_masks(masks, colors=colours, alphas=opacity)
    for j, obj in enumerate(objects):
        if 'box' in obj:
            visualizer.draw_bboxes(np.array([obj['box']]), edge_colors=[colours[j]], line_widths=2)
        for x, y, label in obj.get('points', []):
            visualizer.draw_points(
                np.array([[x, y]]), colors=[(0, 255, 0) if label == 1 else (255, 0, 0)], sizes=np.array([40])
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(visualizer.get_image()).save(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        count = infer(args)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(
        f'\n{count} images -> {Path(args.out_dir) / "masks"}' + ('' if args.no_overlay else ' and overlays/')
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
