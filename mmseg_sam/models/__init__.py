from .backbones import SAMViT
from .decode_heads import SAMMaskDecoderHead
from .losses import BalancedBCELoss, MaskClassificationLoss, StructureLoss
from .peft import PEFT_METHODS, LoRA
from .segmentors import SAMEncoderDecoder

__all__ = [
    'SAMViT',
    'SAMMaskDecoderHead',
    'SAMEncoderDecoder',
    'PEFT_METHODS',
    'LoRA',
    'BalancedBCELoss',
    'MaskClassificationLoss',
    'StructureLoss',
]
