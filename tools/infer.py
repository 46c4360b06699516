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

Coordinates are pixel indices of the original image, ``x1`` / ``y1`` inclusive (the
project's tight boxes): ``0 <= x0 <= x1 <= W - 1``, ``0 <= y0 <= y1 <= H - 1``
(``x0 == x1`` is a one-pixel-wide box), points ``0 <= x <= W - 1``, ``0 <= y <= H - 1``.

A prompted model writes ``masks/<name>.png`` with 0 background and ``j + 1`` for object
``j`` (where objects overlap, the higher predicted IoU on top; an 8-bit PNG, 16-bit for
an image of more than 255 objects), ``overlays/<name>.png`` with each object in its own
colour and the prompts drawn (boxes; positive points green, negative red), and
``scores.json``: ``{"<image file name>": [predicted IoU of each object]}``. Runs into the same
``DIR`` add to ``scores.json`` (an image segmented again replaces its entry, and the tool
says which; the file is replaced atomically). Every prompt is checked against every image
before the first output is written: a malformed value (naming the file, the image and the
value), a prompt file naming an image that is not among the inputs, an input without
prompts, a box or point outside its image, an empty or unreadable image file, or prompts
given to a prompt-free model is an error.

CHECKPOINT may be trainable-only (SAMCheckpointHook's default): the frozen weights
come from the config's ``model.sam_checkpoint``. The checkpoint keys are checked
strictly (see ``mmseg_sam.apis.SAMSegInferencer``). Classes and palette come from
the checkpoint's ``dataset_meta``, else from the config's test dataset.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.utils import ProgressBar
from PIL import Image

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import SAMSegInferencer, list_images, save_index_mask
from mmseg_sam.apis.instance_outputs import read_scores, save_instance_map, write_scores
from mmseg_sam.apis.user_prompts import ImagePrompts, parse_prompts, read_image_size

_NEGATIVE_LIST = re.compile(r'^-\.?\d[^,]*(,[^,]*)+$')  # '-3,4,10,12': numbers, not an option


def keep_negative_values(argv: list[str]) -> list[str]:
    """Mark ``--boxes`` / ``--points`` values that start with a minus sign as values.

    argparse takes any word starting with ``-`` for an option (``--boxes -3,4,10,12``
    would end the option's values); a leading space makes it a value again, and the
    coordinate check then names it. ``--boxes=-3,4,10,12`` needs no help.
    """
    out, option = [], None
    for word in argv:
        if word.startswith('--'):
            option = word.split('=', 1)[0]
        elif option in ('--boxes', '--points') and _NEGATIVE_LIST.match(word):
            word = f' {word}'
        out.append(word)
    return out


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
    return parser.parse_args(keep_negative_values(sys.argv[1:] if argv is None else list(argv)))


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
    """Run the model on every input and write the outputs; returns the image count.

    Every input is checked before the first output is written: the images can be read,
    and with a prompted model every prompt parses and lies inside its image.
    """
    device = check_args(args)
    paths = list_images(args.inputs)
    names = output_names(paths)
    sizes = {path: read_image_size(path) for path in paths}  # (H, W); refuses empty and unreadable files
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
        prompts = parse_prompts(args.boxes, args.points, [p.name for p in paths])
        for path in paths:
            prompts[path.name].check_inside(*sizes[path])
        earlier = read_scores(Path(args.out_dir) / 'scores.json')
        pipeline = cfg.test_dataloader.dataset.pipeline  # no instances at inference: pack the image only
        cfg.test_dataloader.dataset.pipeline = [
            dict(step, type='PackSegInputs') if step.get('type') == 'PackPromptedSegInputs' else step
            for step in pipeline
        ]
        inferencer = SAMSegInferencer(model=cfg, weights=args.checkpoint, device=device)
        return infer_prompted(inferencer, paths, names, prompts, sizes, earlier, args)
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


def infer_prompted(
    inferencer: SAMSegInferencer,
    paths: list[Path],
    names: list[str],
    prompts: dict[str, ImagePrompts],
    sizes: dict[Path, tuple[int, int]],
    earlier: dict[str, list[float]],
    args: argparse.Namespace,
) -> int:
    """Segment each image's prompted objects; write masks, overlays (prompts drawn) and scores.

    The scores of the images done are merged into ``scores.json`` also when a later image
    fails (the error is raised after).
    """
    model = inferencer.model
    out_dir = Path(args.out_dir)
    scores_file = out_dir / 'scores.json'
    visualizer = inferencer.visualizer
    scores: dict[str, list[float]] = {}
    deep: list[str] = []
    progress = ProgressBar(len(paths))
    try:
        for path, name in zip(paths, names):
            [batch] = list(inferencer.preprocess([str(path)], batch_size=1))
            data = model.data_preprocessor(batch, False)
            [sample] = data['data_samples']
            image_prompts = prompts[path.name]
            shape = tuple(sample.metainfo['ori_shape'][:2])
            if shape != sizes[path]:  # the loader turned the image otherwise than its header says
                image_prompts.check_inside(*shape)
            sample.prompts = image_prompts.instances().to(data['inputs'].device)
            [pred] = model.predict_with_prompts(data['inputs'], [sample])
            bits = save_instance_map(
                pred.pred_sem_seg.data, len(image_prompts.objects), out_dir / 'masks' / name
            )
            if bits == 16:
                deep.append(name)
            scores[path.name] = [round(float(s), 4) for s in pred.pred_instances.scores]
            if not args.no_overlay:
                draw_prompted(
                    visualizer,
                    inferencer.read_image(str(path)),
                    pred,
                    image_prompts.objects,
                    args.opacity,
                    out_dir / 'overlays' / name,
                )
            progress.update()
    except BaseException:
        if scores:
            write_scores(scores_file, earlier, scores)
            print(f'\nstopped after {len(scores)} of {len(paths)} images; their scores are in {scores_file}')
        raise
    replaced, kept = write_scores(scores_file, earlier, scores)
    print(f'\n{scores_file}: {len(scores)} images written', end='')
    if replaced:
        shown = ', '.join(replaced[:10]) + (', ...' if len(replaced) > 10 else '')
        print(f', replacing the scores and masks of {len(replaced)} from an earlier run ({shown})', end='')
    print(f', {kept} kept from earlier runs' if kept else '')
    if deep:
        print(f'{len(deep)} masks hold more than 255 objects and are 16-bit PNGs: {", ".join(deep[:10])}')
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
