"""PEFT methods for SAM backbones: one method per file, registered in ``PEFT_METHODS``.

Every module of this package is imported here, so a new method registers itself by
existing: add ``<method>.py`` with a registered :class:`BasePEFTMethod` subclass and a
line in ``presets.PRESETS`` (see docs/adding_a_peft_method.md).
"""

import importlib
import pkgutil

from .adapter import Adapter, AdapterLayer
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
    mergeable_methods,
    mergeable_phrase,
)
from .bitfit import BitFit
from .bottleneck import BottleneckAdapter
from .cobot import COBOT
from .conv_lora import ConvLoRA, ConvLoRALinear
from .lora import LoRA
from .low_rank import LoRALinear
from .lst import LST, LadderSideNetwork
from .sam_adapter import SAMAdapter
from .ssf import SSF, SSFLayerNorm, SSFLinear
from .vpt import VPT, PromptedAttention, prompted_attention_class, register_prompted_attention
from .vpt_sam2 import PromptedMultiScaleAttention

for _module in pkgutil.iter_modules(__path__):  # methods added as files register without an edit here
    importlib.import_module(f'{__name__}.{_module.name}')

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
    'mergeable_methods',
    'mergeable_phrase',
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
    'PromptedMultiScaleAttention',
    'prompted_attention_class',
    'register_prompted_attention',
    'SAMAdapter',
    'SSF',
    'SSFLayerNorm',
    'SSFLinear',
    'VPT',
]
