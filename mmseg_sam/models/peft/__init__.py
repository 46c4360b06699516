from .adapter import Adapter, AdapterLayer, BottleneckAdapter
from .adaptformer import AdaptFormer, AdaptFormerLayer
from .aux_losses import collect_aux_losses, report_aux_loss
from .base import (
    PEFT_METHODS,
    BasePEFTMethod,
    PEFTLayerMixin,
    PEFTReport,
    inject_peft,
    match_modules,
    merge_peft,
)
from .bitfit import BitFit
from .cobot import COBOT
from .conv_lora import ConvLoRA, ConvLoRALinear
from .lora import LoRA, LoRALinear
from .lst import LST, LadderSideNetwork
from .sam_adapter import SAMAdapter
from .ssf import SSF, SSFLayerNorm, SSFLinear
from .vpt import VPT, PromptedAttention

__all__ = [
    'PEFT_METHODS',
    'BasePEFTMethod',
    'PEFTLayerMixin',
    'PEFTReport',
    'collect_aux_losses',
    'report_aux_loss',
    'inject_peft',
    'match_modules',
    'merge_peft',
    'Adapter',
    'AdapterLayer',
    'AdaptFormer',
    'AdaptFormerLayer',
    'BitFit',
    'BottleneckAdapter',
    'COBOT',
    'ConvLoRA',
    'ConvLoRALinear',
    'LoRA',
    'LoRALinear',
    'LST',
    'LadderSideNetwork',
    'PromptedAttention',
    'SAMAdapter',
    'SSF',
    'SSFLayerNorm',
    'SSFLinear',
    'VPT',
]
