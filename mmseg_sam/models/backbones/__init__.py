from .base import BACKBONE_PLACES, BLOCK_PLACES, SAMBackboneBase, SAMBackboneBlock
from .sam2_hiera import SAM2_ARCHS, SAM2Hiera, SAM2HieraBlock
from .sam_attention import ATTN_IMPLS, SAMAttention
from .sam_vit import SAM_ARCHS, SAMBlock, SAMViT

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
