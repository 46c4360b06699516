from .check import CheckSegSample
from .loading import LoadAnyDepthImageFromFile, check_8_bit, image_bit_depth, reads_8_bit_only
from .roles import is_annotation_step, is_image_loader
from .sam_resize import SAMResizeLongestSide, longest_side_shape, pil_bilinear
from .tta import flip_tta_pipeline

__all__ = [
    'CheckSegSample',
    'LoadAnyDepthImageFromFile',
    'SAMResizeLongestSide',
    'check_8_bit',
    'flip_tta_pipeline',
    'image_bit_depth',
    'is_annotation_step',
    'is_image_loader',
    'longest_side_shape',
    'pil_bilinear',
    'reads_8_bit_only',
]
