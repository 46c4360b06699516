"""SAM 2.1's official checkpoint format: a fine-tuned SAM2Hiera model as ``{'model': state_dict}``.

:meth:`SAM2Hiera.official_checkpoint <mmseg_sam.models.backbones.SAM2Hiera.official_checkpoint>`
calls :func:`sam2_official_state`; ``tools/model_converters/export_sam.py`` saves what it
returns, which sam2's ``build_sam2`` and ``SAM2ImagePredictor`` load strictly.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..utils.sam2_checkpoint import detect_sam2_format, hf_to_sam2_state_dict
from .export_sam import StateDict, prompted_decoder_state

__all__ = ['sam2_official_state']

# The prompted head's parts and their prefixes in SAM 2's checkpoint.
_SAM2_PARTS = {'prompt_encoder': 'sam_prompt_encoder', 'mask_decoder': 'sam_mask_decoder'}


def sam2_official_state(
    model: nn.Module, raw: Mapping[str, Any], source: str, original_decoder: bool
) -> tuple[dict[str, StateDict], dict[str, Any]]:
    """SAM 2's ``{'model': state_dict}`` of a SAM2Hiera model whose PEFT updates are merged.

    Args:
        model: the segmentor.
        raw: the original SAM 2 checkpoint as loaded (official ``.pt`` or Hugging Face
            ``Sam2Model``; an encoder-only checkpoint is refused).
        source: where ``raw`` was read from.
        original_decoder: keep SAM 2's prompt encoder, mask decoder and ``no_mem_embed``.

    Returns:
        tuple[dict, dict]: what to save, and ``summary``, ``resized`` (none: Hiera's
        position tables do not depend on the input size) and ``decoder``.
    """
    layout = detect_sam2_format(raw)
    if layout == 'sam2_encoder':
        raise ValueError(
            f'{source} holds only an image encoder (trunk.*, neck.*); the export needs a whole SAM 2 '
            'checkpoint (official sam2.1_hiera_*.pt or a Hugging Face Sam2Model)'
        )
    original = dict(raw) if layout == 'sam2' else hf_to_sam2_state_dict(raw)
    exported, info = _sam2_state(model, original, original_decoder)
    if set(exported) != set(original):
        raise ValueError(
            f'the export changed the SAM 2 key set: {sorted(set(exported) ^ set(original))[:12]}'
        )
    summary = (
        f'SAM 2 format; from the head: {info["decoder"]}, mask tokens and MLPs: {info["tokens"]}; '
        f'the rest from {source}'
        if info['decoder']
        else f'prompt encoder and mask decoder from {source}'
    )
    return {'model': exported}, dict(summary=summary, resized=[], decoder=info['decoder'])


def _sam2_state(model: nn.Module, original: StateDict, original_decoder: bool) -> tuple[StateDict, dict]:
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
    from ..models.decode_heads import SAM2MaskDecoderHead, SAM2PromptedHead

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
