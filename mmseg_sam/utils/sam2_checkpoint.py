"""SAM 2.1 checkpoints: the official layout, Hugging Face ``Sam2Model`` names, and one component out of them.

Official checkpoints (``sam2.1_hiera_*.pt``) hold ``{'model': state_dict}`` with
``image_encoder.trunk.*``, ``image_encoder.neck.*``, ``sam_prompt_encoder.*``,
``sam_mask_decoder.*``, the video modules (memory attention / encoder, object pointers)
and a few top-level tensors (``no_mem_embed``, ...). A Hugging Face ``Sam2Model`` uses
other names (``vision_encoder.backbone.*``, ``mask_decoder.*``, ...); all renaming is
here, as rules checked by the tests against transformers' own model.
"""

import os
import re
from collections.abc import Mapping

import torch

from .checkpoint import StateDict, load_state_dict_file, rename_by_first_rule

__all__ = ['SAM2_COMPONENTS', 'detect_sam2_format', 'hf_to_sam2_state_dict', 'load_sam2_component']

# What mmseg_sam uses out of a SAM 2 checkpoint; `no_mem_embed` is one top-level tensor
# that SAM 2 adds to the stride-16 features of an image without memory.
SAM2_COMPONENTS = ('image_encoder', 'sam_prompt_encoder', 'sam_mask_decoder', 'no_mem_embed')

# Hugging Face Sam2Model -> official names, tried in order on the part after the HF prefix
# (first match wins); the prefix maps to the official component.
_HF_PREFIXES = {
    'vision_encoder.': 'image_encoder',
    'prompt_encoder.': 'sam_prompt_encoder',
    'mask_decoder.': 'sam_mask_decoder',
}
_MLP3 = r'(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)'
_HF_RULES: dict[str, list[tuple[str, str]]] = {
    'image_encoder': [
        (r'^backbone\.patch_embed\.projection\.', 'trunk.patch_embed.proj.'),
        (r'^backbone\.blocks\.(\d+)\.layer_norm(\d)\.', r'trunk.blocks.\1.norm\2.'),
        (r'^backbone\.blocks\.(\d+)\.mlp\.proj_in\.', r'trunk.blocks.\1.mlp.layers.0.'),
        (r'^backbone\.blocks\.(\d+)\.mlp\.proj_out\.', r'trunk.blocks.\1.mlp.layers.1.'),
        (r'^backbone\.', 'trunk.'),
        (r'^neck\.convs\.(\d+)\.', r'neck.convs.\1.conv.'),
    ],
    'sam_prompt_encoder': [
        (r'^shared_embedding\.positional_embedding$', 'pe_layer.positional_encoding_gaussian_matrix'),
        (r'^mask_embed\.conv1\.', 'mask_downscaling.0.'),
        (r'^mask_embed\.layer_norm1\.', 'mask_downscaling.1.'),
        (r'^mask_embed\.conv2\.', 'mask_downscaling.3.'),
        (r'^mask_embed\.layer_norm2\.', 'mask_downscaling.4.'),
        (r'^mask_embed\.conv3\.', 'mask_downscaling.6.'),
    ],
    'sam_mask_decoder': [
        (r'^upscale_conv1\.', 'output_upscaling.0.'),
        (r'^upscale_layer_norm\.', 'output_upscaling.1.'),
        (r'^upscale_conv2\.', 'output_upscaling.3.'),
        (rf'^{_MLP3}\.proj_in\.', r'\1.layers.0.'),
        (rf'^{_MLP3}\.layers\.0\.', r'\1.layers.1.'),
        (rf'^{_MLP3}\.proj_out\.', r'\1.layers.2.'),
        (r'^transformer\.layers\.(\d+)\.layer_norm(\d)\.', r'transformer.layers.\1.norm\2.'),
        (r'^transformer\.layers\.(\d+)\.mlp\.proj_in\.', r'transformer.layers.\1.mlp.layers.0.'),
        (r'^transformer\.layers\.(\d+)\.mlp\.proj_out\.', r'transformer.layers.\1.mlp.layers.1.'),
        (r'^transformer\.layer_norm_final_attn\.', 'transformer.norm_final_attn.'),
    ],
}
# Renamed after the rules above: HF calls the attention output `o_proj`.
_HF_OUT_PROJ = (r'\.o_proj\.', '.out_proj.')
_HF_TOP_LEVEL = {
    'no_memory_embedding': 'no_mem_embed',
    # The image-wide positional encoding (the decoder's dense PE): sam2's pe_layer.
    'shared_image_embedding.positional_embedding': 'sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix',
}
# HF keeps a second copy of that matrix for point prompts; sam2 has one matrix for both,
# so the copy must be equal (it is in converted official weights) and is then dropped.
_HF_COPIES = {
    'prompt_encoder.shared_embedding.positional_embedding': 'shared_image_embedding.positional_embedding'
}


