from .sam_encoder_decoder import SAMEncoderDecoder

__all__ = ['SAMEncoderDecoder']
