"""SAM's mask decoder as a prompt-free mmseg decode head."""

from typing import Any

import torch
from mmengine.logging import MMLogger
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

from ...utils.checkpoint import load_sam_component, load_strict
from ..sam_modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

__all__ = ['SAMMaskDecoderHead']

_MODES = ('per_class_tokens',)


@MODELS.register_module()
class SAMMaskDecoderHead(BaseDecodeHead):
    """Segment Anything's mask decoder without prompts, for semantic segmentation.

    The decoder sees no sparse prompts and, as dense prompt, the frozen
    ``no_mask_embed`` broadcast over the image embedding, as SAM does when given no
    mask. It is built from segment_anything's ``MaskDecoder`` / ``TwoWayTransformer``
    / ``PromptEncoder`` and can start from the decoder of the SAM checkpoint.

    Mode ``'per_class_tokens'`` gives each output channel its own mask token and
    hypernetwork MLP, all initialised from SAM's token 0 (its single-mask output):

    - binary: ``out_channels=1`` (with ``num_classes=2``), sigmoid + ``threshold``;
    - multi-class: ``out_channels=num_classes``, softmax over the class masks.

    The low-resolution masks (4x the embedding grid) are returned as logits; mmseg
    resizes them bilinearly to the label size for the loss and to the input size for
    prediction. The prompt encoder is frozen; SAM's IoU head is not built (no IoU is
    predicted), its checkpoint weights are skipped on load. ``conv_seg`` of
    BaseDecodeHead is removed so that no parameter is unused under DDP.

    Args:
        num_classes: classes of the dataset (2 for binary).
        out_channels: 1 for binary, else ``num_classes``.
        mode: ``'per_class_tokens'``.
        embed_dims: transformer width; must equal the backbone's ``out_channels``
            (256 for SAM).
        decoder_depth: two-way transformer depth (2 for SAM).
        decoder_num_heads: attention heads (8 for SAM).
        decoder_mlp_dims: transformer MLP width (2048 for SAM).
        mask_in_channels: hidden channels of the prompt encoder's mask branch (16).
        checkpoint: SAM checkpoint (official or Hugging Face) to initialise the mask
            decoder and prompt encoder from.
        **kwargs: BaseDecodeHead arguments (``loss_decode``, ``threshold``,
            ``in_index``, ``align_corners``, ...).
    """

    def __init__(
        self,
        num_classes: int,
        out_channels: int | None = None,
        mode: str = 'per_class_tokens',
        embed_dims: int = 256,
        decoder_depth: int = 2,
        decoder_num_heads: int = 8,
        decoder_mlp_dims: int = 2048,
        mask_in_channels: int = 16,
        checkpoint: str | None = None,
        in_index: int = -1,
        dropout_ratio: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f'mode must be one of {_MODES}, got {mode!r}')
        if embed_dims % 8 or embed_dims % decoder_num_heads:
            raise ValueError(
                f'embed_dims={embed_dims} must be divisible by 8 and by decoder_num_heads={decoder_num_heads}'
            )
        kwargs.pop('init_cfg', None)  # weights come from SAM, not an mmseg init
        super().__init__(
            in_channels=embed_dims,
            channels=embed_dims,
            num_classes=num_classes,
            out_channels=out_channels,
            in_index=in_index,
            dropout_ratio=dropout_ratio,
            init_cfg=None,
            **kwargs,
        )
        del self.conv_seg
        self.mode = mode
        self.num_mask_tokens = self.out_channels
        self.embed_dims = embed_dims

        self.prompt_encoder = PromptEncoder(
            embed_dim=embed_dims,
            image_embedding_size=(64, 64),  # only used by point/box prompts
            input_image_size=(1024, 1024),
            mask_in_chans=mask_in_channels,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=embed_dims,
            transformer=TwoWayTransformer(
                depth=decoder_depth,
                embedding_dim=embed_dims,
                mlp_dim=decoder_mlp_dims,
                num_heads=decoder_num_heads,
            ),
            num_multimask_outputs=self.num_mask_tokens - 1,
        )
        del self.mask_decoder.iou_prediction_head  # unused without prompts

        if checkpoint is not None:
            self._load_sam_decoder(checkpoint)
        self.prompt_encoder.requires_grad_(False)

    def _load_sam_decoder(self, checkpoint: str) -> None:
        """Load SAM's decoder; every class token starts from SAM's mask token 0."""
        decoder = load_sam_component(checkpoint, 'mask_decoder')
        load_strict(self.prompt_encoder, load_sam_component(checkpoint, 'prompt_encoder'), str(checkpoint))
        state: dict[str, torch.Tensor] = {}
        token_keys = ('mask_tokens.weight',)
        for key, value in decoder.items():
            if key.startswith(('iou_prediction_head.', 'output_hypernetworks_mlps.')) or key in token_keys:
                continue
            state[key] = value
        if 'mask_tokens.weight' not in decoder:
            raise ValueError(f'checkpoint {checkpoint} has no mask_decoder.mask_tokens.weight')
        state['mask_tokens.weight'] = decoder['mask_tokens.weight'][:1].repeat(self.num_mask_tokens, 1)
        mlp0 = {
            k[len('output_hypernetworks_mlps.0.') :]: v
            for k, v in decoder.items()
            if k.startswith('output_hypernetworks_mlps.0.')
        }
        for i in range(self.num_mask_tokens):
            state.update({f'output_hypernetworks_mlps.{i}.{k}': v.clone() for k, v in mlp0.items()})
        load_strict(self.mask_decoder, state, str(checkpoint))
        MMLogger.get_current_instance().info(
            f'SAMMaskDecoderHead: mask decoder from {checkpoint}, {self.num_mask_tokens} token(s) '
            'initialised from mask token 0; IoU head weights skipped (not used without prompts)'
        )

    def forward(self, inputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decode masks from the image embedding.

        Args:
            inputs: backbone outputs; ``inputs[in_index]`` is the (B, C, h, w) embedding.

        Returns:
            Tensor: (B, out_channels, 4h, 4w) mask logits.
        """
        x = self._transform_inputs(inputs)
        b, c, h, w = x.shape
        if c != self.embed_dims:
            raise ValueError(f'image embedding has {c} channels, the decoder expects {self.embed_dims}')
        decoder = self.mask_decoder
        image_pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0).expand(b, -1, -1, -1)  # (B, C, h, w)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, c, 1, 1)  # (1, C, 1, 1)
        tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(b, -1, -1)  # (1 + T, C) -> (B, 1 + T, C)
        hs, src = decoder.transformer(x + dense, image_pe, tokens)  # (B, 1+T, C), (B, h*w, C)
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]  # (B, T, C)
        src = src.transpose(1, 2).reshape(b, c, h, w)  # (B, h*w, C) -> (B, C, h, w)
        upscaled = decoder.output_upscaling(src)  # (B, C/8, 4h, 4w)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, T, C/8)
        _, c8, uh, uw = upscaled.shape
        masks = hyper_in @ upscaled.reshape(b, c8, uh * uw)  # (B, T, C/8) @ (B, C/8, 4h*4w)
        return masks.reshape(b, self.num_mask_tokens, uh, uw)

    def train(self, mode: bool = True) -> 'SAMMaskDecoderHead':
        super().train(mode)
        self.prompt_encoder.eval()  # frozen: no train-time behaviour either
        return self

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, num_mask_tokens={self.num_mask_tokens}'
