"""Fold a mergeable PEFT method (BitFit, DoRA, LoRA, SSF, COBOT on one of those) into SAM's weights.

Usage::

    python tools/model_converters/merge_peft.py CONFIG CHECKPOINT OUT.pth [--overwrite] [--cfg-options ...]

Builds the model of CONFIG (its SAM checkpoint supplies the frozen weights that a
trainable-only CHECKPOINT does not hold), loads CHECKPOINT strictly, merges the
PEFT updates into the frozen linear/norm weights and writes a full checkpoint of
the same model without PEFT: it loads into CONFIG with
``--cfg-options model.backbone.peft=None`` and predicts the same. Methods that are
not linear in their input (Adapter, AdaptFormer, ConvLoRA, LST, SAMAdapter, VPT,
COBOT on one of those) are refused.
OUT may never be CHECKPOINT or CONFIG; an existing OUT is replaced only with ``--overwrite``.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch
from mmengine.config import DictAction
from mmseg.registry import MODELS

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import check_output_file, init_model, load_checkpoint
from mmseg_sam.models.peft import merge_peft


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists (never the input)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def merge_checkpoint(
    config: str, checkpoint: str, out: str, cfg_options: dict | None = None, overwrite: bool = False
) -> dict:
    """Merge and save; returns ``{'merged_layers': n, 'methods': [...]}``."""
    check_output_file(out, (config, checkpoint), overwrite)
    model = init_model(config, cfg_options=cfg_options)
    saved = load_checkpoint(model, checkpoint)  # strict key check
    cfg = model.cfg
    methods = list(model.backbone.peft_report.trainable)
    merged_layers = merge_peft(model.backbone)

    plain_cfg = copy.deepcopy(cfg.model)
    plain_cfg.backbone.peft = None
    plain = MODELS.build(plain_cfg)
    merged_state = model.state_dict()
    merged_state = {k: merged_state[k] for k in plain.state_dict()}
    plain.load_state_dict(merged_state, strict=True)  # proves the result fits a PEFT-free model
    meta = dict(saved.get('meta', {}))
    meta['mmseg_sam'] = dict(merged_methods=methods, merged_layers=merged_layers, source=str(checkpoint))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({'meta': meta, 'state_dict': merged_state}, out)
    return dict(merged_layers=merged_layers, methods=methods)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = merge_checkpoint(args.config, args.checkpoint, args.out, args.cfg_options, args.overwrite)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'merged {info["methods"]} ({info["merged_layers"]} layers) -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
