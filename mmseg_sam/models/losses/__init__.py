from .balanced_bce_loss import BalancedBCELoss
from .mask_classification_loss import MaskClassificationLoss
from .prompted_mask_loss import PromptedMaskLoss, mask_iou
from .structure_loss import StructureLoss

__all__ = ['BalancedBCELoss', 'MaskClassificationLoss', 'PromptedMaskLoss', 'StructureLoss', 'mask_iou']
