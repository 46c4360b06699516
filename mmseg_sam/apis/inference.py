"""Build a segmentor from a config and a checkpoint for inference, with strict key checks.

mmseg's ``init_model`` and ``MMSegInferencer`` load checkpoints non-strictly: a
checkpoint that does not fit the config loads with a logged warning and the model
predicts with whatever weights it was built with. Here every load goes through
:func:`~mmseg_sam.engine.hooks.sam_checkpoint_hook.check_checkpoint_keys`: a key may
be absent from the checkpoint only when it is a frozen weight restored from the
config's ``model.sam_checkpoint`` (the trainable-only checkpoints SAMCheckpointHook
saves); anything else fails and names the keys. Those frozen weights must be the ones
the checkpoint was trained with (:func:`~mmseg_sam.engine.hooks.sam_checkpoint_hook.check_frozen_weights`):
another SAM checkpoint is refused unless ``allow_other_sam_checkpoint=True`` says so.
"""

import copy
import glob
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmseg.models import BaseSegmentor
from mmseg.registry import DATASETS, MODELS
from PIL import Image
from torch import nn

from ..engine.hooks.sam_checkpoint_hook import (
    allows_other_sam_checkpoint,
    check_checkpoint_keys,
    check_frozen_weights,
)

__all__ = [
    'IMG_EXTENSIONS',
    'init_model',
    'label_map_array',
    'list_images',
    'load_checkpoint',
    'load_checkpoint_to_model',
    'read_checkpoint',
    'resolve_dataset_meta',
    'save_index_mask',
]

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
_GLOB_CHARS = ('*', '?', '[')


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    MMEngine's training checkpoints are readable this way once ``mmseg_sam`` is
    imported (it allow-lists the classes MMEngine pickles). A bare state dict is
    returned as ``{'state_dict': state}``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a checkpoint holding a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    try:
        saved = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # corrupt, truncated, or not a checkpoint at all
        raise ValueError(f'cannot read checkpoint {path}: {type(err).__name__}: {err}') from err
    if not isinstance(saved, Mapping):
        raise ValueError(f'checkpoint {path} holds a {type(saved).__name__}, expected a dict')
    if 'state_dict' not in saved:
        saved = {'state_dict': saved}
    state = saved['state_dict']
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'checkpoint {path} does not hold a state dict of tensors')
    return dict(saved)


def load_checkpoint_to_model(
    model: nn.Module, checkpoint: Mapping[str, Any], allow_other_sam_checkpoint: bool | None = None
) -> list[str]:
    """Load a checkpoint's state dict into ``model`` after a strict key check.

    Args:
        model: a segmentor built from the config the checkpoint was trained with.
        checkpoint: ``{'state_dict': ..., 'meta': ...}`` (a bare state dict also works).
        allow_other_sam_checkpoint: run a trainable-only checkpoint on other frozen
            weights than it was trained with (a warning) instead of raising. None
            takes ``allow_other_sam_checkpoint`` of ``model.cfg`` (set by
            :func:`init_model` and MMEngine's inferencers, so ``--cfg-options
            allow_other_sam_checkpoint=True`` reaches it), else False.

    Returns:
        list[str]: keys the checkpoint does not hold; all of them frozen weights that
        the model already loaded from its SAM checkpoint.

    Raises:
        ValueError: an unexpected key, or a missing key that no SAM checkpoint
            supplies (both named), or a shape mismatch; or frozen weights other than
            the ones the checkpoint was trained with (naming both SAM checkpoints).
    """
    if allow_other_sam_checkpoint is None:
        allow_other_sam_checkpoint = allows_other_sam_checkpoint(getattr(model, 'cfg', None))
    elif not isinstance(allow_other_sam_checkpoint, bool):
        raise TypeError(
            f'allow_other_sam_checkpoint must be True, False or None, got {allow_other_sam_checkpoint!r}'
        )
    state = checkpoint.get('state_dict', checkpoint)
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    missing = check_checkpoint_keys(model, state)
    check_frozen_weights(
        model, checkpoint, missing, MMLogger.get_current_instance(), allow_other_sam_checkpoint
    )
    try:
        result = model.load_state_dict(state, strict=False)  # keys were checked above
    except RuntimeError as err:
        raise ValueError(f'the checkpoint does not fit the model built from the config: {err}') from err
    assert not result.unexpected_keys and set(result.missing_keys) == set(missing), result
    return missing


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, allow_other_sam_checkpoint: bool | None = None
) -> dict[str, Any]:
    """:func:`read_checkpoint` then :func:`load_checkpoint_to_model`; returns the checkpoint."""
    checkpoint = read_checkpoint(path)
    load_checkpoint_to_model(model, checkpoint, allow_other_sam_checkpoint)
    return checkpoint


def _default_palette(num_classes: int) -> list[list[int]]:
    """Background black, then fixed pseudo-random colours."""
    rng = np.random.default_rng(0)
    colours = rng.integers(32, 256, size=(num_classes, 3)).tolist()
    return [[0, 0, 0], *colours[1:]] if num_classes else []