def detect_sam2_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'sam2'`` (official), ``'sam2_encoder'`` (``trunk.*`` / ``neck.*`` only) or ``'hf'``.

    Raises:
        ValueError: none of them, naming the first keys (a SAM 1 checkpoint says so).
    """
    keys = list(state_dict)
    if any(k.startswith('image_encoder.trunk.') for k in keys):
        return 'sam2'
    if any(k.startswith('vision_encoder.backbone.') for k in keys):
        return 'hf'
    if any(k.startswith('trunk.') for k in keys) and any(k.startswith('neck.') for k in keys):
        return 'sam2_encoder'
    hint = ''
    if any(k.startswith(('image_encoder.blocks.', 'blocks.', 'vision_encoder.layers.')) for k in keys):
        hint = ' (this is a SAM 1 ViT checkpoint: use it with SAMViT)'
    raise ValueError(
        'unrecognised SAM 2 checkpoint layout: expected image_encoder.trunk.* (official SAM 2.1), '
        f'trunk.* and neck.* (encoder only) or vision_encoder.backbone.* (Hugging Face Sam2Model){hint}; '
        f'first keys are {keys[:5]}'
    )


def hf_to_sam2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename a Hugging Face ``Sam2Model`` state dict to the official SAM 2 names.

    The prompt encoder's four point embeddings, one (4, C) table in HF, become sam2's
    ``point_embeddings.{0..3}.weight``.

    Raises:
        ValueError: a key belongs to no known component, or a tied copy differs.
    """
    converted: StateDict = {}
    for key, value in state_dict.items():
        if key in _HF_COPIES:
            original = state_dict.get(_HF_COPIES[key])
            if original is not None and not torch.equal(original, value):
                raise ValueError(
                    f'{key} differs from {_HF_COPIES[key]} in the HF checkpoint; SAM 2 has one '
                    'positional encoding matrix for both'
                )
            if original is not None:
                continue
            key = _HF_COPIES[key]  # the only copy
        if key in _HF_TOP_LEVEL:
            converted[_HF_TOP_LEVEL[key]] = value
            continue
        prefix = next((p for p in _HF_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(
                f'key {key!r} belongs to no SAM 2 component (expected one of {list(_HF_PREFIXES)})'
            )
        component = _HF_PREFIXES[prefix]
        rest = key[len(prefix) :]
        if component == 'sam_prompt_encoder' and rest == 'point_embed.weight':
            for i, row in enumerate(value):
                converted[f'{component}.point_embeddings.{i}.weight'] = row[None].clone()  # (C,) -> (1, C)
            continue
        rest = rename_by_first_rule(rest, _HF_RULES[component])
        rest = re.sub(*_HF_OUT_PROJ, rest)
        converted[f'{component}.{rest}'] = value
    return converted


def load_sam2_component(path: str | os.PathLike, component: str) -> StateDict:
    """Read one SAM 2 component's weights from an official, encoder-only or Hugging Face checkpoint.

    Args:
        path: checkpoint file (``.pt`` / ``.pth`` / ``.safetensors``) or Hugging Face folder.
        component: one of :data:`SAM2_COMPONENTS`.

    Returns:
        dict[str, Tensor]: the component's weights with its prefix stripped (for
        ``'no_mem_embed'``: ``{'no_mem_embed': tensor}``).

    Raises:
        ValueError: unknown component, unknown layout, or the checkpoint lacks it.
    """
    if component not in SAM2_COMPONENTS:
        raise ValueError(f'component must be one of {SAM2_COMPONENTS}, got {component!r}')
    state = load_state_dict_file(path)
    fmt = detect_sam2_format(state)
    if fmt == 'hf':
        state = hf_to_sam2_state_dict(state)
    elif fmt == 'sam2_encoder':
        state = {f'image_encoder.{k}': v for k, v in state.items()}
    if component == 'no_mem_embed':
        part = {'no_mem_embed': state['no_mem_embed']} if 'no_mem_embed' in state else {}
    else:
        prefix = f'{component}.'
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        present = sorted({k.split('.', 1)[0] for k in state})
        raise ValueError(f'checkpoint {path} has no {component} weights (it holds: {present})')
    return part
