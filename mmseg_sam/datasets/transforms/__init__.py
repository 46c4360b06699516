from .check import CheckSegSample
from .loading import LoadAnyDepthImageFromFile, image_bit_depth
from .roles import is_annotation_step, is_image_loader
from .tta import flip_tta_pipeline

__all__ = [
    'CheckSegSample',
    'LoadAnyDepthImageFromFile',
    'flip_tta_pipeline',
    'image_bit_depth',
    'is_annotation_step',
    'is_image_loader',
]
