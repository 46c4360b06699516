"""SAM's whole promptable decoder (prompt encoder, mask decoder, IoU head) as an mmseg head."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData, PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from ...utils.checkpoint import load_sam_component, load_strict
from ..losses.prompted_mask_loss import PromptedMaskLoss
from ..sam_modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from .clicks import next_clicks, sample_error_points
from .prompt_set import PromptSet, first_prompts, frame_scale, sample_instances, to_input
from .round_gradients import RoundGradients, attach

__all__ = ['SAMPromptedHead', 'PromptSet']

_FREEZABLE = ('prompt_encoder', 'mask_decoder')
_TRAIN_KEYS = dict(box_prob=1.0, correction_rounds=0, mask_only_rounds=0)
_TEST_KEYS = dict(box=True, clicks=0)
ROUND_MEMORY = ('backward', 'recompute', 'keep')


@MODELS.register_module()
class SAMPromptedHead(BaseDecodeHead):
    """Segment Anything's prompt encoder + mask decoder + IoU head, trained and evaluated with prompts.

    Unlike the prompt-free :class:`SAMMaskDecoderHead`, this head keeps SAM's decoder
    whole (its four mask tokens, hypernetwork MLPs and IoU head, loaded strictly from
    the SAM checkpoint) and calls segment_anything's ``PromptEncoder`` and
    ``MaskDecoder`` exactly as ``Sam.forward`` / ``SamPredictor.predict_torch`` do, so
    the exported checkpoint gives the same masks in segment_anything under the same
    prompt. It segments the instances of ``data_sample.gt_instances`` (made by
    ``GenerateInstances`` or an instance loader, with prompts from ``SamplePrompts``,
    packed by ``PackPromptedSegInputs``) and is run by ``SAMPromptedEncoderDecoder``.

    Frames: prompts and instance masks are in the frame of the packed ground truth (the
    image as loaded when annotations are loaded after ``Resize``, as in mmseg's test
    pipelines; the resized image in training pipelines). They are mapped into the model
    input as ``SamPredictor`` maps them (coordinates scaled by ``img_shape`` over the
    mask size) and the logits back as ``Sam.postprocess_masks`` does (upsampled to
    ``image_size``, cropped to ``img_shape``, resized to the mask size).

    Training (per image, per instance): the first prompt is the instance's box with
    probability ``train_prompting['box_prob']`` (SAM: 0.5, COBOT and MedSAM: 1.0), else
    its sampled points. A single point is ambiguous: the three multimask outputs are
    predicted and only the lowest loss of the three is kept (SAM's rule); with a box
    or several points the single-mask output is used. Then ``correction_rounds``
    rounds each add one point drawn uniformly from the error region of the last
    prediction (see ``clicks.py``), and ``mask_only_rounds`` rounds add none (SAM: 8
    and 2; one mask-only round at the end, the others at random positions); every
    round after the first gives the last round's low-resolution logits of its chosen
    mask (the highest predicted IoU) back as the mask prompt, detached, as SAM's
    recipe and micro-sam do. Every round's loss counts (mean over instances and
    rounds); the image embedding gets the gradients of all rounds.

    Under distributed training the divisor is the mean over processes of their
    instance-round counts (mmdet's and Mask2Former's rule), so once DDP averages the
    gradients every instance of the global batch weighs the same, however the instances
    are spread over the processes.

    Memory: a round's decoder, upsampled logits and loss terms are needed only for its
    own gradients, since the next round's mask prompt and point come from detached
    outputs. ``round_memory`` says what becomes of them:

    - ``'backward'`` (default): each round is back-propagated as soon as its loss is
      known, into a detached copy of the image embedding and the head's weights, and its
      activations freed; the summed gradients join the step's graph through one autograd
      function (``round_gradients.py``), so the step keeps one backward through the
      encoder, one optimizer update and one DDP all-reduce. Nothing is computed twice.
      Under fp16 autocast (whose loss scale a round's own backward cannot know) the
      rounds are recomputed instead, with a warning.
    - ``'recompute'``: each round under non-reentrant activation checkpointing: its
      activations are dropped after the forward and recomputed in the backward (the
      decoder's forward runs twice).
    - ``'keep'``: every round in one graph until the step's backward (the most memory).

    All three give the same gradients (tested to 1e-5; under bf16 autocast ``'backward'``
    sums the decoder weights' per-round gradients in float32 where one graph sums them in
    bf16, so those differ by that graph's bf16 rounding). ``instance_chunk`` bounds how
    many instances one decoder call holds: a round's instances are decoded in chunks of
    that many, after the round's points are drawn for all of them, so the peak stops
    growing with the instances per image; the decoder treats instances independently,
    so the gradients are the same.

    Evaluation (``test_prompting``): ``box=True`` segments every instance from its box
    (``pred_instances.box_masks``); ``clicks=K`` runs K simulated clicks per instance
    (RITM's protocol, ``clicks.next_clicks``), the first from nothing with SAM's
    multimask output and the highest predicted IoU kept (as a ``SamPredictor`` user
    would), the next ones single-mask with the previous logits as the mask prompt
    (``pred_instances.click_masks``, (N, K, H, W)). ``InteractiveSegMetric`` scores them.

    Args:
        num_classes: classes of the dataset, background included (2 for binary).
        image_size: side of the model input (the square SAM pads images to; SAM: 1024);
            the prompt encoder's ``input_image_size``.
        patch_size: the encoder's stride: the image embedding is ``image_size //
            patch_size`` on a side.
        embed_dims: transformer width (256 for SAM).
        decoder_depth, decoder_num_heads, decoder_mlp_dims: SAM's two-way transformer
            (2, 8, 2048).
        mask_in_channels: hidden channels of the prompt encoder's mask branch (16).
        iou_head_depth, iou_head_hidden_dim: SAM's IoU head (3, 256).
        num_multimask_outputs: SAM's 3.
        checkpoint: SAM checkpoint (official or Hugging Face) for the prompt encoder and
            mask decoder, loaded strictly.
        freeze: parts kept frozen: ``'prompt_encoder'`` (MedSAM), ``'mask_decoder'``.
        train_prompting: ``box_prob``, ``correction_rounds``, ``mask_only_rounds``.
        round_memory: ``'backward'``, ``'recompute'`` or ``'keep'`` (see Memory above).
        instance_chunk: at most this many instances per decoder call in training; None
            decodes all of an image's instances at once.
        test_prompting: ``box`` (bool) and ``clicks`` (int >= 0).
        loss_decode: a ``PromptedMaskLoss`` config.
        **kwargs: BaseDecodeHead arguments (``ignore_index``, ``in_index``, ...).
    """

    def __init__(
        self,
        num_classes: int = 2,
        image_size: int = 1024,
        patch_size: int = 16,
        embed_dims: int = 256,
        decoder_depth: int = 2,
        decoder_num_heads: int = 8,
        decoder_mlp_dims: int = 2048,
        mask_in_channels: int = 16,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        num_multimask_outputs: int = 3,
        checkpoint: str | None = None,
        freeze: Sequence[str] = (),
        train_prompting: Mapping[str, Any] | None = None,
        test_prompting: Mapping[str, Any] | None = None,
        loss_decode: Mapping[str, Any] | None = None,
        in_index: int | Sequence[int] = -1,
        round_memory: str = 'backward',
        instance_chunk: int | None = None,
        **kwargs: Any,
    ) -> None:
        if round_memory not in ROUND_MEMORY:
            raise ValueError(f'round_memory must be one of {ROUND_MEMORY}, got {round_memory!r}')
        if instance_chunk is not None and (
            isinstance(instance_chunk, bool) or not isinstance(instance_chunk, int) or instance_chunk < 1
        ):
            raise ValueError(
                f'instance_chunk must be None (all instances in one decoder call) or an int >= 1, got '
                f'{instance_chunk!r}'
            )
        self.round_memory = round_memory
        self.instance_chunk = instance_chunk
        self._told_fp16 = False
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f'num_classes must be an int >= 2 (background included), got {num_classes!r}')
        if not isinstance(image_size, int) or not isinstance(patch_size, int) or image_size % patch_size:
            raise ValueError(
                f'image_size={image_size!r} must be a multiple of patch_size={patch_size!r} (the encoder stride)'
            )
        freeze = tuple(freeze)
        bad = [part for part in freeze if part not in _FREEZABLE]
        if bad:
            raise ValueError(f'freeze may name {_FREEZABLE}, got {bad}')
        self.train_prompting = _options('train_prompting', train_prompting, _TRAIN_KEYS)
        self.test_prompting = _options('test_prompting', test_prompting, _TEST_KEYS)
        _check_prompting(self.train_prompting, self.test_prompting)
        kwargs.pop('init_cfg', None)  # weights come from SAM
        kwargs.pop('out_channels', None)
        kwargs.setdefault('threshold', 0.5)
        if isinstance(in_index, (list, tuple)):
            kwargs.setdefault('input_transform', 'multiple_select')
        super().__init__(
            in_channels=[embed_dims] * len(in_index) if isinstance(in_index, (list, tuple)) else embed_dims,
            channels=embed_dims,
            num_classes=num_classes,
            out_channels=1 if num_classes == 2 else num_classes,
            in_index=in_index,
            loss_decode=dict(type='PromptedMaskLoss') if loss_decode is None else loss_decode,
            init_cfg=None,
            **kwargs,
        )
        del self.conv_seg
        if not isinstance(self.loss_decode, PromptedMaskLoss):
            raise ValueError(
                f'loss_decode must be a PromptedMaskLoss (per-mask terms and the IoU head loss), got '
                f'{type(self.loss_decode).__name__}'
            )
        self.image_size, self.patch_size, self.embed_dims = image_size, patch_size, embed_dims
        self._build_decoder(
            embed_dims,
            decoder_depth,
            decoder_num_heads,
            decoder_mlp_dims,
            mask_in_channels,
            iou_head_depth,
            iou_head_hidden_dim,
            num_multimask_outputs,
        )
        self.checkpoint = checkpoint
        if checkpoint is not None:
            self._load_sam_decoder(checkpoint)
        self.freeze = freeze
        for part in freeze:
            getattr(self, part).requires_grad_(False)

    # ------------------------------------------------------------------ building
    # The decoder family's modules (segment_anything's here; sam2's in SAM2PromptedHead).
    prompt_encoder_cls: type[nn.Module] = PromptEncoder
    mask_decoder_cls: type[nn.Module] = MaskDecoder
    transformer_cls: type[nn.Module] = TwoWayTransformer

    def _mask_decoder_extras(self) -> dict[str, Any]:
        """MaskDecoder arguments beyond segment_anything's (none here; SAM 2.1's in SAM2PromptedHead)."""
        return {}

    def _build_decoder(
        self,
        embed_dims: int,
        depth: int,
        num_heads: int,
        mlp_dims: int,
        mask_in_channels: int,
        iou_head_depth: int,
        iou_head_hidden_dim: int,
        num_multimask_outputs: int,
    ) -> None:
        """The family's ``PromptEncoder`` and ``MaskDecoder``, as its builder (``build_sam``) builds them."""
        grid = self.image_size // self.patch_size
        self.prompt_encoder = self.prompt_encoder_cls(
            embed_dim=embed_dims,
            image_embedding_size=(grid, grid),
            input_image_size=(self.image_size, self.image_size),
            mask_in_chans=mask_in_channels,
        )
        self.mask_decoder = self.mask_decoder_cls(
            transformer_dim=embed_dims,
            transformer=self.transformer_cls(
                depth=depth, embedding_dim=embed_dims, mlp_dim=mlp_dims, num_heads=num_heads
            ),
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            **self._mask_decoder_extras(),
        )

    def _load_sam_decoder(self, checkpoint: str) -> None:
        """The checkpoint's prompt encoder and mask decoder, every key (strict)."""
        load_strict(self.mask_decoder, load_sam_component(checkpoint, 'mask_decoder'), str(checkpoint))
        load_strict(self.prompt_encoder, load_sam_component(checkpoint, 'prompt_encoder'), str(checkpoint))
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: prompt encoder and mask decoder (IoU head included) from {checkpoint}'
        )

    # ------------------------------------------------------------------ decoding
    def _embedding(self, inputs: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """The image embedding (B, C, h, w), checked against ``image_size`` / ``patch_size``."""
        x = self._transform_inputs(inputs)
        grid = self.image_size // self.patch_size
        if x.shape[1] != self.embed_dims or tuple(x.shape[-2:]) != (grid, grid):
            raise ValueError(
                f'image embedding of shape {tuple(x.shape)}, the head expects (B, {self.embed_dims}, {grid}, {grid}) '
                f'(image_size={self.image_size} / patch_size={self.patch_size}): set the head image_size to the '
                'backbone img_size and pad inputs to it'
            )
        return x

    def image_features(self, features: Tensor, index: int) -> Tensor:
        """What :meth:`decode` takes for image ``index`` of the batch's features: (1, C, h, w)."""
        return features[index : index + 1]

    def decode(self, embedding: Tensor, prompts: PromptSet, multimask: bool) -> tuple[Tensor, ...]:
        """SAM's prompt encoder and mask decoder on one image's prompts (as ``Sam.forward``).

        Args:
            embedding: (1, C, h, w) image embedding.
            prompts: N instances' prompts in the input frame.
            multimask: predict the three multimask outputs instead of the single mask.

        Returns:
            tuple[Tensor, ...]: low-resolution logits (N, M, 4h, 4w) and predicted IoU (N, M),
            M = 3 when ``multimask`` else 1. A family whose decoder predicts more returns it
            after these two (SAM 2: object-score logits), and :meth:`extra_loss_terms` trains it.
        """
        sparse, dense = self.prompt_encoder(
            points=prompts.points, boxes=prompts.boxes, masks=prompts.mask_input
        )
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def extra_loss_terms(self, outputs: Sequence[Tensor]) -> dict[str, Tensor]:
        """Loss terms, summed over the N instances, of what :meth:`decode` returns after the
        logits and IoU (SAM predicts nothing more: none)."""
        return {}

    def postprocess(self, low_res: Tensor, img_shape: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Logits (N, M, 4h, 4w) -> (N, M, H, W) in the masks' frame (``Sam.postprocess_masks``)."""
        masks = F.interpolate(
            low_res.float(), (self.image_size, self.image_size), mode='bilinear', align_corners=False
        )
        masks = masks[..., : img_shape[0], : img_shape[1]]  # drop the padding
        return F.interpolate(masks, size, mode='bilinear', align_corners=False)

    def forward(self, inputs: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """The image embedding; decoding needs prompts (:meth:`loss`, :meth:`predict_prompted`)."""
        return self._embedding(inputs)

    # ------------------------------------------------------------------ training
    def loss(
        self, inputs: list[Tensor] | tuple[Tensor, ...], batch_data_samples: SampleList, train_cfg: Any
    ) -> dict:
        """Prompted mask, IoU losses over every instance and round of the batch (see the class docstring)."""
        embedding = self._embedding(inputs)
        opts = self.train_prompting
        rounds = 1 + opts['correction_rounds'] + opts['mask_only_rounds']
        batch = [
            (i, *sample_instances(sample, self.ignore_index)) for i, sample in enumerate(batch_data_samples)
        ]
        count = sum(len(inst) for _, inst, _, _ in batch) * rounds
        if count == 0:
            files = [
                s.metainfo.get('seg_map_path', s.metainfo.get('img_path', '?')) for s in batch_data_samples
            ]
            raise ValueError(
                f'no instance to prompt in this batch ({files}): train with GenerateInstances(on_empty="skip") '
                'so that images without instances are replaced'
            )
        flat = list(embedding) if isinstance(embedding, (list, tuple)) else [embedding]
        divisor = mean_count_over_processes(count, flat[0].device)
        mode = self._round_memory_now(embedding)
        sink = None
        if mode == 'backward':  # the rounds run on leaf copies of the embedding
            sink = RoundGradients([*flat, *(p for p in self.parameters() if p.requires_grad)], divisor)
            leaves = [sink.leaf(t) for t in flat]
            embedding = leaves if isinstance(embedding, (list, tuple)) else leaves[0]
        total: dict[str, Tensor] = {}
        for i, inst, valid, img_shape in batch:
            if len(inst) == 0:
                continue
            gt = inst.masks.bool()
            scale = frame_scale(img_shape, gt.shape[-2:])
            for keep, first, _ in self._first_prompt_groups(len(inst), gt.device):
                prompts = first_prompts(inst, keep, first, scale, batch_data_samples[i])
                terms = self._rounds(
                    self.image_features(embedding, i), prompts, gt[keep], valid, img_shape, scale, mode, sink
                )
                for name, value in terms.items():
                    total[name] = total[name] + value if name in total else value
        if sink is not None:
            return attach(total, sink)  # divided by the divisor already
        return {name: value / divisor for name, value in total.items()}

    def _round_memory_now(self, embedding: Tensor | Sequence[Tensor]) -> str:
        """``round_memory`` for this step: 'keep' without autograd; 'recompute' for 'backward' under fp16."""
        if not torch.is_grad_enabled():
            return 'keep'
        device = (embedding[0] if isinstance(embedding, (list, tuple)) else embedding).device.type
        if (
            self.round_memory == 'backward'
            and torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == torch.float16
        ):
            if not self._told_fp16:
                MMLogger.get_current_instance().warning(
                    "SAMPromptedHead round_memory='backward' under fp16 autocast: a round's own backward "
                    "cannot apply the step's loss scale, so the rounds are recomputed ('recompute') instead"
                )
                self._told_fp16 = True
            return 'recompute'
        return self.round_memory

    def _first_prompt_groups(self, n: int, device: torch.device) -> list[tuple[Tensor | slice, str, int]]:
        """The instances whose first prompt is their box and those whose first prompt is their points.

        Returns:
            list: ``(selection, 'box' | 'points', count)`` for the non-empty groups; with
            ``box_prob`` 0 or 1 no random number is drawn (and nothing depends on data).
        """
        p = self.train_prompting['box_prob']
        if p >= 1 or p <= 0:
            return [(slice(None), 'box' if p >= 1 else 'points', n)]
        use_box = torch.rand(n, device=device) < p
        boxes = int(use_box.sum())
        groups = ((use_box, 'box', boxes), (~use_box, 'points', n - boxes))
        return [group for group in groups if group[2]]

    def _round_plan(self) -> list[bool]:
        """Per round after the first: whether it adds a point (False: a mask-only round)."""
        opts = self.train_prompting
        plan = [True] * opts['correction_rounds']
        for k in range(opts['mask_only_rounds']):
            position = (
                len(plan) if k == 0 else random.randint(0, len(plan))
            )  # one at the end, others anywhere
            plan.insert(position, False)
        return plan

    def _rounds(
        self,
        embedding: Tensor,
        prompts: PromptSet,
        gt: Tensor,
        valid: Tensor,
        img_shape: tuple[int, int],
        scale: tuple[float, float],
        mode: str = 'keep',
        sink: RoundGradients | None = None,
    ) -> dict[str, Tensor]:
        """Summed (over instances and rounds) loss terms of one image's first prompt and its corrections."""
        sums: dict[str, Tensor] = {}
        pred = torch.zeros_like(gt)  # the last round's masks (the first round has none)
        for adds_point in [None, *self._round_plan()]:
            if adds_point:  # drawn for every instance at once, before any chunking
                points, labels = sample_error_points(pred, gt, valid)
                prompts = prompts.add_points(to_input(points, scale), labels)
            terms, mask_input, pred = self._round(embedding, prompts, gt, valid, img_shape, mode, sink)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0) + value
            prompts = prompts.with_mask(mask_input)
        return sums

    def _round(
        self,
        embedding: Tensor,
        prompts: PromptSet,
        gt: Tensor,
        valid: Tensor,
        img_shape: tuple[int, int],
        mode: str = 'keep',
        sink: RoundGradients | None = None,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """One round over every instance, in chunks of ``instance_chunk``; each chunk kept, recomputed in the
        backward, or back-propagated at once into ``sink`` (``mode``, see ``round_memory``).

        Returns:
            tuple: the summed loss terms, the chosen masks' low-resolution logits (N, 1, 4h, 4w)
            and their thresholded full-resolution masks (N, H, W), both detached.
        """
        n = len(gt)
        chunk = self.instance_chunk or max(n, 1)
        parts = []
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            args = (embedding, prompts.select(rows), gt[rows], valid, img_shape)
            if mode == 'recompute':
                # A round draws no random number (its points are drawn above, SAM's decoders have no
                # dropout): no RNG state to stash (5 KB of CPU state per call otherwise).
                parts.append(
                    activation_checkpoint(
                        self._round_losses, *args, use_reentrant=False, preserve_rng_state=False
                    )
                )
            else:
                part = self._round_losses(*args)
                parts.append(part if sink is None else (sink.collect(part[0]), *part[1:]))
        if len(parts) == 1:
            return parts[0]
        terms = {name: sum(part[0][name] for part in parts) for name in parts[0][0]}
        return terms, torch.cat([part[1] for part in parts]), torch.cat([part[2] for part in parts])

    def _round_losses(
        self, embedding: Tensor, prompts: PromptSet, gt: Tensor, valid: Tensor, img_shape: tuple[int, int]
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Decode, upsample and score one round of some instances: summed terms, next mask prompt, masks."""
        low_res, iou_pred, *more = self.decode(embedding, prompts, prompts.ambiguous)
        logits = self.postprocess(low_res, img_shape, tuple(gt.shape[-2:]))  # (N, M, H, W)
        terms = self.loss_decode.mask_terms(logits, gt, valid)
        per_mask = sum(terms.values())  # (N, M)
        best = per_mask.argmin(dim=1, keepdim=True)  # SAM: only the lowest of the multimask losses
        sums = {name: value.gather(1, best).sum() for name, value in terms.items()}
        iou_term = self.loss_decode.iou_term(iou_pred, logits, gt, valid)  # (N, M): every mask
        sums['loss_iou'] = iou_term.mean(dim=1).sum()
        for name, value in self.extra_loss_terms(more).items():
            sums[name] = sums[name] + value if name in sums else value
        chosen = iou_pred.argmax(dim=1)  # the mask that goes on: the highest predicted IoU
        rows = torch.arange(len(gt), device=gt.device)
        return sums, low_res[rows, chosen][:, None].detach(), logits[rows, chosen].detach() > 0

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_prompted(
        self, inputs: list[Tensor] | tuple[Tensor, ...], batch_data_samples: SampleList
    ) -> SampleList:
        """Segment every instance of each sample under the test prompts; fills ``pred_instances`` and ``pred_sem_seg``."""
        embedding = self._embedding(inputs)
        opts = self.test_prompting
        for i, sample in enumerate(batch_data_samples):
            inst, valid, img_shape = sample_instances(sample, self.ignore_index)
            gt = inst.masks.bool()
            n, size = len(inst), tuple(gt.shape[-2:])
            scale = frame_scale(img_shape, size)
            pred = InstanceData(labels=inst.labels)
            emb = self.image_features(embedding, i)
            if opts['box']:
                if n:
                    prompts = first_prompts(
                        inst, torch.ones(n, dtype=torch.bool, device=gt.device), 'box', scale, sample
                    )
                    low_res, iou_pred, *_ = self.decode(emb, prompts, multimask=False)
                    pred.box_masks = self.postprocess(low_res, img_shape, size)[:, 0] > 0
                    pred.box_scores = iou_pred[:, 0].float()
                else:
                    pred.box_masks = gt.new_zeros((0, *size))
                    pred.box_scores = gt.new_zeros((0,), dtype=torch.float32)
            if opts['clicks']:
                pred.click_masks, pred.click_points, pred.click_labels = self._click(
                    emb, gt, valid, img_shape, scale
                )
            sample.pred_instances = pred
            sample.pred_sem_seg = PixelData(data=self._paint(pred, size, gt.device)[None])
        return batch_data_samples

    @torch.no_grad()
    def segment(
        self, features: Any, index: int, prompts: PromptSet, img_shape: tuple[int, int], size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Masks of image ``index`` under given prompts, as a ``SamPredictor`` user gets them.

        A single point gives SAM's three multimask outputs and the one with the highest
        predicted IoU is kept; any other prompt gives the single-mask output.

        Args:
            features: the batch's features (this head's ``forward`` output).
            index: the image in the batch.
            prompts: N objects' prompts in the input frame.
            img_shape: the image's size in the input before padding.
            size: the output size (the image's original size).

        Returns:
            tuple[Tensor, Tensor]: bool masks (N, H, W) and predicted IoU (N,).
        """
        low_res, iou_pred, *_ = self.decode(self.image_features(features, index), prompts, prompts.ambiguous)
        rows = torch.arange(len(iou_pred), device=iou_pred.device)
        chosen = iou_pred.argmax(dim=1)
        logits = self.postprocess(low_res[rows, chosen][:, None], img_shape, size)[:, 0]
        return logits > 0, iou_pred[rows, chosen].float()

    def _click(
        self,
        embedding: Tensor,
        gt: Tensor,
        valid: Tensor,
        img_shape: tuple[int, int],
        scale: tuple[float, float],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """K simulated clicks per instance: masks (N, K, H, W), clicks (N, K, 2) in the masks' frame and labels (N, K)."""
        n, size = len(gt), tuple(gt.shape[-2:])
        k_clicks = self.test_prompting['clicks']
        if n == 0:
            return (
                gt.new_zeros((0, k_clicks, *size)),
                gt.new_zeros((0, k_clicks, 2), dtype=torch.float32),
                gt.new_zeros((0, k_clicks), dtype=torch.long),
            )
        pred = torch.zeros_like(gt)
        prompts, all_points, all_labels, masks = PromptSet(), [], [], []
        rows = torch.arange(n, device=gt.device)
        for _ in range(k_clicks):
            points, labels = next_clicks(pred, gt, valid)
            all_points.append(points)
            all_labels.append(labels)
            prompts = prompts.add_points(to_input(points, scale), labels)
            low_res, iou_pred, *_ = self.decode(embedding, prompts, multimask=prompts.ambiguous)
            chosen = iou_pred.argmax(dim=1)
            prompts = prompts.with_mask(low_res[rows, chosen][:, None])
            pred = self.postprocess(low_res[rows, chosen][:, None], img_shape, size)[:, 0] > 0
            masks.append(pred)
        return torch.stack(masks, dim=1), torch.cat(all_points, dim=1), torch.cat(all_labels, dim=1)

    def _paint(self, pred: InstanceData, size: tuple[int, int], device: torch.device) -> Tensor:
        """A label map (H, W) of the box-prompted masks (else the last click's), most confident on top."""
        label_map = torch.zeros(size, dtype=torch.long, device=device)
        if 'box_masks' in pred:
            masks, order = pred.box_masks, pred.box_scores.argsort()
        elif 'click_masks' in pred:
            masks = pred.click_masks[:, -1]
            order = torch.arange(len(masks), device=device)
        else:
            return label_map
        for j in order.tolist():
            label_map[masks[j]] = int(pred.labels[j])
        return label_map

    def predict(self, inputs: Any, batch_img_metas: list[dict], test_cfg: Any) -> Tensor:
        raise RuntimeError(
            'SAMPromptedHead predicts from prompts, which live in the data samples: run it in a '
            'SAMPromptedEncoderDecoder (its predict passes them), not through EncoderDecoder.inference'
        )

    def conditional_parameters(self) -> list[str]:
        """Trainable parameters a step may leave unused: the prompt encoder's (a batch of boxes
        uses no point or mask embedding, a first round no mask branch); see ``engine/dist.py``."""
        return [f'prompt_encoder.{n}' for n, p in self.prompt_encoder.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> SAMPromptedHead:
        super().train(mode)
        for part in self.freeze:
            getattr(self, part).eval()
        return self

    def extra_repr(self) -> str:
        return (
            f'image_size={self.image_size}, freeze={self.freeze}, train_prompting={self.train_prompting}, '
            f'test_prompting={self.test_prompting}, round_memory={self.round_memory!r}, '
            f'instance_chunk={self.instance_chunk}'
        )


# ---------------------------------------------------------------------- helpers
def mean_count_over_processes(count: int, device: torch.device) -> float | Tensor:
    """``count`` averaged over the processes of a distributed run (itself without one).

    DDP averages the gradients of the processes; dividing each process's summed loss by
    this mean (not by its own count) makes the averaged gradient that of the loss summed
    over the global batch divided by its total count.
    """
    world = get_world_size()
    if world == 1:
        return count
    total = torch.tensor(float(count), device=device)
    all_reduce(total)  # sum over the processes
    return (total / world).clamp_min(1.0)


def _options(name: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f'{name} has unknown keys {unknown}; allowed: {sorted(defaults)}')
    return {**defaults, **given}


def _check_prompting(train: Mapping[str, Any], test: Mapping[str, Any]) -> None:
    p = train['box_prob']
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f'train_prompting box_prob must be a probability in [0, 1], got {p!r}')
    for key, value in (
        ('train_prompting correction_rounds', train['correction_rounds']),
        ('train_prompting mask_only_rounds', train['mask_only_rounds']),
        ('test_prompting clicks', test['clicks']),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'{key} must be an int >= 0, got {value!r}')
    if not isinstance(test['box'], bool):
        raise ValueError(f'test_prompting box must be True or False, got {test["box"]!r}')
    if not test['box'] and not test['clicks']:
        raise ValueError('test_prompting evaluates nothing: set box=True or clicks > 0')
