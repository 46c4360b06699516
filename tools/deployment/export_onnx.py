"""Export a trained SAM segmentor to ONNX: raw image in, per-class scores at the input size out.

Usage::

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W] [--batch-size B]
        [--opset N] [--merge | --no-merge] [--verify [--atol A]] [--cfg-options ...]

The graph (see :class:`ONNXSegmentor`):

- input ``image``: (B, 3, H, W) float32, raw 0-255 pixel values in the channel order
  the model was trained on: RGB when the config's ``data_preprocessor`` has
  ``bgr_to_rgb=True`` (every config of this repository), else the order of the image
  files as cv2 loads them (BGR). The data preprocessor's mean/std normalisation is
  inside the graph. H and W are fixed at export (``--shape``, default the
  preprocessor's ``size``); resize images to that size first, as the test pipeline
  does.
- output ``scores``: (B, C, H, W) float32 at the input size: the foreground
  probability (sigmoid, C = 1) of a binary head, the class probabilities (softmax
  over C) of a multi-class head, the mask-classification scores
  ``sum_q softmax(cls_q)[c] * sigmoid(mask_q)`` of a ``mask_classification`` head.
- output ``labels``: (B, H, W) int64, the label map mmseg predicts: ``scores >
  threshold`` for C = 1, else the argmax over C.

PEFT: mergeable methods (BitFit, DoRA, LoRA, SSF, COBOT on one of those) are folded into the
frozen weights by default (``--no-merge`` keeps their branches in the graph);
others are exported as they are. Conv-LoRA routes as in eval (argmax of the clean
gate logits, ties to the lower expert) with a dense, traceable dispatch: every
expert runs on every window/image and unselected outputs are zeroed, which equals
PyTorch's eval output. Routing is a hard decision: where two gate logits are
(nearly) equal, rounding differences can flip it between runtimes.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), the
default and maintained exporter of torch >= 2.9; the TorchScript-based one is
deprecated. The graph's batch, height and width are static: ``--dynamic`` is refused
(see ``DYNAMIC_REFUSAL``). ``--verify`` compares onnxruntime with the PyTorch model
as trained (PEFT not merged) on a random raw image.
"""

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from torch import Tensor, nn

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import check_output_file, init_model
from mmseg_sam.models.backbones import SAMBackboneBase
from mmseg_sam.models.decode_heads.sam_mask_decoder_head import semantic_inference
from mmseg_sam.models.peft import merge_peft, mergeable_phrase

MIN_OPSET = 18  # the dynamo exporter's operator library (onnxscript torchlib) targets opset 18+
DYNAMIC_REFUSAL = (
    '--dynamic is not supported: the exported graph has a static batch, height and width. With torch 2.13 '
    "a SAM ViT does not export with symbolic height/width: the exporter's torch.export capture fails on the "
    'window-padding and resize arithmetic, and the ONNX decomposition of the attention reshapes fails with '
    'symbolic sizes. Export one graph per input size with --shape H W (and --batch-size B)'
)


