"""Inference: strict checkpoint loading, a segmentor from config + checkpoint, an inferencer."""

from .inference import (
    IMG_EXTENSIONS,
    init_model,
    list_images,
    load_checkpoint,
    load_checkpoint_to_model,
    read_checkpoint,
    resolve_dataset_meta,
    save_index_mask,
)
from .inferencer import SAMSegInferencer

__all__ = [
    'IMG_EXTENSIONS',
    'SAMSegInferencer',
    'init_model',
    'list_images',
    'load_checkpoint',
    'load_checkpoint_to_model',
    'read_checkpoint',
    'resolve_dataset_meta',
    'save_index_mask',
]
