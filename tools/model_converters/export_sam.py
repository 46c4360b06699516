"""Export a fine-tuned model as an official segment_anything or SAM 2 checkpoint.

Usage::

    python tools/model_converters/export_sam.py CONFIG CHECKPOINT OUT.pth
        [--sam-checkpoint sam_vit_b_01ec64.pth | sam2.1_hiera_base_plus.pt]
        [--original-decoder] [--cfg-options ...]

Builds the model of CONFIG, loads CHECKPOINT strictly (trainable-only checkpoints
take their frozen weights from the SAM checkpoint), merges the PEFT method into the
encoder's weights (mergeable: BitFit, DoRA, LoRA, SSF, COBOT on one of those;
methods that are not linear in their input are refused, named) and writes the checkpoint format of the
model's family: what its backbone's ``official_checkpoint`` returns (SAMViT:
``mmseg_sam/apis/export_sam.py``, SAM2Hiera: ``mmseg_sam/apis/export_sam2.py``), so a new
family brings its own format without changes here. The original checkpoint is ``--sam-checkpoint``, default the
config's ``model.sam_checkpoint``.

SAM (a ``SAMViT`` backbone): a flat state dict in segment_anything's
``Sam.state_dict()`` layout:

- ``image_encoder.*``: the fine-tuned, merged encoder;
- ``prompt_encoder.*``, ``mask_decoder.*``: from a ``SAMPromptedHead`` (a model
  trained with prompts) its fine-tuned prompt encoder and whole mask decoder (IoU head
  included), so ``SamPredictor`` gives the fine-tuned model's masks under the same
  prompts; otherwise, or with ``--original-decoder``, unchanged from the original SAM
  checkpoint (a prompt-free head's tokens are classes, not SAM's outputs).

The key set and every shape equal the original checkpoint's, so
``sam_model_registry['vit_b'](checkpoint=OUT)`` (or ``_build_sam`` for other sizes)
loads it strictly. When the model was trained at another ``img_size`` than the SAM
checkpoint's, the position tables (``pos_embed``, the global blocks' ``rel_pos_*``)
are written at the checkpoint's size: frozen tables as the original values, trained
ones resized back (reported). The fine-tuned decode head of CONFIG is not exported.

SAM 2 (a ``SAM2Hiera`` backbone): ``{'model': state_dict}`` in the official SAM 2.1
layout, the key set and every shape equal to the original checkpoint's, so sam2's
``build_sam2`` loads it strictly:

- ``image_encoder.trunk.*``, ``image_encoder.neck.*``: the fine-tuned, merged encoder;
- from a ``SAM2PromptedHead`` (a model trained with prompts; unless
  ``--original-decoder``): its fine-tuned prompt encoder, whole mask decoder (all four
  mask tokens and hypernetwork MLPs, the IoU and object-score heads, ``conv_s0`` /
  ``conv_s1``) and ``no_mem_embed``, so ``SAM2ImagePredictor`` gives the fine-tuned
  model's masks under the same prompts;
- from a ``SAM2MaskDecoderHead`` (unless ``--original-decoder``): the decoder parts
  SAM 2 shares between its outputs (``transformer``, ``iou_token``,
  ``obj_score_token``, ``output_upscaling``, ``conv_s0`` / ``conv_s1``), the prompt
  encoder (frozen in training) and ``no_mem_embed``. A binary head's
  (``out_channels=1``) one mask token and hypernetwork MLP become SAM 2's single-mask
  output, mask token 0 and ``output_hypernetworks_mlps.0`` (the head started them from
  there); the multimask tokens and MLPs 1-3 stay SAM 2's. A multi-class or
  mask-classification head's tokens are classes or queries, not SAM 2 outputs: all
  four of SAM 2's mask tokens and MLPs stay the original's (reported);
- from the original checkpoint: what the head does not build (``iou_prediction_head``,
  ``pred_obj_score_head``), the memory / video modules and every other top-level tensor.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import check_output_file, load_checkpoint_to_model, read_checkpoint
from mmseg_sam.models.backbones.base import SAMBackboneBase, registered_families
from mmseg_sam.models.peft import merge_peft
from mmseg_sam.utils.checkpoint import load_state_dict_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument(
        '--sam-checkpoint',
        help="original SAM or SAM 2 checkpoint (default: the config's model.sam_checkpoint); it also "
        'supplies the frozen weights of the model',
    )
    parser.add_argument(
        '--original-decoder',
        action='store_true',
        help='keep the original prompt encoder and mask decoder (SAM 2: and no_mem_embed) instead of the '
        "head's (a prompt-free SAM head is always exported with the original decoder)",
    )
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists (never an input)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def export_sam(
    config: str,
    checkpoint: str,
    out: str,
    sam_checkpoint: str | None = None,
    cfg_options: dict | None = None,
    overwrite: bool = False,
    original_decoder: bool = False,
) -> dict:
    """Merge, assemble and save; returns what was done (family, methods, layers, resized tables, decoder)."""
    check_output_file(out, (config, checkpoint, sam_checkpoint), overwrite)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if sam_checkpoint is not None:
        cfg.model.sam_checkpoint = sam_checkpoint
    source = cfg.model.get('sam_checkpoint')
    check_output_file(out, (source,), overwrite)
    if source is None:
        raise ValueError(
            'no SAM checkpoint: set model.sam_checkpoint in the config or pass --sam-checkpoint '
            '(it supplies the prompt encoder and the original mask decoder)'
        )
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(copy.deepcopy(cfg.model)).eval()
    backbone = model.backbone
    if not isinstance(backbone, SAMBackboneBase):
        raise ValueError(
            f'export_sam writes the official checkpoint format of a SAM backbone family '
            f'({", ".join(c.__name__ for c in registered_families().values())}); the backbone is '
            f'{type(backbone).__name__}'
        )
    saved = read_checkpoint(checkpoint)
    load_checkpoint_to_model(model, saved)
    methods = list(backbone.peft_report.trainable)
    merged_layers = merge_peft(backbone) if methods else 0  # raises on methods that do not merge

    raw = load_state_dict_file(source)
    to_save, info = backbone.official_checkpoint(model, raw, str(source), original_decoder)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_save, out)

    trained_with = saved.get('meta', {}).get('mmseg_sam', {}).get('sam_checkpoints', [])
    return dict(
        info,
        family=backbone.family,
        methods=methods,
        merged_layers=merged_layers,
        source=str(source),
        trained_with=[str(p) for p in trained_with],
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = export_sam(
            args.config,
            args.checkpoint,
            args.out,
            args.sam_checkpoint,
            args.cfg_options,
            args.overwrite,
            args.original_decoder,
        )
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    merged = f'merged {info["methods"]} ({info["merged_layers"]} layers)' if info['methods'] else 'no PEFT'
    print(f'{merged}; {info["summary"]} -> {args.out}')
    if info['resized']:
        print(f'trained position tables resized back to the SAM checkpoint size: {info["resized"]}')
    if info['trained_with'] and info['source'] not in info['trained_with']:
        print(
            f'note: the checkpoint was trained on frozen weights from {info["trained_with"]}; '
            f'they were taken from {info["source"]} here, which must hold the same weights',
            file=sys.stderr,
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
