"""SAM 2's mask decoder as a prompt-free mmseg decode head, on SAM2Hiera's FPN levels."""

from typing import Any

import torch
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...utils.sam2_checkpoint import load_sam2_component
from ..sam2_modeling import Sam2Class
from .sam_mask_decoder_head import SAMMaskDecoderHead

__all__ = ['SAM2MaskDecoderHead', 'load_no_mem_embed']


def load_no_mem_embed(head: nn.Module, checkpoint: str) -> None:
    """Copy the checkpoint's ``no_mem_embed`` into ``head.no_mem_embed``, refusing another shape."""
    value = load_sam2_component(checkpoint, 'no_mem_embed')['no_mem_embed']
    if value.shape != head.no_mem_embed.shape:
        raise ValueError(
            f'cannot load {checkpoint}: no_mem_embed has shape {tuple(value.shape)}, the head '
            f'{tuple(head.no_mem_embed.shape)} (embed_dims={head.embed_dims})'
        )
    with torch.no_grad():
        head.no_mem_embed.copy_(value)


@MODELS.register_module()
class SAM2MaskDecoderHead(SAMMaskDecoderHead):
    """SAM 2.1's mask decoder without prompts, for semantic segmentation.

    The same head as :class:`SAMMaskDecoderHead` (modes ``'per_class_tokens'`` and
    ``'mask_classification'``, binary threshold, losses, label checks, initialisation
    of every mask token from mask token 0), with the decoder of the ``sam2`` package
    and what SAM 2 adds:

    - **high-resolution features**: it takes SAM2Hiera's three FPN levels (strides 4, 8,
      16). The stride-16 level plus SAM 2's ``no_mem_embed`` (what SAM 2 adds to an
      image without memory) is the image embedding the two-way transformer attends to;
      the stride-4 and stride-8 levels pass through the decoder's ``conv_s0`` /
      ``conv_s1`` and are added in its upscaling path, as ``SAM2Base.forward_image`` and
      ``MaskDecoder.predict_masks`` do;
    - **the object-score token**: it stays in the token sequence before the IoU token,
      as in SAM 2; its prediction head, like the IoU head, is not built (nothing is
      predicted from them without prompts) and their checkpoint weights are skipped.

    With the official weights and T mask tokens, the masks equal sam2's
    ``MaskDecoder.predict_masks`` run without sparse prompts and with that token set
    (tested). SAM 2's image predictor pads an empty prompt with one "not a point" token;
    this head, like the SAM 1 head and the Conv-LoRA reference, uses no sparse token.

    Args:
        num_classes, out_channels, mode, num_queries: see :class:`SAMMaskDecoderHead`.
        embed_dims: transformer width; must equal the backbone's ``out_channels`` (256).
        decoder_depth, decoder_num_heads, decoder_mlp_dims: the two-way transformer
            (SAM 2.1: 2, 8, 2048).
        mask_in_channels: hidden channels of the prompt encoder's mask branch (16).
        checkpoint: SAM 2.1 checkpoint (official ``.pt`` or Hugging Face ``Sam2Model``)
            to initialise the decoder, prompt encoder and ``no_mem_embed`` from.
        in_index: the three FPN levels, finest first (default ``(0, 1, 2)``).
        **kwargs: see :class:`SAMMaskDecoderHead`.
    """

    # sam2's, imported when the head is built (see mmseg_sam.models.sam2_modeling)
    prompt_encoder_cls = Sam2Class('PromptEncoder')
    mask_decoder_cls = Sam2Class('MaskDecoder')
    transformer_cls = Sam2Class('TwoWayTransformer')
    # as SAM2Base._build_sam_heads builds it for SAM 2.1
    mask_decoder_kwargs = dict(use_high_res_features=True, pred_obj_scores=True, pred_obj_scores_mlp=True)
    unused_decoder_parts = ('iou_prediction_head', 'pred_obj_score_head')

    def __init__(
        self,
        num_classes: int,
        in_index: tuple[int, int, int] | list[int] = (0, 1, 2),
        **kwargs: Any,
    ) -> None:
        if not isinstance(in_index, (list, tuple)) or len(in_index) != 3:
            raise ValueError(
                f'in_index must name 3 backbone levels (strides 4, 8, 16, finest first), got {in_index!r}'
            )
        super().__init__(num_classes, in_index=list(in_index), **kwargs)

    def _build_decoder(self, embed_dims: int, *args: int) -> None:
        """sam2's prompt encoder and mask decoder (see SAMMaskDecoderHead), and SAM 2's ``no_mem_embed``."""
        super()._build_decoder(embed_dims, *args)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, embed_dims))  # trained with the decoder

    def _read_checkpoint(self, checkpoint: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        decoder = load_sam2_component(checkpoint, 'sam_mask_decoder')  # first: the part a head needs most
        return load_sam2_component(checkpoint, 'sam_prompt_encoder'), decoder

    def _load_sam_decoder(self, checkpoint: str) -> None:
        """SAM 2's decoder and prompt encoder (as the SAM 1 head loads them), then ``no_mem_embed``."""
        super()._load_sam_decoder(checkpoint)
        load_no_mem_embed(self, checkpoint)

    def _decode(self, x: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Run SAM 2's two-way transformer and upscaling without prompts.

        Args:
            x: the three FPN levels (B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w).

        Returns:
            tuple[Tensor, Tensor]: mask token outputs (B, T, C) and mask logits
            (B, T, 4h, 4w).
        """
        feat_s0, feat_s1, embedding = x
        b, c, h, w = embedding.shape
        if c != self.embed_dims:
            raise ValueError(f'image embedding has {c} channels, the decoder expects {self.embed_dims}')
        if feat_s0.shape[-2:] != (4 * h, 4 * w) or feat_s1.shape[-2:] != (2 * h, 2 * w):
            raise ValueError(
                f'FPN levels of sizes {[tuple(f.shape[-2:]) for f in x]} are not strides 4, 8, 16 of one image '
                '(in_index must select them finest first)'
            )
        decoder = self.mask_decoder
        embedding = embedding + self.no_mem_embed.reshape(1, c, 1, 1)  # (1, 1, C) -> (1, C, 1, 1)
        image_pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0).expand(b, -1, -1, -1)  # (B, C, h, w)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, c, 1, 1)  # (1, C, 1, 1)
        tokens = torch.cat(
            [decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight]
        )
        tokens = tokens.unsqueeze(0).expand(b, -1, -1)  # (2 + T, C) -> (B, 2 + T, C)
        hs, src = decoder.transformer(embedding + dense, image_pe, tokens)  # (B, 2+T, C), (B, h*w, C)
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens]  # (B, T, C)
        src = src.transpose(1, 2).reshape(b, c, h, w)  # (B, h*w, C) -> (B, C, h, w)
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        upscaled = act1(ln1(dc1(src) + decoder.conv_s1(feat_s1)))  # (B, C/4, 2h, 2w)
        upscaled = act2(dc2(upscaled) + decoder.conv_s0(feat_s0))  # (B, C/8, 4h, 4w)
        mlps = decoder.output_hypernetworks_mlps
        if len(mlps) == 1:
            hyper_in = mlps[0](mask_tokens_out)  # shared MLP: (B, T, C) -> (B, T, C/8)
        else:
            hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(mlps)], dim=1)
        _, c8, uh, uw = upscaled.shape
        masks = hyper_in @ upscaled.reshape(b, c8, uh * uw)  # (B, T, C/8) @ (B, C/8, 4h*4w)
        return mask_tokens_out, masks.reshape(b, self.num_mask_tokens, uh, uw)
