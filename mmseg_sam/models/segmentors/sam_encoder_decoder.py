"""EncoderDecoder for SAM models: one checkpoint for both parts, PEFT auxiliary losses."""

from collections.abc import Mapping
from typing import Any

from mmengine.config import ConfigDict
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..peft import collect_aux_losses

__all__ = ['SAMEncoderDecoder']


@MODELS.register_module()
class SAMEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder plus what SAM fine-tuning needs.

    - ``sam_checkpoint`` names the SAM checkpoint once: it fills ``backbone.checkpoint``
      and ``decode_head.checkpoint`` where those are unset, so a config (or
      ``--cfg-options model.sam_checkpoint=...``) points both parts at the same file.
    - Auxiliary losses that the backbone's PEFT layers report during a training
      forward (e.g. Conv-LoRA's load-balancing ``loss_moe``) are added to the loss dict.
    - ``test_cfg`` defaults to ``dict(mode='whole')``: SAM sees the whole image.

    Args:
        backbone: backbone config (a SAMViT).
        decode_head: decode head config.
        sam_checkpoint: SAM checkpoint path (official or Hugging Face format).
        **kwargs: EncoderDecoder arguments.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        decode_head: Mapping[str, Any],
        sam_checkpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        backbone, decode_head = dict(backbone), dict(decode_head)
        if sam_checkpoint is not None:
            for part in (backbone, decode_head):
                if part.get('checkpoint') is None:
                    part['checkpoint'] = sam_checkpoint
        self.sam_checkpoint = sam_checkpoint
        if kwargs.get('test_cfg') is None:
            kwargs['test_cfg'] = ConfigDict(mode='whole')
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict[str, Tensor]:
        """Task losses of the heads plus the backbone's auxiliary losses."""
        with collect_aux_losses() as aux:  # what the backbone's PEFT layers report in this forward
            losses = super().loss(inputs, data_samples)
        for name, value in aux.items():
            if name in losses:
                raise KeyError(f'auxiliary loss {name!r} clashes with a head loss of the same name')
            losses[name] = value
        return losses
