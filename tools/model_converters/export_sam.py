"""Export a fine-tuned model as an official segment_anything or SAM 2 checkpoint.

Usage::

    python tools/model_converters/export_sam.py CONFIG CHECKPOINT OUT.pth
        [--sam-checkpoint sam_vit_b_01ec64.pth | sam2.1_hiera_base_plus.pt]
        [--original-decoder] [--cfg-options ...]

Builds the model of CONFIG, loads CHECKPOINT strictly (trainable-only checkpoints
take their frozen weights from the SAM checkpoint), merges the PEFT method into the
encoder's weights (mergeable: BitFit, DoRA, LoRA, SSF, COBOT on one of those;
methods that are not linear in their input are refused, named) and writes the checkpoint format of the
model's family. The original checkpoint is ``--sam-checkpoint``, default the
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
from mmseg_sam.models.backbones import SAM2Hiera, SAMViT
from mmseg_sam.models.backbones.sam_vit import resize_pos_embed, resize_rel_pos
from mmseg_sam.models.decode_heads import SAM2MaskDecoderHead, SAM2PromptedHead, SAMPromptedHead
from mmseg_sam.models.peft import merge_peft
from mmseg_sam.utils.checkpoint import load_state_dict_file, to_sam_state_dict
from mmseg_sam.utils.sam2_checkpoint import detect_sam2_format, hf_to_sam2_state_dict

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


def sam2_exported_state(
    model: torch.nn.Module, original: StateDict, original_decoder: bool
) -> tuple[StateDict, dict]:
    """The official SAM 2 state dict of a SAM2Hiera model whose PEFT updates are merged.

    Args:
        model: the segmentor (its ``backbone`` a SAM2Hiera; its ``decode_head`` written
            when it is a SAM2PromptedHead or a SAM2MaskDecoderHead and ``original_decoder``
            is False).
        original: the original SAM 2 state dict, official key names.
        original_decoder: keep SAM 2's prompt encoder, mask decoder and ``no_mem_embed``.

    Returns:
        tuple[dict, dict]: the state dict (the original's keys and shapes), and what was
        written from the model: ``{'decoder': [...], 'tokens': str}``.

    Raises:
        ValueError: a key of the model is not in the original checkpoint, or a shape differs.
    """
    exported = {k: v.detach().clone().contiguous() for k, v in original.items()}

    def write(prefix: str, state: dict[str, torch.Tensor], what: str) -> None:
        for key, value in state.items():
            name = prefix + key
            if name not in original:
                raise ValueError(f'{what} has {key!r}, which the SAM 2 checkpoint lacks ({name})')
            if value.shape != original[name].shape:
                raise ValueError(
                    f'{what} {key!r} has shape {tuple(value.shape)}, the SAM 2 checkpoint '
                    f"{tuple(original[name].shape)} ({name}): the model is not this checkpoint's size"
                )
            exported[name] = value.detach().clone().contiguous()

    wanted = [k[len('image_encoder.') :] for k in original if k.startswith('image_encoder.')]
    encoder = model.backbone.state_dict()
    missing = sorted(set(wanted) - set(encoder))
    if missing:
        raise ValueError(f'the backbone has no weights for {missing[:12]} of the SAM 2 checkpoint')
    write('image_encoder.', {k: encoder[k] for k in wanted}, 'the backbone')

    head = model.decode_head
    info: dict = dict(decoder=[], tokens='SAM 2 original')
    if original_decoder:
        return exported, info
    if isinstance(head, SAM2PromptedHead):  # the whole promptable decoder
        exported.update(prompted_decoder_state(head, original, _SAM2_PARTS))
        write('', {'no_mem_embed': head.no_mem_embed}, 'the head')
        info['decoder'] = ['no_mem_embed', 'sam_mask_decoder', 'sam_prompt_encoder']
        info['tokens'] = "the head's, all four (and the IoU and object-score heads)"
        return exported, info
    if not isinstance(head, SAM2MaskDecoderHead):
        return exported, info
    write('sam_prompt_encoder.', head.prompt_encoder.state_dict(), 'the prompt encoder')
    write('', {'no_mem_embed': head.no_mem_embed}, 'the head')
    per_output = ('mask_tokens.', 'output_hypernetworks_mlps.')
    shared = {k: v for k, v in head.mask_decoder.state_dict().items() if not k.startswith(per_output)}
    write('sam_mask_decoder.', shared, 'the mask decoder')
    info['decoder'] = sorted({k.split('.')[0] for k in shared}) + ['no_mem_embed', 'sam_prompt_encoder']
    if head.mode == 'per_class_tokens' and head.out_channels == 1:  # binary: SAM 2's single-mask output
        token = exported['sam_mask_decoder.mask_tokens.weight']
        token[0] = head.mask_decoder.mask_tokens.weight[0].detach()
        mlp0 = {f'0.{k}': v for k, v in head.mask_decoder.output_hypernetworks_mlps[0].state_dict().items()}
        write('sam_mask_decoder.output_hypernetworks_mlps.', mlp0, 'the hypernetwork MLP')
        info['tokens'] = "the head's, as SAM 2's mask token 0 and output_hypernetworks_mlps.0"
    return exported, info


# The prompted head's parts and their prefixes in each family's checkpoint.
_SAM_PARTS = {'prompt_encoder': 'prompt_encoder', 'mask_decoder': 'mask_decoder'}
_SAM2_PARTS = {'prompt_encoder': 'sam_prompt_encoder', 'mask_decoder': 'sam_mask_decoder'}


def prompted_decoder_state(
    head: torch.nn.Module, original: StateDict, parts: dict[str, str] = _SAM_PARTS
) -> StateDict:
    """A prompted head's prompt encoder and mask decoder under the checkpoint's keys, checked against ``original``.

    Args:
        head: a SAMPromptedHead (or SAM2PromptedHead).
        original: the original checkpoint's state dict, official key names.
        parts: the head's module name -> the checkpoint's prefix (SAM's or SAM 2's).

    Raises:
        ValueError: the head's key set or a shape differs from the original checkpoint's
            (another decoder size), naming them.
    """
    out: StateDict = {}
    for part, prefix in parts.items():
        state = {f'{prefix}.{k}': v for k, v in getattr(head, part).state_dict().items()}
        wanted = {k for k in original if k.startswith(prefix + '.')}
        if set(state) != wanted:
            raise ValueError(
                f'the head {part} keys differ from the SAM checkpoint: missing {sorted(wanted - set(state))[:8]}, '
                f'unexpected {sorted(set(state) - wanted)[:8]}'
            )
        for key, value in state.items():
            if value.shape != original[key].shape:
                raise ValueError(
                    f'{key} has shape {tuple(value.shape)}, the SAM checkpoint {tuple(original[key].shape)}: '
                    "the head is not this checkpoint's size"
                )
            out[key] = value.detach().clone().contiguous()
    return out


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
    if not isinstance(backbone, (SAMViT, SAM2Hiera)):
        raise ValueError(
            f'export_sam writes the checkpoint format of SAM (SAMViT) or SAM 2 (SAM2Hiera); the backbone '
            f'is {type(backbone).__name__}'
        )
    saved = read_checkpoint(checkpoint)
    load_checkpoint_to_model(model, saved)
    report = getattr(backbone, 'peft_report', None)
    methods = list(report.trainable) if report is not None else []
    merged_layers = merge_peft(backbone) if methods else 0  # raises on methods that do not merge

    raw = load_state_dict_file(source)
    info: dict = dict(resized=[], decoder=[], tokens=None)
    if isinstance(backbone, SAM2Hiera):
        family = 'sam2'
        layout = detect_sam2_format(raw)
        if layout == 'sam2_encoder':
            raise ValueError(
                f'{source} holds only an image encoder (trunk.*, neck.*); the export needs a whole SAM 2 '
                'checkpoint (official sam2.1_hiera_*.pt or a Hugging Face Sam2Model)'
            )
        original = raw if layout == 'sam2' else hf_to_sam2_state_dict(raw)
        exported, decoder_info = sam2_exported_state(model, original, original_decoder)
        info.update(decoder_info)
        to_save: dict = {'model': exported}
    else:
        family = 'sam'
        original = to_sam_state_dict(raw)
        encoder, info['resized'] = official_encoder_state(backbone, original)
        exported = dict(encoder)
        for key, value in original.items():
            if key.startswith(('prompt_encoder.', 'mask_decoder.')):
                exported[key] = value.clone().contiguous()
        if isinstance(model.decode_head, SAMPromptedHead) and not original_decoder:
            exported.update(prompted_decoder_state(model.decode_head, original))
            info['decoder'] = ['prompt_encoder', 'mask_decoder']
        if set(exported) != set(original):
            extra = sorted(set(original) - set(exported))
            raise ValueError(
                f'the SAM checkpoint {source} has keys outside its three components: {extra[:12]}'
            )
        to_save = exported
    assert set(exported) == set(original), sorted(set(exported) ^ set(original))[:12]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_save, out)

    trained_with = saved.get('meta', {}).get('mmseg_sam', {}).get('sam_checkpoints', [])
    return dict(
        info,
        family=family,
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
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    merged = f'merged {info["methods"]} ({info["merged_layers"]} layers)' if info['methods'] else 'no PEFT'
    if info['family'] == 'sam' and info['decoder']:
        print(f'{merged}; prompt encoder and mask decoder from the fine-tuned head -> {args.out}')
    elif info['family'] == 'sam2' and info['decoder']:
        print(
            f'{merged}; SAM 2 format; from the head: {info["decoder"]}, mask tokens and MLPs: {info["tokens"]}; '
            f'the rest from {info["source"]} -> {args.out}'
        )
    else:
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
