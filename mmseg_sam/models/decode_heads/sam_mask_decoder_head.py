"""SAM's mask decoder as a prompt-free mmseg decode head."""

from typing import Any

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor, nn

from ...utils.checkpoint import load_sam_component, load_strict
from ..sam_modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

__all__ = ['SAMMaskDecoderHead']

_MODES = ('per_class_tokens', 'mask_classification')


@MODELS.register_module()
class SAMMaskDecoderHead(BaseDecodeHead):
    """Segment Anything's mask decoder without prompts, for semantic segmentation.

    The decoder sees no sparse prompts and, as dense prompt, the frozen
    ``no_mask_embed`` broadcast over the image embedding, as SAM does when given no
    mask. It is built from segment_anything's ``MaskDecoder`` / ``TwoWayTransformer``
    / ``PromptEncoder`` and can start from the decoder of the SAM checkpoint. Its mask
    tokens are copies of SAM's mask token 0 (the token of SAM's single-mask output)
    and its hypernetwork MLPs copies of MLP 0; SAM's other three mask tokens are not
    kept. The decoder's token self-attention therefore sees the IoU token and this
    head's T tokens instead of SAM's 1 + 4, so even a binary head (T = 1) does not
    reproduce SAM's single-mask output on the same image embedding; it equals
    segment_anything's ``MaskDecoder.predict_masks`` run with that token set. The
    Conv-LoRA reference builds its head the same way.

    Modes:

    - ``'per_class_tokens'``: one mask token and hypernetwork MLP per output channel.
      Binary: ``out_channels=1`` (with ``num_classes=2``), sigmoid + ``threshold``;
      multi-class: ``out_channels=num_classes``, softmax over the class masks.
    - ``'mask_classification'`` (Mask2Former-style, the Conv-LoRA reference's
      multi-class head): ``num_queries`` mask tokens, one shared hypernetwork MLP and
      a classification branch ``Linear(embed_dims, num_classes + 1)`` (the extra
      class is "no object"). Train with ``MaskClassificationLoss``; the prediction is
      ``semseg[c] = sum_q softmax(cls_q)[c] * sigmoid(mask_q)`` over the real classes.

    Masks are predicted at 4x the embedding grid. In ``per_class_tokens`` mode mmseg
    resizes the logits bilinearly to the label size for the loss and to the input
    size for prediction; in ``mask_classification`` mode the mask logits are resized
    to the input size before they are combined. The prompt encoder is frozen; SAM's
    IoU head is not built (no IoU is predicted) and its checkpoint weights are skipped.
    ``conv_seg`` of BaseDecodeHead is removed so that no parameter is unused under DDP.

    Args:
        num_classes: classes of the dataset, background included (2 for binary).
        out_channels: 1 for binary, else ``num_classes`` (the default).
        mode: ``'per_class_tokens'`` or ``'mask_classification'``.
        num_queries: mask tokens in ``'mask_classification'`` mode.
        embed_dims: transformer width; must equal the backbone's ``out_channels``
            (256 for SAM).
        decoder_depth: two-way transformer depth (2 for SAM).
        decoder_num_heads: attention heads (8 for SAM).
        decoder_mlp_dims: transformer MLP width (2048 for SAM).
        mask_in_channels: hidden channels of the prompt encoder's mask branch (16).
        checkpoint: SAM checkpoint (official or Hugging Face) to initialise the mask
            decoder and prompt encoder from.
        **kwargs: BaseDecodeHead arguments (``loss_decode``, ``ignore_index``,
            ``align_corners``, ...) and ``threshold``: for ``out_channels=1`` the
            decision ``sigmoid(logit) > threshold``, in (0, 1), default 0.5 (mmseg's
            own default is 0.3); the metrics, ``tools/infer.py`` and ``--show-dir`` all
            use it. For ``out_channels=1`` the logged ``acc_seg`` is the pixel
            accuracy of that decision.
    """

    def __init__(
        self,
        num_classes: int,
        out_channels: int | None = None,
        mode: str = 'per_class_tokens',
        num_queries: int = 20,
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
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f'num_classes must be an int >= 2 (background included), got {num_classes!r}; for binary '
                'segmentation write num_classes=2, out_channels=1 (one sigmoid foreground map)'
            )
        if embed_dims % 8 or embed_dims % decoder_num_heads:
            raise ValueError(
                f'embed_dims={embed_dims} must be divisible by 8 and by decoder_num_heads={decoder_num_heads}'
            )
        if mode == 'mask_classification':
            if out_channels not in (None, num_classes):
                raise ValueError(
                    f"mode='mask_classification' predicts one score map per class: out_channels must be "
                    f'num_classes={num_classes}, got {out_channels}'
                )
            if not isinstance(num_queries, int) or num_queries < 1:
                raise ValueError(f'num_queries must be a positive int, got {num_queries!r}')
            kwargs['loss_decode'] = _with_num_classes(kwargs.get('loss_decode'), num_classes)
        elif out_channels == 1 and num_classes != 2:
            raise ValueError(
                f'out_channels=1 (one sigmoid foreground map) is for binary segmentation, num_classes=2; got '
                f'num_classes={num_classes}: use out_channels={num_classes} (softmax over the classes)'
            )
        if (out_channels or num_classes) == 1:
            kwargs['threshold'] = _check_threshold(kwargs.get('threshold', 0.5))
        elif kwargs.get('threshold') is not None:
            raise ValueError(
                f'threshold={kwargs["threshold"]} only applies to a binary head with out_channels=1; this head '
                f'has {out_channels or num_classes} output channels (argmax over classes): remove threshold '
                'or set it to None'
            )
        kwargs.pop('init_cfg', None)  # weights come from SAM, not an mmseg init
        if isinstance(in_index, (list, tuple)):  # several levels (SAM 2's decoder): one list in
            kwargs.setdefault('input_transform', 'multiple_select')
        super().__init__(
            in_channels=[embed_dims] * len(in_index) if isinstance(in_index, (list, tuple)) else embed_dims,
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
        self.embed_dims = embed_dims
        if mode == 'mask_classification':
            self.num_mask_tokens, num_mlps = num_queries, 1  # one shared hypernetwork MLP
        else:
            self.num_mask_tokens = num_mlps = self.out_channels
        self._build_decoder(
            embed_dims, decoder_depth, decoder_num_heads, decoder_mlp_dims, mask_in_channels, num_mlps
        )
        if mode == 'mask_classification':
            self.cls_embed = nn.Linear(embed_dims, num_classes + 1)

        self.checkpoint = checkpoint  # frozen weights come from here (see SAMCheckpointHook)
        if checkpoint is not None:
            self._load_sam_decoder(checkpoint)
        self.prompt_encoder.requires_grad_(False)

    # The decoder family's modules (segment_anything's here; sam2's in SAM2MaskDecoderHead), the
    # MaskDecoder arguments beyond SAM's defaults, and the prediction heads a prompt-free head drops.
    prompt_encoder_cls: type[nn.Module] = PromptEncoder
    mask_decoder_cls: type[nn.Module] = MaskDecoder
    transformer_cls: type[nn.Module] = TwoWayTransformer
    mask_decoder_kwargs: dict[str, Any] = {}
    unused_decoder_parts: tuple[str, ...] = ('iou_prediction_head',)

    def _build_decoder(
        self,
        embed_dims: int,
        decoder_depth: int,
        decoder_num_heads: int,
        decoder_mlp_dims: int,
        mask_in_channels: int,
        num_mlps: int,
    ) -> None:
        """Build ``prompt_encoder`` and ``mask_decoder`` with T mask tokens and ``num_mlps`` MLPs."""
        self.prompt_encoder = self.prompt_encoder_cls(
            embed_dim=embed_dims,
            image_embedding_size=(64, 64),  # only used by point/box prompts
            input_image_size=(1024, 1024),
            mask_in_chans=mask_in_channels,
        )
        self.mask_decoder = self.mask_decoder_cls(
            transformer_dim=embed_dims,
            transformer=self.transformer_cls(
                depth=decoder_depth,
                embedding_dim=embed_dims,
                mlp_dim=decoder_mlp_dims,
                num_heads=decoder_num_heads,
            ),
            num_multimask_outputs=num_mlps - 1,
            **self.mask_decoder_kwargs,
        )
        for name in self.unused_decoder_parts:  # nothing is predicted from them without prompts
            delattr(self.mask_decoder, name)
        self.mask_decoder.mask_tokens = nn.Embedding(self.num_mask_tokens, embed_dims)
        self.mask_decoder.num_mask_tokens = self.num_mask_tokens

    def _read_checkpoint(self, checkpoint: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The checkpoint's prompt encoder and mask decoder weights (SAM's names, prefixes stripped)."""
        decoder = load_sam_component(checkpoint, 'mask_decoder')  # first: the part a head needs most
        return load_sam_component(checkpoint, 'prompt_encoder'), decoder

    def _load_sam_decoder(self, checkpoint: str) -> None:
        """Load SAM's decoder; every token starts from SAM's mask token 0, every MLP from MLP 0.

        The checkpoint's heads that a prompt-free head does not build (SAM's IoU head, and
        SAM 2's object-score head) are skipped.
        """
        prompt_encoder, decoder = self._read_checkpoint(checkpoint)
        load_strict(self.prompt_encoder, prompt_encoder, str(checkpoint))
        if 'mask_tokens.weight' not in decoder:
            raise ValueError(f'checkpoint {checkpoint} has no mask_decoder.mask_tokens.weight')
        built = {name for name, _ in self.mask_decoder.named_children()}
        state = {
            k: v
            for k, v in decoder.items()
            if k.split('.')[0] in built
            and not k.startswith('output_hypernetworks_mlps.')
            and k != 'mask_tokens.weight'
        }
        skipped = sorted({k.split('.')[0] for k in decoder if k.split('.')[0] not in built})
        state['mask_tokens.weight'] = decoder['mask_tokens.weight'][:1].repeat(self.num_mask_tokens, 1)
        prefix = 'output_hypernetworks_mlps.0.'
        mlp0 = {k[len(prefix) :]: v for k, v in decoder.items() if k.startswith(prefix)}
        for i in range(len(self.mask_decoder.output_hypernetworks_mlps)):
            state.update({f'output_hypernetworks_mlps.{i}.{k}': v.clone() for k, v in mlp0.items()})
        load_strict(self.mask_decoder, state, str(checkpoint))
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: mask decoder from {checkpoint}, {self.num_mask_tokens} token(s) '
            f'initialised from mask token 0; weights of {skipped} skipped (not used without prompts)'
        )

    def _decode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run SAM's two-way transformer and hypernetworks without prompts.

        Args:
            x: (B, C, h, w) image embedding.

        Returns:
            tuple[Tensor, Tensor]: mask token outputs (B, T, C) and mask logits
            (B, T, 4h, 4w).
        """
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
        mlps = decoder.output_hypernetworks_mlps
        if len(mlps) == 1:
            hyper_in = mlps[0](mask_tokens_out)  # shared MLP: (B, T, C) -> (B, T, C/8)
        else:
            hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(mlps)], dim=1)
        _, c8, uh, uw = upscaled.shape
        masks = hyper_in @ upscaled.reshape(b, c8, uh * uw)  # (B, T, C/8) @ (B, C/8, 4h*4w)
        return mask_tokens_out, masks.reshape(b, self.num_mask_tokens, uh, uw)

    def forward(self, inputs: list[Tensor] | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, Tensor]:
        """Decode masks from the image embedding ``inputs[in_index]`` (B, C, h, w).

        Returns:
            ``per_class_tokens``: (B, out_channels, 4h, 4w) mask logits.
            ``mask_classification``: class logits (B, Q, num_classes + 1) and mask
            logits (B, Q, 4h, 4w).
        """
        tokens, masks = self._decode(self._transform_inputs(inputs))
        if self.mode == 'mask_classification':
            return self.cls_embed(tokens), masks
        return masks

    def check_labels(self, batch_data_samples: SampleList) -> None:
        """Refuse ground-truth labels outside ``[0, num_classes)`` other than ``ignore_index``.

        Out-of-range labels make the cross-entropy fail without saying which file
        (on a GPU with a device-side assert) and make sigmoid losses train on
        nonsense. The check is one comparison per label pixel.

        Raises:
            ValueError: naming the bad values and each offending sample's mask file.
        """
        bad = [
            ((label < 0) | (label >= self.num_classes)) & (label != self.ignore_index)
            for label in (sample.gt_sem_seg.data for sample in batch_data_samples)
        ]
        if not bad or not bool(torch.stack([b.any() for b in bad]).any()):  # one device sync per batch
            return
        files = []
        for sample, mask in zip(batch_data_samples, bad):
            if bool(mask.any()):
                values = sample.gt_sem_seg.data[mask].unique()
                source = sample.metainfo.get('seg_map_path') or sample.metainfo.get('img_path', '<unknown>')
                files.append(f'{source}: {values[:8].tolist()}{" ..." if values.numel() > 8 else ""}')
        hint = (
            ' a binary mask must hold 0 and 1 (255 is ignored): map its foreground value to 1, e.g. with '
            'LoadBinaryAnnotations;'
            if self.num_classes == 2
            else ''
        )
        raise ValueError(
            f'labels outside [0, {self.num_classes}) (num_classes={self.num_classes}, '
            f'ignore_index={self.ignore_index}) in {len(files)} mask(s):{hint} ' + '; '.join(files)
        )

    def loss_by_feat(
        self, seg_logits: Tensor | tuple[Tensor, Tensor], batch_data_samples: SampleList
    ) -> dict:
        self.check_labels(batch_data_samples)
        if self.mode != 'mask_classification':
            losses = super().loss_by_feat(seg_logits, batch_data_samples)
            if self.out_channels == 1:  # mmseg's accuracy takes an argmax over the one channel: always 0
                losses['acc_seg'] = self.binary_accuracy(seg_logits, batch_data_samples)
            return losses
        cls_logits, mask_logits = seg_logits
        seg_label = self._stack_batch_gt(batch_data_samples).squeeze(1)  # (B, 1, H, W) -> (B, H, W)
        losses = {}
        for loss_module in (
            self.loss_decode if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        ):
            terms = loss_module(cls_logits, mask_logits, seg_label, ignore_index=self.ignore_index)
            for name, value in terms.items():
                losses[name] = losses[name] + value if name in losses else value
        return losses

    @torch.no_grad()
    def binary_accuracy(self, seg_logits: Tensor, batch_data_samples: SampleList) -> Tensor:
        """Pixel accuracy (%) of ``sigmoid(logits) > threshold`` over the labelled pixels of a batch.

        Args:
            seg_logits: (B, 1, h, w) foreground logits; resized to the label size as the loss does.

        Returns:
            Tensor: (1,) accuracy in percent (0 when no pixel is labelled).
        """
        label = self._stack_batch_gt(batch_data_samples)  # (B, 1, H, W)
        logits = F.interpolate(
            seg_logits, size=label.shape[2:], mode='bilinear', align_corners=self.align_corners
        )
        pred = (logits.sigmoid() > self.threshold).to(label.dtype)
        valid = label != self.ignore_index
        correct = (pred == label) & valid
        return (100.0 * correct.sum() / valid.sum().clamp_min(1)).float().reshape(1)

    def predict_by_feat(
        self, seg_logits: Tensor | tuple[Tensor, Tensor], batch_img_metas: list[dict]
    ) -> Tensor:
        if self.mode != 'mask_classification':
            return super().predict_by_feat(seg_logits, batch_img_metas)
        cls_logits, mask_logits = seg_logits
        meta = batch_img_metas[0]
        # mmseg's rule (BaseDecodeHead.predict_by_feat): slide inference marks its crop by a torch.Size
        if isinstance(meta['img_shape'], torch.Size):
            size = tuple(meta['img_shape'])
        else:
            size = meta['pad_shape'][:2] if 'pad_shape' in meta else meta['img_shape'][:2]
        mask_logits = F.interpolate(mask_logits, size=size, mode='bilinear', align_corners=self.align_corners)
        return semantic_inference(cls_logits, mask_logits)

    def train(self, mode: bool = True) -> 'SAMMaskDecoderHead':
        super().train(mode)
        self.prompt_encoder.eval()  # frozen: no train-time behaviour either
        return self

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}, num_mask_tokens={self.num_mask_tokens}'


