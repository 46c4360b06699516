"""A SAMEncoderDecoder whose head segments the prompted instances of each data sample."""

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..decode_heads.sam_prompted_head import SAMPromptedHead
from .sam_encoder_decoder import SAMEncoderDecoder

__all__ = ['SAMPromptedEncoderDecoder']


@MODELS.register_module()
class SAMPromptedEncoderDecoder(SAMEncoderDecoder):
    """SAM with its prompts: training and evaluation on the instances of ``gt_instances``.

    mmseg's ``EncoderDecoder`` hands its head only the image metas at inference; the
    prompts are in the data samples, so :meth:`predict` gives the head the samples and
    the head fills ``pred_instances`` (box-prompted and clicked masks) and a
    ``pred_sem_seg`` painted from them. Inputs are padded at the bottom and right to
    the head's ``image_size`` square, as ``Sam.preprocess`` pads (the data
    preprocessor's normalised 0). Training is ``SAMEncoderDecoder``'s (the backbone's
    PEFT auxiliary losses included). Slide inference and test-time augmentation do not
    apply to prompts and are refused.

    Args:
        backbone: a SAM backbone config (``img_size`` equal to the head's ``image_size``).
        decode_head: a ``SAMPromptedHead`` config.
        **kwargs: SAMEncoderDecoder arguments.
    """

    def __init__(self, backbone: Mapping[str, Any], decode_head: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)
        if not isinstance(self.decode_head, SAMPromptedHead):
            raise ValueError(
                f'SAMPromptedEncoderDecoder needs a SAMPromptedHead, got {type(self.decode_head).__name__}: '
                'prompt-free heads run in SAMEncoderDecoder'
            )
        if getattr(self, 'auxiliary_head', None) is not None:
            raise ValueError('SAMPromptedEncoderDecoder takes no auxiliary_head')
        img_size = getattr(self.backbone, 'img_size', None)
        if img_size is not None and img_size != self.decode_head.image_size:
            raise ValueError(
                f'backbone img_size={img_size} differs from the head image_size={self.decode_head.image_size}: '
                'the prompt encoder maps prompts into the input SAM sees, set both to the same size'
            )
        if self.test_cfg.get('mode', 'whole') != 'whole':
            raise ValueError(
                f'test_cfg mode={self.test_cfg["mode"]!r}: prompted inference sees the whole image'
            )

    def _pad(self, inputs: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 3, S, S), S the head's ``image_size`` (bottom / right padding with 0)."""
        size = self.decode_head.image_size
        h, w = inputs.shape[-2:]
        if h > size or w > size:
            raise ValueError(
                f'input of {h}x{w} is larger than the prompted head image_size={size}: resize images so that '
                f'the longer side is {size} (e.g. Resize(scale=({size}, {size}), keep_ratio=True))'
            )
        return F.pad(inputs, (0, size - w, 0, size - h))

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict[str, Tensor]:
        return super().loss(self._pad(inputs), data_samples)

    def predict(self, inputs: Tensor, data_samples: SampleList | None = None) -> SampleList:
        """Each sample's instances segmented under the head's ``test_prompting``."""
        if data_samples is None:
            raise ValueError('prompted inference needs data samples with gt_instances and their prompts')
        feats = self.extract_feat(self._pad(inputs))
        return self.decode_head.predict_prompted(feats, data_samples)

    def _forward(self, inputs: Tensor, data_samples: SampleList | None = None) -> Tensor:
        """The image embedding (``mode='tensor'``); masks need prompts (:meth:`predict`)."""
        return self.decode_head(self.extract_feat(self._pad(inputs)))

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        raise RuntimeError(
            'a prompted model decodes per instance from the prompts of its data samples: use predict(inputs, '
            'data_samples)'
        )
