"""Each PEFT preset at the tiny test architectures (32 channels): settings the tests use.

``mmseg_sam.models.peft.presets.PRESETS`` holds the papers' settings (SAM's sizes); these
are the same methods at smaller widths where those settings would only make the tests slow.
``tests/models/test_peft_presets.py`` fails while a preset has no entry here.
"""

import copy
from typing import Any

from mmseg_sam.models.peft.presets import PEFTPreset

_TINY: dict[str, dict[str, Any]] = {
    'decoder-only': {},
    'bitfit': dict(peft=dict(type='BitFit')),
    'adapter-b64': dict(peft=dict(type='Adapter', bottleneck=8)),
    'adaptformer-b16': dict(peft=dict(type='AdaptFormer', bottleneck=8)),
    'sam-adapter': dict(peft=dict(type='SAMAdapter', scale_factor=4)),
    'vpt-deep-t10': dict(peft=dict(type='VPT', num_tokens=4)),
    'vpt-shallow-t10': dict(peft=dict(type='VPT', num_tokens=4, mode='shallow')),
    'lst-d192': dict(peft=dict(type='LST', side_dims=12, side_heads=3)),
    'ssf': dict(peft=dict(type='SSF')),
    'lora-qv-r4': dict(peft=dict(type='LoRA', rank=2, targets=('q', 'v'))),
    'dora-qv-r4': dict(peft=dict(type='DoRA', rank=2)),
    'lora-qkv-r3': dict(peft=dict(type='LoRA', rank=3, alpha=32, targets=('qkv',))),
    'conv-lora-r3': dict(peft=dict(type='ConvLoRA', rank=4, num_experts=3)),
    'cobot-lora-qv-r4': dict(peft=dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('q', 'v')))),
    'cobot-adaptformer-b16': dict(peft=dict(type='COBOT', host=dict(type='AdaptFormer', bottleneck=8))),
    'cobot-conv-lora-r4': dict(peft=dict(type='COBOT', host=dict(type='ConvLoRA', rank=4, num_experts=2))),
    'full-fine-tuning': dict(frozen=False),
}


def tiny(item: PEFTPreset | str) -> dict[str, Any]:
    """The backbone arguments of a preset (or preset key) at the tiny architectures (a fresh copy)."""
    key = item if isinstance(item, str) else item.key
    if key not in _TINY:
        raise KeyError(f'PEFT preset {key!r} has no tiny settings in tests/peft_tiny.py')
    return copy.deepcopy(_TINY[key])
