"""The SAM image-encoder families (``SAMBackboneBase`` subclasses, registered in mmseg's MODELS).

Every module of this package is imported here, so a new family's file registers itself
(docs/adding_a_backbone.md); the names below are the two families' public ones.
"""

import importlib
import pkgutil

from .base import BACKBONE_PLACES, BLOCK_PLACES, SAMBackboneBase, SAMBackboneBlock
from .sam2_hiera import SAM2_ARCHS, SAM2Hiera, SAM2HieraBlock
from .sam_attention import ATTN_IMPLS, SAMAttention
from .sam_vit import SAM_ARCHS, SAMBlock, SAMViT

for _module in pkgutil.iter_modules(__path__):  # families added as files register without an edit here
    importlib.import_module(f'{__name__}.{_module.name}')

__all__ = [
    'ATTN_IMPLS',
    'BACKBONE_PLACES',
    'BLOCK_PLACES',
    'SAM2_ARCHS',
    'SAM2Hiera',
    'SAM2HieraBlock',
    'SAMAttention',
    'SAMBackboneBase',
    'SAMBackboneBlock',
    'SAMBlock',
    'SAMViT',
    'SAM_ARCHS',
]
