"""Trainable parameters of every PEFT preset on SAM ViT-B/L/H, as a markdown table.

One row per preset of ``mmseg_sam.models.peft.presets.PRESETS`` (the papers' settings).

Models are built on the ``meta`` device (no memory, no weights), so ViT-H is instant:

    python tools/analysis_tools/count_parameters.py > table.md
"""

import argparse
import logging
import sys

import torch
from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules

import mmseg_sam  # noqa: F401
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.decode_heads import SAMMaskDecoderHead
from mmseg_sam.models.peft.presets import PRESETS

ARCHS = ('vit_b', 'vit_l', 'vit_h')


def encoder_trainable(arch: str, overrides: dict) -> int:
    with torch.device('meta'):
        model = SAMViT(arch=arch, **overrides)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def head_trainable(**kwargs) -> int:
    kwargs.setdefault('loss_decode', dict(type='CrossEntropyLoss', use_sigmoid=True))
    with torch.device('meta'):
        head = SAMMaskDecoderHead(**kwargs)
    return sum(p.numel() for p in head.parameters() if p.requires_grad)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # keep stdout a clean table
    print('| method | ViT-B encoder | ViT-L encoder | ViT-H encoder |')
    print('| --- | ---: | ---: | ---: |')
    for item in PRESETS:
        counts = [encoder_trainable(arch, dict(item.backbone)) for arch in ARCHS]
        print(f'| {item.name} | ' + ' | '.join(f'{c:,}' for c in counts) + ' |')
    print()
    print('| decode head (SAMMaskDecoderHead, 256-dim) | trainable |')
    print('| --- | ---: |')
    heads = {
        'binary (out_channels=1)': dict(num_classes=2, out_channels=1, threshold=0.5),
        'one token per class, 12 classes': dict(num_classes=12, out_channels=12),
        'mask classification, 12 classes, 20 queries': dict(
            num_classes=12,
            mode='mask_classification',
            num_queries=20,
            loss_decode=dict(type='MaskClassificationLoss'),
        ),
    }
    for name, kwargs in heads.items():
        print(f'| {name} | {head_trainable(**kwargs):,} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