def _check_threshold(threshold: Any) -> float:
    """The decision threshold of a binary head: a probability strictly between 0 and 1."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(
            f'threshold must be a probability in (0, 1) (foreground where sigmoid(logit) > threshold), got '
            f'{threshold!r}'
        )
    return float(threshold)


def _with_num_classes(loss_decode: Any, num_classes: int) -> Any:
    """Fill ``num_classes`` into MaskClassificationLoss configs; refuse a different value."""
    if loss_decode is None:
        raise ValueError("mode='mask_classification' needs loss_decode=dict(type='MaskClassificationLoss')")
    cfgs = [loss_decode] if isinstance(loss_decode, dict) else list(loss_decode)
    filled = []
    for cfg in cfgs:
        cfg = dict(cfg)
        if cfg.get('type') == 'MaskClassificationLoss':
            given = cfg.setdefault('num_classes', num_classes)
            if given != num_classes:
                raise ValueError(
                    f'MaskClassificationLoss num_classes={given} differs from the head num_classes={num_classes}'
                )
        filled.append(cfg)
    return filled[0] if isinstance(loss_decode, dict) else filled


def semantic_inference(cls_logits: Tensor, mask_logits: Tensor) -> Tensor:
    """Per-class scores from mask classification outputs.

    Args:
        cls_logits: (B, Q, C + 1) class logits, the last class being "no object".
        mask_logits: (B, Q, H, W) mask logits.

    Returns:
        Tensor: (B, C, H, W) with ``out[b, c] = sum_q softmax(cls[b, q])[c] * sigmoid(mask[b, q])``.
    """
    probs = cls_logits.float().softmax(dim=-1)[..., :-1]  # drop no-object: (B, Q, C)
    return torch.einsum('bqc,bqhw->bchw', probs, mask_logits.float().sigmoid())
