"""The named settings of every PEFT method: one table for tools, docs checks and tests.

``tools/analysis_tools/count_parameters.py`` prints a row per preset (docs/peft.md is its
output), ``tools/analysis_tools/benchmark.py`` measures a row per preset, the tests run
every preset through the segmentor and ``tools/train.py``, and the benchmark grid under
``configs/<folder>/`` is checked against the presets that name a ``grid`` token. Adding
a method means adding its preset line here; ``uncovered_methods()`` names registered
methods without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import PEFT_METHODS

__all__ = [
    'PRESETS',
    'PEFTPreset',
    'grid_presets',
    'method_types',
    'preset',
    'preset_keys',
    'uncovered_methods',
]


@dataclass(frozen=True)
class PEFTPreset:
    """One named setting of a method.

    Attributes:
        key: the stable name that tools (``--preset``, ``--methods``), tests and code use: the
            method token of the config file names (``lora-qv-r4``, ``cobot-lora-qv-r4``).
        name: the display label (``'LoRA (r 4, q v)'``): row name in docs/peft.md and the
            tools' tables; never a key.
        backbone: ``SAMViT`` arguments at SAM's sizes (``peft=...``, or ``frozen=False``),
            the papers' settings where they state them.
        grid: the method token of the benchmark grid's file names
            (``configs/<folder>/sam-vit-h_<grid>_<epochs>e_<benchmark>-1024x1024.py``, the
            preset's ``key``), or None when the grid has no such column.
        folder: the grid's config folder.
        cobot_lr_mult: ``lr_mult`` of the ``'cobot'`` parameters in the grid configs.
    """

    key: str
    name: str
    backbone: Mapping[str, Any]
    grid: str | None = None
    folder: str | None = None
    cobot_lr_mult: float | None = None

    @property
    def peft(self) -> Mapping[str, Any] | None:
        """The ``backbone.peft`` config (None: decoder-only or full fine-tuning)."""
        return self.backbone.get('peft')


_CONV_LORA = dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)
_COBOT_LORA_HOST = dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'), init='xavier')
_COBOT_ADAPTFORMER_HOST = dict(type='AdaptFormer', bottleneck=16, scale=1.0, dropout=0.1, branch_input='mlp')

PRESETS: tuple[PEFTPreset, ...] = (
    PEFTPreset('decoder-only', 'decoder-only', {}, grid='decoder-only', folder='decoder_only'),
    PEFTPreset('bitfit', 'BitFit', dict(peft=dict(type='BitFit')), 'bitfit', 'bitfit'),
    PEFTPreset(
        'adapter-b64',
        'Adapter (bottleneck 64)',
        dict(peft=dict(type='Adapter', bottleneck=64, targets=('attn', 'mlp'))),
        'adapter-b64',
        'adapter',
    ),
    PEFTPreset(
        'adaptformer-b16',
        'AdaptFormer (bottleneck 16)',
        dict(peft=dict(type='AdaptFormer', bottleneck=16)),
    ),
    PEFTPreset(
        'sam-adapter',
        'SAM-Adapter (scale 32)',
        dict(peft=dict(type='SAMAdapter', scale_factor=32, freq_ratio=0.25)),
        'sam-adapter',
        'sam_adapter',
    ),
    PEFTPreset(
        'vpt-deep-t10',
        'VPT-deep (10 tokens)',
        dict(peft=dict(type='VPT', num_tokens=10, mode='deep')),
        'vpt-deep-t10',
        'vpt',
    ),
    PEFTPreset(
        'vpt-shallow-t10',
        'VPT-shallow (10 tokens)',
        dict(peft=dict(type='VPT', num_tokens=10, mode='shallow')),
    ),
    PEFTPreset(
        'lst-d192',
        'LST (side 192)',
        dict(peft=dict(type='LST', side_dims=192, side_heads=3)),
        'lst-d192',
        'lst',
    ),
    PEFTPreset('ssf', 'SSF', dict(peft=dict(type='SSF')), 'ssf', 'ssf'),
    PEFTPreset(
        'lora-qv-r4',
        'LoRA (r 4, q v)',
        dict(peft=dict(type='LoRA', rank=4, targets=('q', 'v'))),
    ),
    PEFTPreset(
        'dora-qv-r4',
        'DoRA (r 4, q v)',
        dict(peft=dict(type='DoRA', rank=4)),
    ),
    PEFTPreset(
        'lora-qkv-r3',
        'LoRA (r 3, qkv)',
        dict(peft=dict(type='LoRA', rank=3, alpha=32, targets=('qkv',))),
        'lora-qkv-r3',
        'lora',
    ),
    PEFTPreset(
        'conv-lora-r3',
        'Conv-LoRA (r 3, 8 experts)',
        dict(peft=_CONV_LORA),
        'conv-lora-r3',
        'conv_lora',
    ),
    PEFTPreset(
        'cobot-lora-qv-r4',
        'COBOT + LoRA (r 4, q v)',
        dict(peft=dict(type='COBOT', host=_COBOT_LORA_HOST)),
        'cobot-lora-qv-r4',
        'cobot',
        100.0,
    ),
    PEFTPreset(
        'cobot-adaptformer-b16',
        'COBOT + AdaptFormer (16)',
        dict(peft=dict(type='COBOT', host=_COBOT_ADAPTFORMER_HOST)),
        'cobot-adaptformer-b16',
        'cobot',
        10.0,
    ),
    PEFTPreset(
        'cobot-conv-lora-r4',
        'COBOT + Conv-LoRA (r 4)',
        dict(peft=dict(type='COBOT', host={**_CONV_LORA, 'rank': 4})),
        'cobot-conv-lora-r4',
        'cobot',
        100.0,
    ),
    PEFTPreset('full-fine-tuning', 'full fine-tuning', dict(frozen=False)),
)


def preset(key: str) -> PEFTPreset:
    """The preset whose ``key`` is ``key`` (``'lora-qv-r4'``).

    Raises:
        KeyError: no preset has that key (the keys are listed; a display label names its key).
    """
    for item in PRESETS:
        if item.key == key:
            return item
    for item in PRESETS:
        if item.name == key:
            raise KeyError(f'{key!r} is the display label of PEFT preset {item.key!r}: use the key')
    raise KeyError(f'no PEFT preset {key!r}; presets: {preset_keys()}')


def preset_keys() -> list[str]:
    """Every preset's key, in table order."""
    return [item.key for item in PRESETS]


def grid_presets() -> dict[tuple[str, str], PEFTPreset]:
    """``(folder, grid token) -> preset`` for the benchmark grid's columns."""
    return {(p.folder, p.grid): p for p in PRESETS if p.grid is not None}


def method_types(cfg: Mapping[str, Any] | None) -> set[str]:
    """The registered PEFT types a method config uses (a COBOT host included)."""
    if not cfg:
        return set()
    return {cfg['type']} | method_types(cfg.get('host'))


def uncovered_methods() -> list[str]:
    """Registered PEFT methods that no preset uses (names starting with ``_`` are test-only)."""
    covered = set().union(*(method_types(p.peft) for p in PRESETS))
    return sorted(name for name in set(PEFT_METHODS.module_dict) - covered if not name.startswith('_'))
