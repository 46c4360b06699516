"""Trainable parameters of every PEFT preset on a backbone family's sizes, as markdown tables.

One row per preset of ``mmseg_sam.models.peft.presets.PRESETS`` (the papers' settings),
one column per encoder size, then the decode head's trainable part. ``--backbone`` takes
every registered family (``sam``: SAMViT, ``sam2``: SAM2Hiera, and any other
``SAMBackboneBase`` subclass), with the sizes, labels and head the family declares. A method that
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
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules
from torch import nn

import mmseg_sam  # noqa: F401
from mmseg_sam.models.backbones.base import registered_families
from mmseg_sam.models.peft.presets import PRESETS


def _trainable(build: Callable[[], nn.Module]) -> int:
    with torch.device('meta'):  # SAM2Hiera builds there too (see its drop-path note)
        model = build()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encoder_trainable(arch: str, overrides: dict, backbone: str = 'sam') -> int:
    """Trainable parameters of the ``backbone`` family's encoder of size ``arch`` with ``overrides``.

    Raises:
        ValueError: the PEFT method refuses the backbone (the reason is the message).
    """
    encoder = registered_families()[backbone]
    return _trainable(lambda: encoder(arch=arch, **overrides))


def head_trainable(backbone: str = 'sam', **kwargs) -> int:
    kwargs.setdefault('loss_decode', dict(type='CrossEntropyLoss', use_sigmoid=True))
    head = MODELS.get(registered_families()[backbone].decode_head)
    return _trainable(lambda: head(**kwargs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    families = registered_families()  # --backbone: each declares its sizes, labels, columns and head
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--backbone',
        choices=sorted(families),
        default='sam',
        help='; '.join(
            f'{name}: {cls.__name__} (default sizes {" ".join(cls.report_archs)})'
            for name, cls in families.items()
        ),
    )
    parser.add_argument(
        '--arch',
        nargs='+',
        help='encoder sizes, one column each ('
        + '; '.join(f'{name}: {list(cls.arch_zoo)}' for name, cls in families.items())
        + ')',
    )
    args = parser.parse_args(argv)
    known = tuple(families[args.backbone].arch_zoo)
    bad = [a for a in args.arch or () if a not in known]
    if bad:
        parser.error(f'--arch {bad} unknown for --backbone {args.backbone}; choose from {list(known)}')
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    family = registered_families()[args.backbone]
    archs, names = tuple(args.arch or family.report_archs), family.arch_labels
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
    print(f'| decode head ({family.decode_head}, 256-dim) | trainable |')
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
