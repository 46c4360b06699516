from .metrics import BaseBinaryMetric, BERMetric, BinaryIoUMetric, SODMetric, foreground_probability

__all__ = ['BaseBinaryMetric', 'BERMetric', 'BinaryIoUMetric', 'SODMetric', 'foreground_probability']
