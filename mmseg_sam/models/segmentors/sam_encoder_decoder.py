"""EncoderDecoder for SAM models: one checkpoint for both parts, PEFT auxiliary losses."""

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..backbones.base import SAMBackboneBase
from ..peft import collect_aux_losses

__all__ = ['SAMEncoderDecoder']


@MODELS.register_module()
class SAMEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder plus what SAM fine-tuning needs.

    - ``sam_checkpoint`` names the SAM checkpoint once: it fills ``backbone.checkpoint``
      and ``decode_head.checkpoint`` where those are unset, so a config (or
      ``--cfg-options model.sam_checkpoint=...``) points both parts at the same file.
      Only parts whose class takes a ``checkpoint`` argument get it: mmseg's own heads
      (``UPerHead``) start from their own initialisation.
    - Auxiliary losses that the backbone's PEFT layers report during a training
      forward (e.g. Conv-LoRA's load-balancing ``loss_moe``) are added to the loss dict.
    - ``test_cfg`` defaults to ``dict(mode='whole')``: SAM sees the whole image.
    - Inputs whose sides are not multiples of the backbone's ``size_divisor`` (SAMViT:
      its patch size) are padded at the bottom and right for inference (with 0, the
      data preprocessor's padding of normalised images) and the scores cropped back:
      ``mode='whole'`` on any image size and ``mode='slide'`` with mmseg's crops
      (769) or a border crop smaller than the crop size. Training inputs come at the
      data preprocessor's ``size``, which must be a multiple of ``size_divisor``
      (checked here: pad 769 crops to ``size=(784, 784)``).

    Args:
        backbone: backbone config (a SAMViT).
        decode_head: decode head config.
        sam_checkpoint: SAM checkpoint path (official or Hugging Face format).
        **kwargs: EncoderDecoder arguments.

    Attributes:
        supports_tta: whether ``tools/test.py --tta`` (flip test-time augmentation,
            ``SAMSegTTAModel``) applies to this segmentor's predictions.
    """

    supports_tta: ClassVar[bool] = True

    def __init__(
        self,
        backbone: Mapping[str, Any],
        decode_head: Mapping[str, Any],
        sam_checkpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        backbone, decode_head = dict(backbone), dict(decode_head)
        if sam_checkpoint is not None:
            if not _takes_checkpoint(backbone):
                raise ValueError(
                    f'sam_checkpoint={sam_checkpoint!r} is loaded by the backbone, but {backbone.get("type")!r} '
                    'takes no checkpoint argument: use a SAM backbone (SAMViT) or remove sam_checkpoint'
                )
            for part in (backbone, decode_head):
                if part.get('checkpoint') is None and _takes_checkpoint(part):
                    part['checkpoint'] = sam_checkpoint
        self.sam_checkpoint = sam_checkpoint
        if kwargs.get('test_cfg') is None:
            kwargs['test_cfg'] = ConfigDict(mode='whole')
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)
        divisor = self.size_divisor
        size = getattr(self.data_preprocessor, 'size', None)
        if size is not None and any(s % divisor for s in size):
            fit = tuple(-(-s // divisor) * divisor for s in size)
            raise ValueError(
                f'data_preprocessor size={tuple(size)} is not a multiple of the backbone size_divisor '
                f'{divisor}: pad the training crops to size={fit} (and give the backbone img_size={max(fit)})'
            )

    @property
    def size_divisor(self) -> int:
        """What the backbone's input sides must be multiples of: a SAM backbone's ``size_divisor``, else 1."""
        return self.backbone.size_divisor if isinstance(self.backbone, SAMBackboneBase) else 1

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Scores of ``inputs`` (B, C_in, H, W) as (B, C, H, W), padded to ``size_divisor`` and cropped back."""
        h, w = inputs.shape[-2:]
        pad_h, pad_w = -h % self.size_divisor, -w % self.size_divisor
        if not (pad_h or pad_w):
            return super().encode_decode(inputs, batch_img_metas)
        padded = F.pad(inputs, (0, pad_w, 0, pad_h))  # (B, C_in, H, W) -> (B, C_in, H + pad_h, W + pad_w)
        shape = (h + pad_h, w + pad_w)
        metas = [dict(meta, img_shape=shape, pad_shape=shape) for meta in batch_img_metas]
        return super().encode_decode(padded, metas)[
            ..., :h, :w
        ]  # (B, C, H + pad_h, W + pad_w) -> (B, C, H, W)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict[str, Tensor]:
        """Task losses of the heads plus the backbone's auxiliary losses."""
        with collect_aux_losses() as aux:  # what the backbone's PEFT layers report in this forward
            losses = super().loss(inputs, data_samples)
        for name, value in aux.items():
            if name in losses:
                raise KeyError(f'auxiliary loss {name!r} clashes with a head loss of the same name')
            losses[name] = value
        return losses


def _takes_checkpoint(part: Mapping[str, Any]) -> bool:
    """Whether the registered class of a part's config has a ``checkpoint`` argument."""
    cls = MODELS.get(part['type']) if isinstance(part.get('type'), str) else part.get('type')
    return cls is not None and 'checkpoint' in inspect.signature(cls).parameters
