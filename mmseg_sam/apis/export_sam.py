"""SAM's official checkpoint format: a fine-tuned SAMViT model as segment_anything's flat state dict.

:meth:`SAMViT.official_checkpoint <mmseg_sam.models.backbones.SAMViT.official_checkpoint>`
calls :func:`sam_official_state`; ``tools/model_converters/export_sam.py`` saves what it
returns, which ``segment_anything.sam_model_registry[...](checkpoint=...)`` and
``SamPredictor`` load.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models.backbones.sam_vit import resize_pos_embed, resize_rel_pos
from ..utils.checkpoint import to_sam_state_dict

__all__ = ['official_encoder_state', 'prompted_decoder_state', 'sam_official_state']

StateDict = dict[str, torch.Tensor]


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


def official_encoder_state(backbone: nn.Module, original: StateDict) -> tuple[StateDict, list[str]]:
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


# The prompted head's parts and their prefixes in SAM's checkpoint.
_SAM_PARTS = {'prompt_encoder': 'prompt_encoder', 'mask_decoder': 'mask_decoder'}


def prompted_decoder_state(
    head: nn.Module, original: StateDict, parts: dict[str, str] = _SAM_PARTS
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


def sam_official_state(
    model: nn.Module, raw: Mapping[str, Any], source: str, original_decoder: bool
) -> tuple[StateDict, dict[str, Any]]:
    """segment_anything's state dict of a SAMViT model whose PEFT updates are merged.

    The image encoder is the backbone's (trained position tables resized back to the
    original's size); the prompt encoder and mask decoder are a prompted head's
    (``SAMPromptedHead``), or the original checkpoint's when ``original_decoder`` or the
    head is prompt-free.

    Args:
        model: the segmentor.
        raw: the original SAM checkpoint as loaded (official or Hugging Face names).
        source: where ``raw`` was read from.
        original_decoder: keep the original prompt encoder and mask decoder.

    Returns:
        tuple[dict, dict]: the state dict (the original's key set), and ``summary``,
        ``resized`` and ``decoder`` (see ``SAMBackboneBase.official_checkpoint``).
    """
    from ..models.decode_heads import SAMPromptedHead

    original = to_sam_state_dict(raw)
    encoder, resized = official_encoder_state(model.backbone, original)
    exported = dict(encoder)
    for key, value in original.items():
        if key.startswith(('prompt_encoder.', 'mask_decoder.')):
            exported[key] = value.clone().contiguous()
    decoder: list[str] = []
    if isinstance(model.decode_head, SAMPromptedHead) and not original_decoder:
        exported.update(prompted_decoder_state(model.decode_head, original))
        decoder = ['prompt_encoder', 'mask_decoder']
    if set(exported) != set(original):
        extra = sorted(set(original) - set(exported))
        raise ValueError(f'the SAM checkpoint {source} has keys outside its three components: {extra[:12]}')
    summary = (
        'prompt encoder and mask decoder from the fine-tuned head'
        if decoder
        else f'prompt encoder and mask decoder from {source}'
    )
    return exported, dict(summary=summary, resized=resized, decoder=decoder)
