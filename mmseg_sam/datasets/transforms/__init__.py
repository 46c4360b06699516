from .check import CheckSegSample
from .tta import flip_tta_pipeline

__all__ = ['CheckSegSample', 'flip_tta_pipeline']
