from .sam_encoder_decoder import SAMEncoderDecoder
from .sam_seg_tta import SAMSegTTAModel

__all__ = ['SAMEncoderDecoder', 'SAMSegTTAModel']
