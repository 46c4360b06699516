from .metrics import (
    BaseBinaryMetric,
    BERMetric,
    BinaryIoUMetric,
    InteractiveSegMetric,
    SODMetric,
    foreground_probability,
    instance_scores,
)

__all__ = [
    'BaseBinaryMetric',
    'BERMetric',
    'BinaryIoUMetric',
    'InteractiveSegMetric',
    'SODMetric',
    'foreground_probability',
    'instance_scores',
]
