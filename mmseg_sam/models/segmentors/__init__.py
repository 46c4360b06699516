from .sam_encoder_decoder import SAMEncoderDecoder
from .sam_prompted_encoder_decoder import SAMPromptedEncoderDecoder
from .sam_seg_tta import SAMSegTTAModel

__all__ = ['SAMEncoderDecoder', 'SAMPromptedEncoderDecoder', 'SAMSegTTAModel']
