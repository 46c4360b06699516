"""Trainable parameters of every PEFT method on SAM ViT-B/L/H, as a markdown table.

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

# name -> SAMViT overrides; settings of the papers where they state them.
METHODS: dict[str, dict] = {
    'decoder-only': dict(),
    'BitFit': dict(peft=dict(type='BitFit')),
    'Adapter (bottleneck 64)': dict(peft=dict(type='Adapter', bottleneck=64)),
    'AdaptFormer (bottleneck 16)': dict(peft=dict(type='AdaptFormer', bottleneck=16)),
    'SAM-Adapter (scale 32)': dict(peft=dict(type='SAMAdapter', scale_factor=32)),
    'VPT-deep (10 tokens)': dict(peft=dict(type='VPT', num_tokens=10)),
    'LST (side 192)': dict(peft=dict(type='LST', side_dims=192, side_heads=3)),
    'SSF': dict(peft=dict(type='SSF')),
    'LoRA (r 4, q v)': dict(peft=dict(type='LoRA', rank=4, targets=('q', 'v'))),
    'LoRA (r 3, qkv)': dict(peft=dict(type='LoRA', rank=3, alpha=32, targets=('qkv',))),
    'Conv-LoRA (r 3, 8 experts)': dict(peft=dict(type='ConvLoRA')),
    'COBOT + LoRA (r 4, q v)': dict(
        peft=dict(type='COBOT', host=dict(type='LoRA', rank=4, targets=('q', 'v')))
    ),
    'COBOT + AdaptFormer (16)': dict(peft=dict(type='COBOT', host=dict(type='AdaptFormer', bottleneck=16))),
    'COBOT + Conv-LoRA (r 4)': dict(peft=dict(type='COBOT', host=dict(type='ConvLoRA', rank=4))),
    'full fine-tuning': dict(frozen=False),
}
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
    for name, overrides in METHODS.items():
        counts = [encoder_trainable(arch, overrides) for arch in ARCHS]
        print(f'| {name} | ' + ' | '.join(f'{c:,}' for c in counts) + ' |')
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
