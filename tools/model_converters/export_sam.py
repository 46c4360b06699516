"""Export a fine-tuned encoder as an official segment_anything checkpoint.

Usage::

    python tools/model_converters/export_sam.py CONFIG CHECKPOINT OUT.pth
        [--sam-checkpoint sam_vit_b_01ec64.pth] [--cfg-options ...]

Builds the model of CONFIG, loads CHECKPOINT strictly (trainable-only checkpoints
take their frozen weights from the SAM checkpoint), merges the PEFT method into the
encoder's weights (LoRA, COBOT on LoRA, BitFit, SSF; methods that are not linear in
their input are refused, named) and writes a flat state dict in segment_anything's
``Sam.state_dict()`` layout:

- ``image_encoder.*``: the fine-tuned, merged encoder;
- ``prompt_encoder.*``, ``mask_decoder.*``: unchanged from the original SAM
  checkpoint (``--sam-checkpoint``, default the config's ``model.sam_checkpoint``),
  so SAM's promptable decoder works on the fine-tuned image embeddings.

The key set and every shape equal the original checkpoint's, so
``sam_model_registry['vit_b'](checkpoint=OUT)`` (or ``_build_sam`` for other sizes)
loads it strictly. When the model was trained at another ``img_size`` than the SAM
checkpoint's, the position tables (``pos_embed``, the global blocks' ``rel_pos_*``)
are written at the checkpoint's size: frozen tables as the original values, trained
ones resized back (reported). The fine-tuned decode head of CONFIG is not exported.
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
from mmseg_sam.models.backbones.sam_vit import resize_pos_embed, resize_rel_pos
from mmseg_sam.models.peft import merge_peft
from mmseg_sam.utils.checkpoint import load_state_dict_file, to_sam_state_dict

StateDict = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument(
        '--sam-checkpoint',
        help="original SAM checkpoint (default: the config's model.sam_checkpoint); it also supplies "
        'the frozen weights of the model',
    )
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists (never an input)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def _fit_table(key: str, value: torch.Tensor, original: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Bring a position table trained at another size back to the original's shape.

    Returns:
        tuple[Tensor, bool]: the table, and whether it was resized (False: it was
        unchanged from SAM, and the original values are returned).
    """
    if key == 'pos_embed':  # (1, h, w, C)
        resize, size_of = resize_pos_embed, lambda t: tuple(t.shape[1:3])
    elif key.endswith(('attn.rel_pos_h', 'attn.rel_pos_w')):  # (L, C)
        resize, size_of = resize_rel_pos, lambda t: t.shape[0]
    else:
        raise ValueError(
            f'image_encoder.{key} has shape {tuple(value.shape)} but the SAM checkpoint has '
            f'{tuple(original.shape)}; only position tables may differ (another img_size)'
        )
    fitted = resize(original, size_of(value))  # what the backbone made of SAM's table at load
    if torch.equal(fitted, value):
        return original, False
    return resize(value, size_of(original)), True


def official_encoder_state(backbone: torch.nn.Module, original: StateDict) -> tuple[StateDict, list[str]]:
    """The backbone's weights under the original checkpoint's ``image_encoder`` keys and shapes.

    Args:
        backbone: a SAMViT whose PEFT updates are merged (or that has none).
        original: the original SAM state dict, official key names.

    Returns:
        tuple[dict, list[str]]: ``image_encoder.*`` tensors, and the keys of trained
        position tables that were resized back to the original size.
    """
    prefix = 'image_encoder.'
    wanted = {k[len(prefix) :]: v for k, v in original.items() if k.startswith(prefix)}
    state = backbone.state_dict()
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f'the backbone has no weights for {missing} of the SAM checkpoint')
    out, resized = {}, []
    for key, reference in wanted.items():
        value = state[key]
        if value.shape != reference.shape:
            value, was_resized = _fit_table(key, value, reference.to(value.dtype))
            if was_resized:
                resized.append(prefix + key)
        out[prefix + key] = value.detach().clone().contiguous()
    return out, resized


def export_sam(
    config: str,
    checkpoint: str,
    out: str,
    sam_checkpoint: str | None = None,
    cfg_options: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Merge, assemble and save; returns what was done (methods, layers, resized tables)."""
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
    saved = read_checkpoint(checkpoint)
    load_checkpoint_to_model(model, saved)
    backbone = model.backbone
    report = getattr(backbone, 'peft_report', None)
    methods = list(report.trainable) if report is not None else []
    merged_layers = merge_peft(backbone) if methods else 0  # raises on methods that do not merge

    original = to_sam_state_dict(load_state_dict_file(source))
    encoder, resized = official_encoder_state(backbone, original)
    exported = dict(encoder)
    for key, value in original.items():
        if key.startswith(('prompt_encoder.', 'mask_decoder.')):
            exported[key] = value.clone().contiguous()
    if set(exported) != set(original):
        extra = sorted(set(original) - set(exported))
        raise ValueError(f'the SAM checkpoint {source} has keys outside its three components: {extra[:12]}')
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(exported, out)

    trained_with = saved.get('meta', {}).get('mmseg_sam', {}).get('sam_checkpoints', [])
    return dict(
        methods=methods,
        merged_layers=merged_layers,
        resized=resized,
        source=str(source),
        trained_with=[str(p) for p in trained_with],
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = export_sam(
            args.config, args.checkpoint, args.out, args.sam_checkpoint, args.cfg_options, args.overwrite
        )
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    merged = f'merged {info["methods"]} ({info["merged_layers"]} layers)' if info['methods'] else 'no PEFT'
    print(f'{merged}; prompt encoder and mask decoder from {info["source"]} -> {args.out}')
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