class ONNXSegmentor(nn.Module):
    """A segmentor as one function of a raw image: normalise, encode, decode, resize, score.

    Args:
        segmentor: an mmseg ``EncoderDecoder`` whose decode head is a
            ``SAMMaskDecoderHead`` (or any head whose ``forward`` returns mask logits).
        mean: per-channel mean of the data preprocessor (in the model's channel order).
        std: per-channel std of the data preprocessor.
    """

    def __init__(self, segmentor: nn.Module, mean: Tensor | None, std: Tensor | None) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.normalize = mean is not None
        if mean is not None:
            self.register_buffer('mean', mean.float().reshape(1, -1, 1, 1), persistent=False)
            self.register_buffer('std', std.float().reshape(1, -1, 1, 1), persistent=False)
        head = segmentor.decode_head
        self.mask_classification = getattr(head, 'mode', None) == 'mask_classification'
        self.align_corners = bool(head.align_corners)
        self.threshold = float(head.threshold) if head.out_channels == 1 else None

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) raw pixels -> scores (B, C, H, W) and labels (B, H, W)."""
        x = (image - self.mean) / self.std if self.normalize else image
        size = image.shape[-2:]
        out = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        if self.mask_classification:
            cls_logits, mask_logits = out  # (B, Q, C + 1), (B, Q, 4h, 4w)
            mask_logits = F.interpolate(
                mask_logits, size=size, mode='bilinear', align_corners=self.align_corners
            )
            scores = semantic_inference(cls_logits, mask_logits)  # (B, C, H, W)
            return scores, scores.argmax(dim=1)
        logits = F.interpolate(out, size=size, mode='bilinear', align_corners=self.align_corners)
        if self.threshold is not None:  # binary: (B, 1, H, W) foreground probability
            scores = logits.sigmoid()
            return scores, (scores[:, 0] > self.threshold).long()
        scores = logits.softmax(dim=1)  # (B, C, H, W)
        return scores, scores.argmax(dim=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument(
        '--shape',
        nargs=2,
        type=int,
        metavar=('H', 'W'),
        help="input size (default: the data preprocessor's size)",
    )
    parser.add_argument('--batch-size', type=int, default=1, help='the static batch size of the graph')
    parser.add_argument('--dynamic', action='store_true', help='refused: the graph has static shapes')
    parser.add_argument('--opset', type=int, default=MIN_OPSET, help=f'ONNX opset (>= {MIN_OPSET})')
    parser.add_argument(
        '--merge',
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f'fold mergeable PEFT updates ({mergeable_phrase()}) into the weights '
        '(default: when every method is mergeable)',
    )
    parser.add_argument(
        '--verify', action='store_true', help='compare onnxruntime with PyTorch on random input'
    )
    parser.add_argument('--atol', type=float, default=1e-4, help='--verify tolerance on the scores')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists (never an input)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def load_segmentor(config: str, checkpoint: str, cfg_options: dict | None = None) -> tuple[Config, nn.Module]:
    """Build the model of ``config`` and load ``checkpoint`` strictly (:func:`mmseg_sam.apis.init_model`)."""
    model = init_model(config, checkpoint, cfg_options=cfg_options)
    return model.cfg, model


def input_shape(model: nn.Module, shape: list[int] | None) -> tuple[int, int]:
    """The (H, W) to export at: ``shape`` or the data preprocessor's size.

    Checked against the backbone's ``size_divisor`` (SAMViT: its patch size; SAM2Hiera:
    32, its total stride and first-stage window tiling); the graph does not pad.
    """
    if shape is None:
        size = getattr(model.data_preprocessor, 'size', None)
        if size is None:
            raise ValueError('the data preprocessor has no size: give --shape H W')
        shape = list(size)
    h, w = (int(v) for v in shape)
    backbone = model.backbone
    if not isinstance(backbone, SAMBackboneBase):
        raise ValueError(
            f'export_onnx exports SAM backbones (SAMBackboneBase), got {type(backbone).__name__}'
        )
    divisor = backbone.size_divisor  # the backbone contract's
    if h <= 0 or w <= 0 or h % divisor or w % divisor:
        raise ValueError(
            f'--shape {h} {w}: height and width must be positive multiples of the size divisor {divisor} '
            f'of {type(backbone).__name__}'
        )
    return h, w


def wrap(model: nn.Module) -> ONNXSegmentor:
    """Wrap ``model`` (eval mode) with its data preprocessor's normalisation."""
    pre = model.data_preprocessor
    normalize = getattr(pre, '_enable_normalize', False)
    return ONNXSegmentor(model, pre.mean if normalize else None, pre.std if normalize else None).eval()


def merge_if_asked(model: nn.Module, merge: bool | None) -> list[str]:
    """Fold the backbone's PEFT updates into its weights, in place, as ``merge`` says.

    Args:
        model: the segmentor.
        merge: True: merge (raises when a method is not mergeable); False: keep the
            PEFT branches; None: merge when every method is mergeable.

    Returns:
        list[str]: the merged methods (empty when nothing was merged).
    """
    backbone = model.backbone
    report = backbone.peft_report if isinstance(backbone, SAMBackboneBase) else None
    methods = list(report.trainable) if report is not None else []
    if merge is None:
        merge = bool(methods) and all(report.mergeable.values())
    if not merge:
        return []
    merge_peft(model.backbone)  # raises, naming the method, when one is not mergeable
    return methods


