"""Trainable parameters of every PEFT preset on SAM ViT or SAM 2.1 Hiera sizes, as markdown tables.

One row per preset of ``mmseg_sam.models.peft.presets.PRESETS`` (the papers' settings),
one column per encoder size, then the decode head's trainable part. A method that
refuses the backbone (SAM-Adapter and LST on SAM2Hiera) gets ``refused`` and its reason
below the table.

Models are built on the ``meta`` device (no memory, no weights), so ViT-H is instant:

    python tools/analysis_tools/count_parameters.py > table.md          # SAM ViT-B/L/H
    python tools/analysis_tools/count_parameters.py --backbone sam2     # SAM 2.1 Hiera-B+
    python tools/analysis_tools/count_parameters.py --backbone sam2 --arch tiny small base_plus large
"""

import argparse
import logging
import sys
from collections.abc import Callable

import torch
from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules
from torch import nn

import mmseg_sam  # noqa: F401
from mmseg_sam.models.backbones import SAM2_ARCHS, SAM_ARCHS, SAM2Hiera, SAMViT
from mmseg_sam.models.decode_heads import SAM2MaskDecoderHead, SAMMaskDecoderHead
from mmseg_sam.models.peft.presets import PRESETS

ARCHS = ('vit_b', 'vit_l', 'vit_h')  # the SAM table's columns (docs/peft.md)
# backbone option -> (encoder class, head class, known archs, default columns, column names)
FAMILIES: dict[
    str, tuple[type[nn.Module], type[nn.Module], tuple[str, ...], tuple[str, ...], dict[str, str]]
] = {
    'sam': (
        SAMViT,
        SAMMaskDecoderHead,
        tuple(SAM_ARCHS),
        ARCHS,
        {'vit_b': 'ViT-B', 'vit_l': 'ViT-L', 'vit_h': 'ViT-H'},
    ),
    'sam2': (
        SAM2Hiera,
        SAM2MaskDecoderHead,
        tuple(SAM2_ARCHS),
        ('base_plus',),
        {'tiny': 'Hiera-T', 'small': 'Hiera-S', 'base_plus': 'Hiera-B+', 'large': 'Hiera-L'},
    ),
}


def _trainable(build: Callable[[], nn.Module]) -> int:
    with torch.device('meta'):  # SAM2Hiera builds there too (see its drop-path note)
        model = build()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encoder_trainable(arch: str, overrides: dict, backbone: str = 'sam') -> int:
    """Trainable parameters of the ``backbone`` family's encoder of size ``arch`` with ``overrides``.

    Raises:
        ValueError: the PEFT method refuses the backbone (the reason is the message).
    """
    encoder = FAMILIES[backbone][0]
    return _trainable(lambda: encoder(arch=arch, **overrides))


def head_trainable(backbone: str = 'sam', **kwargs) -> int:
    kwargs.setdefault('loss_decode', dict(type='CrossEntropyLoss', use_sigmoid=True))
    head = FAMILIES[backbone][1]
    return _trainable(lambda: head(**kwargs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--backbone',
        choices=sorted(FAMILIES),
        default='sam',
        help='sam: SAMViT (default sizes vit_b vit_l vit_h); sam2: SAM2Hiera (default size base_plus)',
    )
    parser.add_argument(
        '--arch',
        nargs='+',
        help=f'encoder sizes, one column each (sam: {list(SAM_ARCHS)}; sam2: {list(SAM2_ARCHS)})',
    )
    args = parser.parse_args(argv)
    known = FAMILIES[args.backbone][2]
    bad = [a for a in args.arch or () if a not in known]
    if bad:
        parser.error(f'--arch {bad} unknown for --backbone {args.backbone}; choose from {list(known)}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, head_cls, _, default_archs, names = FAMILIES[args.backbone]
    archs = tuple(args.arch or default_archs)
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # keep stdout a clean table
    print('| method | ' + ' | '.join(f'{names.get(a, a)} encoder' for a in archs) + ' |')
    print('| --- |' + ' ---: |' * len(archs))
    refusals: dict[str, str] = {}
    for item in PRESETS:
        cells = []
        for arch in archs:
            try:
                cells.append(f'{encoder_trainable(arch, dict(item.backbone), args.backbone):,}')
            except ValueError as err:  # the method refuses this backbone, and says why
                cells.append('refused')
                refusals.setdefault(item.name, str(err))
        print(f'| {item.name} | ' + ' | '.join(cells) + ' |')
    if refusals:
        print()
        for name, reason in refusals.items():
            print(f'- {name}: {reason}')
    print()
    print(f'| decode head ({head_cls.__name__}, 256-dim) | trainable |')
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
        print(f'| {name} | {head_trainable(args.backbone, **kwargs):,} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
