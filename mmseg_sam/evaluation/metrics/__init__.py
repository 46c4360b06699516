from .base_binary_metric import BaseBinaryMetric, foreground_probability
from .ber_metric import BERMetric
from .binary_iou_metric import BinaryIoUMetric
from .interactive_metric import InteractiveSegMetric, instance_scores
from .sod_metric import SODMetric

__all__ = [
    'BaseBinaryMetric',
    'BERMetric',
    'BinaryIoUMetric',
    'InteractiveSegMetric',
    'SODMetric',
    'foreground_probability',
    'instance_scores',
]
