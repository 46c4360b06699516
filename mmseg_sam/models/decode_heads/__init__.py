from .sam2_mask_decoder_head import SAM2MaskDecoderHead
from .sam_mask_decoder_head import SAMMaskDecoderHead

__all__ = ['SAM2MaskDecoderHead', 'SAMMaskDecoderHead']
