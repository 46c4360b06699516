"""A SAMEncoderDecoder whose head segments the prompted instances of each data sample."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..decode_heads.prompt_set import PromptSet
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
        backbone: a SAM backbone config (SAMViT: ``img_size`` equal to the head's
            ``image_size``; SAM2Hiera: ``size_divisor`` dividing it).
        decode_head: a ``SAMPromptedHead`` config (``SAM2PromptedHead`` on SAM2Hiera).
        **kwargs: SAMEncoderDecoder arguments.
    """

    # A flipped image needs flipped prompts, instance masks and clicks, which the TTA model does not move.
    supports_tta = False

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
        divisor = self.size_divisor  # SAM2Hiera takes any multiple of it
        if self.decode_head.image_size % divisor:
            raise ValueError(
                f'the head image_size={self.decode_head.image_size} is not a multiple of the backbone '
                f'size_divisor={divisor}: inputs are padded to image_size, which the backbone must take'
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

    @torch.no_grad()
    def predict_with_prompts(self, inputs: Tensor, data_samples: SampleList) -> SampleList:
        """Segment the objects that each sample's ``prompts`` describe (interactive use, ``tools/infer.py``).

        Args:
            inputs: (B, 3, H, W) normalised images, as the data preprocessor gives them.
            data_samples: each with ``prompts``, an ``InstanceData`` of N objects in the
                original image's pixel frame (``ori_shape``): ``boxes`` (N, 4) xyxy and / or
                ``points`` (N, K, 2) (x, y) with ``point_labels`` (N, K) (1 positive, 0
                negative, -1 padding).

        Returns:
            The samples with ``pred_instances`` (``masks`` bool (N, H, W) and ``scores``, the
            predicted IoU, (N,)) at the original size, and ``pred_sem_seg``: 0 background,
            ``j + 1`` where object ``j`` is (the higher score on top where objects overlap).
        """
        feats = self.decode_head(self.extract_feat(self._pad(inputs)))
        for i, sample in enumerate(data_samples):
            if 'prompts' not in sample:
                raise ValueError(f'{sample.metainfo.get("img_path", "sample")} has no prompts')
            given = sample.prompts
            size = tuple(sample.metainfo['ori_shape'][:2])
            img_shape = tuple(sample.metainfo['img_shape'][:2])
            scale = inputs.new_tensor([img_shape[1] / size[1], img_shape[0] / size[0]])  # (x, y)
            boxes = (
                given.boxes.float().reshape(-1, 2, 2).mul(scale).reshape(-1, 4) if 'boxes' in given else None
            )
            points = (given.points.float() * scale, given.point_labels.long()) if 'points' in given else None
            prompts = PromptSet(points=points, boxes=boxes)
            masks, scores = self.decode_head.segment(feats, i, prompts, img_shape, size)
            label_map = torch.zeros(size, dtype=torch.long, device=masks.device)
            for j in scores.argsort().tolist():
                label_map[masks[j]] = j + 1
            sample.pred_instances = InstanceData(masks=masks, scores=scores)
            sample.pred_sem_seg = PixelData(data=label_map[None])
        return data_samples

    def _forward(self, inputs: Tensor, data_samples: SampleList | None = None) -> Tensor:
        """The image embedding (``mode='tensor'``); masks need prompts (:meth:`predict`)."""
        return self.decode_head(self.extract_feat(self._pad(inputs)))

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        raise RuntimeError(
            'a prompted model decodes per instance from the prompts of its data samples: use predict(inputs, '
            'data_samples)'
        )
