from .balanced_bce_loss import BalancedBCELoss
from .mask_classification_loss import MaskClassificationLoss
from .structure_loss import StructureLoss

__all__ = ['BalancedBCELoss', 'MaskClassificationLoss', 'StructureLoss']
