from .prompt_set import PromptSet
from .sam2_mask_decoder_head import SAM2MaskDecoderHead
from .sam2_prompted_head import SAM2PromptedHead
from .sam_mask_decoder_head import SAMMaskDecoderHead
from .sam_prompted_head import SAMPromptedHead

__all__ = ['PromptSet', 'SAM2MaskDecoderHead', 'SAM2PromptedHead', 'SAMMaskDecoderHead', 'SAMPromptedHead']
