"""Inference: strict checkpoint loading, a segmentor from config + checkpoint, an inferencer, safe outputs."""

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
from .outputs import check_output_file
from .zero_shot import zero_shot_config

__all__ = [
    'IMG_EXTENSIONS',
    'SAMSegInferencer',
    'check_output_file',
    'init_model',
    'list_images',
    'load_checkpoint',
    'load_checkpoint_to_model',
    'read_checkpoint',
    'resolve_dataset_meta',
    'save_index_mask',
    'zero_shot_config',
]
