from .sam_vit import SAM_ARCHS, SAMViT

__all__ = ['SAMViT', 'SAM_ARCHS']
