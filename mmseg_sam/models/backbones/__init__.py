from .sam_attention import ATTN_IMPLS, SAMAttention
from .sam_vit import SAM_ARCHS, SAMBlock, SAMViT

__all__ = ['ATTN_IMPLS', 'SAMAttention', 'SAMBlock', 'SAMViT', 'SAM_ARCHS']
