from .check import CheckSegSample
from .loading import LoadAnyDepthImageFromFile, check_8_bit, image_bit_depth, reads_8_bit_only
from .roles import is_annotation_step, is_image_loader
from .tta import flip_tta_pipeline

__all__ = [
    'CheckSegSample',
    'LoadAnyDepthImageFromFile',
    'check_8_bit',
    'flip_tta_pipeline',
    'image_bit_depth',
    'is_annotation_step',
    'is_image_loader',
    'reads_8_bit_only',
]