def _config_metainfo(cfg: Config) -> Mapping[str, Any]:
    """``metainfo`` of the config's test dataset, or its dataset class's ``METAINFO``."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    if dataset.get('metainfo'):
        return dataset['metainfo']
    dataset_cls = DATASETS.get(dataset['type']) if 'type' in dataset else None
    return getattr(dataset_cls, 'METAINFO', None) or {}


def resolve_dataset_meta(
    model: nn.Module, cfg: Config | None = None, checkpoint_meta: Mapping[str, Any] | None = None
) -> dict[str, list]:
    """Class names and palette for a model's predictions.

    Taken from the checkpoint's ``meta['dataset_meta']`` (written by MMEngine's
    runner), else from the config's test dataset ``metainfo``; a missing palette is
    generated (background black). Unlike mmseg, no Cityscapes defaults are invented.

    Returns:
        dict: ``{'classes': [...], 'palette': [[r, g, b], ...]}``.

    Raises:
        ValueError: the number of classes differs from the decode head's
            ``num_classes``, or the palette does not have one colour per class.
    """
    num_classes = model.decode_head.num_classes
    meta: Mapping[str, Any] = (checkpoint_meta or {}).get('dataset_meta') or {}
    source = 'the checkpoint meta'
    if not meta.get('classes') and cfg is not None:
        meta, source = _config_metainfo(cfg), 'the config'
    classes = list(meta.get('classes') or [str(i) for i in range(num_classes)])
    if len(classes) != num_classes:
        raise ValueError(
            f'{source} names {len(classes)} classes {classes}, but the decode head predicts '
            f'num_classes={num_classes}'
        )
    palette = meta.get('palette')
    palette = [list(map(int, colour)) for colour in palette] if palette else _default_palette(num_classes)
    if len(palette) != num_classes:
        raise ValueError(f'{source} has {len(palette)} palette colours for {num_classes} classes')
    return {'classes': classes, 'palette': palette}


def init_model(
    config: str | os.PathLike | Config,
    checkpoint: str | os.PathLike | None = None,
    device: str = 'cpu',
    cfg_options: Mapping[str, Any] | None = None,
) -> BaseSegmentor:
    """mmseg's ``init_model`` with a strict checkpoint load.

    Args:
        config: config file or object (its ``custom_imports`` register mmseg_sam).
        checkpoint: a checkpoint saved by training (trainable-only ones included: the
            config's ``model.sam_checkpoint`` supplies the frozen weights, and they must
            be the ones it was trained with unless ``cfg_options`` sets
            ``allow_other_sam_checkpoint=True``).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``.
        cfg_options: overrides merged into the config.

    Returns:
        BaseSegmentor: the model in eval mode on ``device``, with ``cfg`` and
        ``dataset_meta`` set.
    """
    if isinstance(config, (str, os.PathLike)):
        cfg = Config.fromfile(config)
    elif isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a path or a Config, got {type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    model.cfg = cfg  # before the load, which reads allow_other_sam_checkpoint from it
    checkpoint_meta = load_checkpoint(model, checkpoint).get('meta', {}) if checkpoint is not None else {}
    model.dataset_meta = resolve_dataset_meta(model, cfg, checkpoint_meta)
    return model.to(device).eval()


def list_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand image files, folders (their images, not recursive) and glob patterns.

    Returns:
        list[Path]: the images, each once, folders and globs sorted.

    Raises:
        FileNotFoundError: an input does not exist, or a folder or pattern holds no image.
        ValueError: an explicitly named file is not an image (by suffix).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: dict[Path, None] = {}
    for item in inputs:
        text, path = str(item), Path(item)
        if path.is_file():
            if path.suffix.lower() not in IMG_EXTENSIONS:
                raise ValueError(f'{path} is not an image: expected a suffix in {IMG_EXTENSIONS}')
            images = [path]
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
            if not images:
                raise FileNotFoundError(f'folder {path} holds no image ({", ".join(IMG_EXTENSIONS)})')
        elif any(c in text for c in _GLOB_CHARS):
            images = sorted(
                p
                for p in map(Path, glob.glob(text, recursive=True))
                if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
            )
            if not images:
                raise FileNotFoundError(f'pattern {text!r} matches no image ({", ".join(IMG_EXTENSIONS)})')
        else:
            raise FileNotFoundError(f'input not found: {text}')
        found.update(dict.fromkeys(images))
    return list(found)


def label_map_array(label_map: np.ndarray | torch.Tensor, what: str = 'mask') -> np.ndarray:
    """A (H, W) or (1, H, W) array or tensor as an (H, W) numpy array.

    Raises:
        ValueError: another shape, naming ``what`` and the shape.
    """
    if isinstance(label_map, torch.Tensor):
        label_map = label_map.detach().cpu().numpy()
    label_map = np.asarray(label_map)
    if label_map.ndim == 3 and label_map.shape[0] == 1:
        label_map = label_map[0]  # (1, H, W) -> (H, W)
    if label_map.ndim != 2:
        raise ValueError(f'{what} must be (H, W) or (1, H, W), got shape {label_map.shape}')
    return label_map


def save_index_mask(
    mask: np.ndarray | torch.Tensor, path: str | os.PathLike, palette: Sequence[Sequence[int]] | None = None
) -> None:
    """Write a class-index mask as an 8-bit PNG.

    Args:
        mask: (H, W) or (1, H, W) class indices in [0, 255].
        path: the PNG to write (folders are created).
        palette: when given, a palette PNG (mode ``P``): pixel values stay class
            indices, viewers show the class colours.
    """
    mask = label_map_array(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f'class indices must fit in uint8 for a PNG, got range [{mask.min()}, {mask.max()}]')
    image = Image.fromarray(mask.astype(np.uint8))  # mode L
    if palette is not None:
        if len(palette) > 256:
            raise ValueError(f'a palette PNG holds at most 256 colours, got {len(palette)}')
        flat = [int(c) for colour in palette for c in colour]
        image.putpalette(flat + [0] * (768 - len(flat)))  # L -> P, indices unchanged
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