def channel_order(model: nn.Module) -> str:
    """Channel order of the exported input: what the network saw in training."""
    return 'RGB' if getattr(model.data_preprocessor, 'channel_conversion', False) else 'BGR'


def export(
    wrapper: ONNXSegmentor,
    out: str | Path,
    shape: tuple[int, int],
    batch_size: int = 1,
    opset: int = MIN_OPSET,
    metadata: dict[str, str] | None = None,
) -> None:
    """Trace ``wrapper`` at (batch_size, 3, H, W) and write the ONNX model, weights embedded.

    Args:
        wrapper: the model to export.
        out: the .onnx path.
        shape: input (H, W).
        batch_size: input batch size.
        opset: ONNX opset, >= ``MIN_OPSET``.
        metadata: written to the model's ``metadata_props``.
    """
    if opset < MIN_OPSET:
        raise ValueError(f'--opset {opset}: the dynamo exporter needs opset >= {MIN_OPSET}')
    example = torch.rand(batch_size, 3, *shape) * 255
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=['image'],
            output_names=['scores', 'labels'],
            external_data=False,
            verbose=False,
        )
    for key, value in (metadata or {}).items():
        program.model.metadata_props[key] = value
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out), external_data=False)


def verify(
    reference: nn.Module, onnx_path: str | Path, shape: tuple[int, int], batch_size: int = 1, seed: int = 0
) -> dict[str, float]:
    """Run onnxruntime and ``reference`` (an :class:`ONNXSegmentor`) on the same random raw image.

    Returns:
        dict: ``max_abs_diff`` of the scores and ``label_agreement`` (fraction of equal labels).
    """
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch_size, 3, *shape, generator=gen) * 255
    with torch.no_grad():
        scores, labels = reference(image)
    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    ort_scores, ort_labels = session.run(['scores', 'labels'], {'image': image.numpy()})
    return dict(
        max_abs_diff=float(np.abs(ort_scores - scores.numpy()).max()),
        label_agreement=float((ort_labels == labels.numpy()).mean()),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dynamic:
        print(f'error: {DYNAMIC_REFUSAL}', file=sys.stderr)
        return 1
    try:
        if args.batch_size < 1:
            raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
        check_output_file(args.out, (args.config, args.checkpoint), args.overwrite)
        _, model = load_segmentor(args.config, args.checkpoint, args.cfg_options)
        shape = input_shape(model, args.shape)
        reference = wrap(copy.deepcopy(model)) if args.verify else None  # the model as trained
        merged = merge_if_asked(model, args.merge)
        order = channel_order(model)
        metadata = {
            'mmseg_sam.input': f'image: (B, 3, H, W) float32, raw 0-255 {order} pixels; normalised in the graph',
            'mmseg_sam.outputs': 'scores: (B, C, H, W) float32 (C = 1: foreground probability); '
            'labels: (B, H, W) int64',
            'mmseg_sam.channel_order': order,
            'mmseg_sam.merged_peft': ','.join(merged),
            'mmseg_sam.source': f'{args.config} {args.checkpoint}',
        }
        export(wrap(model), args.out, shape, args.batch_size, args.opset, metadata)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(
        f'exported {args.out}: image ({args.batch_size}, 3, {shape[0]}, {shape[1]}) float32 raw 0-255 {order} '
        f'-> scores, labels; merged PEFT: {merged or "none"}'
    )
    if reference is not None:
        result = verify(reference, args.out, shape, args.batch_size)
        ok = result['max_abs_diff'] <= args.atol
        print(
            f'verify: max |onnxruntime - torch| of the scores = {result["max_abs_diff"]:.3g} '
            f'(atol {args.atol:g}), labels agree on {result["label_agreement"]:.2%} of pixels: '
            + ('OK' if ok else 'FAILED')
        )
        if not ok:
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
