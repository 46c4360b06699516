from .base import (
    PEFT_METHODS,
    BasePEFTMethod,
    PEFTLayerMixin,
    PEFTReport,
    collect_aux_losses,
    inject_peft,
    match_modules,
)
from .cobot import COBOT
from .conv_lora import ConvLoRA, ConvLoRALinear
from .lora import LoRA, LoRALinear

__all__ = [
    'PEFT_METHODS',
    'BasePEFTMethod',
    'PEFTLayerMixin',
    'PEFTReport',
    'collect_aux_losses',
    'inject_peft',
    'match_modules',
    'COBOT',
    'ConvLoRA',
    'ConvLoRALinear',
    'LoRA',
    'LoRALinear',
]
