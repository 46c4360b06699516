"""SAM 2.1's whole promptable decoder (prompt encoder, mask decoder, IoU and object-score heads) as an mmseg head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...utils.checkpoint import load_strict
from ...utils.sam2_checkpoint import load_sam2_component
from ..sam2_modeling import Sam2Class, sam2_modeling
from .prompt_set import PromptSet
from .sam2_mask_decoder_head import load_no_mem_embed
from .sam_prompted_head import SAMPromptedHead

__all__ = ['SAM2PromptedHead']

_BACKBONE_STRIDE = 16  # SAM2Base.backbone_stride: the image embedding is the stride-16 FPN level
# SAM2Base builds its decoder with these for SAM 2.1 (sam2/configs/sam2.1/*.yaml); build_sam2
# (image inference) adds the dynamic multimask fallback, whose delta and threshold are these.
_SAM21_DECODER = dict(
    use_high_res_features=True,
    iou_prediction_use_sigmoid=True,
    pred_obj_scores=True,
    pred_obj_scores_mlp=True,
    use_multimask_token_for_obj_ptr=True,
    dynamic_multimask_stability_delta=0.05,
    dynamic_multimask_stability_thresh=0.98,
)


@MODELS.register_module()
class SAM2PromptedHead(SAMPromptedHead):
    """SAM 2.1's prompt encoder + mask decoder (IoU and object-score heads), trained and evaluated with prompts.

    :class:`SAMPromptedHead` (its training rounds, ambiguity rule, evaluation, frames and
    options) with sam2's ``PromptEncoder`` and whole ``MaskDecoder`` built as ``SAM2Base``
    builds them for SAM 2.1, plus SAM 2's ``no_mem_embed``, every key loaded strictly from a
    SAM 2.1 checkpoint (official ``.pt`` or Hugging Face ``Sam2Model``). What SAM 2 adds,
    and the rule each part follows:

    - **features** (``SAM2Base.forward_image``, ``SAM2ImagePredictor.set_image``): it takes
      SAM2Hiera's three FPN levels (strides 4, 8, 16; ``in_index=(0, 1, 2)``); once per
      image the stride-4 and stride-8 levels go through the decoder's ``conv_s0`` /
      ``conv_s1`` and ``no_mem_embed`` is added to the stride-16 level, the image embedding.
    - **prompts** (``SAM2ImagePredictor._predict``): a box enters the prompt encoder as two
      corner points labelled 2 and 3 placed before the clicks, and the points are always
      padded with one "not a point" token, as the predictor does.
    - **single mask** (``build_sam2``): in evaluation the single-mask output falls back to the
      best multimask output when its stability score is below 0.98
      (``dynamic_multimask_via_stability``, sam2's own code); in training it is the
      single-mask token, as in SAM 2's training. A frozen mask decoder stays in eval mode
      (:meth:`SAMPromptedHead.train`) and so falls back in training too.
    - **object score**: in training the masks of an instance whose object-score logit is
      <= 0 are set to -1024 (``SAM2Base._forward_sam_heads``, SAM 2's training path) and
      the logit is trained with a BCE to 1, every prompted instance being an object (SAM 2's
      ``MultiStepMultiMasksAndIous`` ``loss_class``: focal with gamma 0 and no alpha, weight 1
      in the released fine-tuning config), logged as ``loss_obj`` and averaged over instances
      and rounds like the other terms. In evaluation the masks are the decoder's logits
      unchanged, as ``SAM2ImagePredictor`` returns them (it does not apply the -1024 rule).
    - **frames** (``SAM2Transforms``): SAM 2 resizes images to the ``image_size`` square and
      upsamples the low-resolution logits straight to the original size; where the input is
      that square (``img_shape == (image_size, image_size)``) this head does the same, and
      for a padded input it crops the padding as ``Sam.postprocess_masks`` does.

    The multimask rule, the IoU ordering (highest predicted IoU goes on) and the mask /
    IoU losses are the parent's; SAM 2.1's fine-tuning config weighs mask focal 20, Dice 1
    and IoU 1 with an L1 IoU loss over all masks (``PromptedMaskLoss(iou_loss='l1')``).

    Args:
        num_classes: classes of the dataset, background included.
        image_size: side of the model input (SAM 2.1: 1024); a multiple of 16.
        embed_dims: transformer width; SAM2Hiera's ``out_channels`` (256).
        checkpoint: SAM 2.1 checkpoint (official ``.pt`` or Hugging Face ``Sam2Model``) for the
            prompt encoder, mask decoder and ``no_mem_embed``, loaded strictly.
        object_loss_weight: weight of the object-score BCE (SAM 2.1: 1; 0 logs it untrained).
        dynamic_multimask_via_stability: the single-mask fallback of ``build_sam2`` (True).
        in_index: the three FPN levels, finest first (default ``(0, 1, 2)``).
        **kwargs: :class:`SAMPromptedHead` arguments (``decoder_depth``, ``checkpoint``,
            ``freeze``, ``train_prompting``, ``test_prompting``, ``loss_decode``, ...);
            ``patch_size`` is SAM 2's backbone stride, 16.
    """

    def __init__(
        self,
        num_classes: int = 2,
        image_size: int = 1024,
        embed_dims: int = 256,
        checkpoint: str | None = None,
        object_loss_weight: float = 1.0,
        dynamic_multimask_via_stability: bool = True,
        in_index: Sequence[int] = (0, 1, 2),
        **kwargs: Any,
    ) -> None:
        if not isinstance(in_index, (list, tuple)) or len(in_index) != 3:
            raise ValueError(
                f'in_index must name 3 backbone levels (strides 4, 8, 16, finest first), got {in_index!r}'
            )
        if kwargs.get('patch_size', _BACKBONE_STRIDE) != _BACKBONE_STRIDE:
            raise ValueError(
                f'patch_size={kwargs["patch_size"]!r}: SAM 2 decodes the stride-{_BACKBONE_STRIDE} level'
            )
        kwargs.pop('patch_size', None)
        w = object_loss_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f'object_loss_weight must be a number >= 0, got {w!r}')
        if not isinstance(dynamic_multimask_via_stability, bool):
            raise ValueError(
                f'dynamic_multimask_via_stability must be True or False, got {dynamic_multimask_via_stability!r}'
            )
        self.object_loss_weight = float(w)
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        super().__init__(
            num_classes,
            image_size,
            patch_size=_BACKBONE_STRIDE,
            embed_dims=embed_dims,
            checkpoint=checkpoint,
            in_index=list(in_index),
            **kwargs,
        )

    # ------------------------------------------------------------------ building
    # sam2's, imported when the head is built (see mmseg_sam.models.sam2_modeling)
    prompt_encoder_cls = Sam2Class('PromptEncoder')
    mask_decoder_cls = Sam2Class('MaskDecoder')
    transformer_cls = Sam2Class('TwoWayTransformer')

    def _mask_decoder_extras(self) -> dict[str, Any]:
        """SAM 2.1's decoder settings (as ``SAM2Base._build_sam_heads`` builds them)."""
        return dict(dynamic_multimask_via_stability=self.dynamic_multimask_via_stability, **_SAM21_DECODER)

    def _build_decoder(self, embed_dims: int, *args: int) -> None:
        """sam2's ``PromptEncoder`` and ``MaskDecoder`` (the parent's builder), and ``no_mem_embed``."""
        super()._build_decoder(embed_dims, *args)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, embed_dims))  # (1, 1, C), SAM 2's layout

    def _load_sam_decoder(self, checkpoint: str) -> None:
        """The checkpoint's prompt encoder, mask decoder and ``no_mem_embed``, every key (strict)."""
        load_strict(self.mask_decoder, load_sam2_component(checkpoint, 'sam_mask_decoder'), str(checkpoint))
        load_strict(
            self.prompt_encoder, load_sam2_component(checkpoint, 'sam_prompt_encoder'), str(checkpoint)
        )
        load_no_mem_embed(self, checkpoint)
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: prompt encoder, mask decoder (IoU and object-score heads) and '
            f'no_mem_embed from {checkpoint}'
        )

    # ------------------------------------------------------------------ decoding
    def _embedding(self, inputs: list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        """The batch's decoder features, as ``SAM2ImagePredictor.set_image`` computes them once per image.

        Returns:
            list[Tensor]: ``conv_s0`` of the stride-4 level (B, C/8, 4h, 4w), ``conv_s1`` of
            the stride-8 level (B, C/4, 2h, 2w), and the stride-16 level plus ``no_mem_embed``
            (B, C, h, w).
        """
        feat_s0, feat_s1, embedding = self._transform_inputs(inputs)
        grid = self.image_size // self.patch_size
        shapes = [tuple(f.shape[1:]) for f in (feat_s0, feat_s1, embedding)]
        wanted = [(self.embed_dims, grid * s, grid * s) for s in (4, 2, 1)]
        if shapes != wanted:
            raise ValueError(
                f'FPN levels of shapes {shapes}, the head expects {wanted} (strides 4, 8, 16 of an '
                f'image_size={self.image_size} input, finest first): set the head image_size to the input '
                'size, embed_dims to the backbone out_channels, and in_index to the three levels'
            )
        decoder = self.mask_decoder
        c = self.embed_dims
        return [
            decoder.conv_s0(feat_s0),
            decoder.conv_s1(feat_s1),
            embedding + self.no_mem_embed.reshape(1, c, 1, 1),  # (1, 1, C) -> (1, C, 1, 1)
        ]

    def image_features(self, features: list[Tensor], index: int) -> list[Tensor]:
        """What :meth:`decode` takes for image ``index``: its three decoder features, each (1, ...)."""
        return [f[index : index + 1] for f in features]

    def decode(self, embedding: list[Tensor], prompts: PromptSet, multimask: bool) -> tuple[Tensor, ...]:
        """SAM 2's prompt encoder and mask decoder on one image's prompts (as ``SAM2ImagePredictor._predict``).

        Args:
            embedding: one image's features from :meth:`image_features`.
            prompts: N instances' prompts in the input frame.
            multimask: predict the three multimask outputs instead of the single mask.

        Returns:
            tuple[Tensor, Tensor, Tensor]: low-resolution logits (N, M, 4h, 4w) (in training
            -1024 where the object score is <= 0), predicted IoU (N, M) and object-score
            logits (N, 1); M = 3 when ``multimask`` else 1.
        """
        feat_s0, feat_s1, image_embed = embedding
        points = prompts.points
        if prompts.boxes is not None:  # SAM2ImagePredictor: box corners labelled 2, 3, before the points
            corners = prompts.boxes.reshape(-1, 2, 2)  # (N, 4) -> (N, 2, 2)
            labels = torch.tensor([[2, 3]], dtype=torch.int, device=corners.device).repeat(len(corners), 1)
            if points is not None:
                corners = torch.cat([corners, points[0]], dim=1)
                labels = torch.cat([labels, points[1]], dim=1)
            points = (corners, labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=prompts.mask_input)
        low_res, iou_pred, _, object_score = self.mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=True,  # one image, N prompts (the predictor's batched mode; equal for N = 1)
            high_res_features=[feat_s0, feat_s1],
        )
        if self.training:  # SAM2Base._forward_sam_heads: no object, no mask
            low_res = torch.where(object_score[:, :, None, None] > 0, low_res, sam2_modeling().NO_OBJ_SCORE)
        return low_res, iou_pred, object_score

    def extra_loss_terms(self, outputs: Sequence[Tensor]) -> dict[str, Tensor]:
        """``loss_obj``: the object-score logits' BCE to 1 (SAM 2's ``loss_class``), summed over instances."""
        (object_score,) = outputs  # (N, 1)
        bce = F.binary_cross_entropy_with_logits(
            object_score.float(), torch.ones_like(object_score, dtype=torch.float32), reduction='sum'
        )
        return {'loss_obj': self.object_loss_weight * bce}

    def postprocess(self, low_res: Tensor, img_shape: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Logits (N, M, 4h, 4w) -> (N, M, H, W): ``SAM2Transforms.postprocess_masks`` for an unpadded input."""
        if tuple(img_shape) != (self.image_size, self.image_size):
            return super().postprocess(low_res, img_shape, size)  # padded: crop it first, as SAM does
        return F.interpolate(low_res.float(), size, mode='bilinear', align_corners=False)

    def extra_repr(self) -> str:
        return (
            f'{super().extra_repr()}, object_loss_weight={self.object_loss_weight:g}, '
            f'dynamic_multimask_via_stability={self.dynamic_multimask_via_stability}'
        )
