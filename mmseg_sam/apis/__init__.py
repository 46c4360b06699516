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
from .instance_outputs import read_scores, save_instance_map, write_scores
from .outputs import check_output_file
from .user_prompts import ImagePrompts, parse_prompts, read_image_size
from .zero_shot import zero_shot_config

__all__ = [
    'IMG_EXTENSIONS',
    'ImagePrompts',
    'SAMSegInferencer',
    'check_output_file',
    'init_model',
    'list_images',
    'load_checkpoint',
    'load_checkpoint_to_model',
    'parse_prompts',
    'read_checkpoint',
    'read_image_size',
    'read_scores',
    'resolve_dataset_meta',
    'save_index_mask',
    'save_instance_map',
    'write_scores',
    'zero_shot_config',
]
