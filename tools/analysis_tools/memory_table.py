"""Predicted training-step peak memory of every PEFT preset on SAM ViT-B / ViT-L / ViT-H, as markdown.

For each architecture, preset of ``mmseg_sam.models.peft.presets.PRESETS``, ``with_cp``
level and autocast setting, ``estimate_memory.py``'s prediction (fake tensors, no GPU)
of one training step of the binary SAM segmentor (``--config``: SAMViT + SAM's mask
decoder, AdamW) at batches 1 and 2; larger batches are extrapolated linearly from those
two (every activation is per image: the prediction at batch 4 differs from the
extrapolation by less than 0.1%, see ``--check-batch``):

    python tools/analysis_tools/memory_table.py --out-md memory_table.md --out-json memory_table.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from estimate_memory import GIB, build_model, estimate, fits, load_config, model_cfg_for_estimate  # noqa: E402
from torch import nn  # noqa: E402

from mmseg_sam.models.backbones.sam_vit import WITH_CP_LEVELS  # noqa: E402
from mmseg_sam.models.peft.presets import preset, preset_keys  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / 'configs/_base_/models/sam-vit-b_mask-decoder-binary.py'
ARCHS = ('vit_b', 'vit_l', 'vit_h')
AMPS = ('none', 'bf16')
BATCHES = (1, 2, 4, 8)
ARCH_NAMES = {'vit_b': 'ViT-B', 'vit_l': 'ViT-L', 'vit_h': 'ViT-H'}


def build_meta(config: Path, arch: str, method: str, img_size: int) -> nn.Module:
    """The segmentor of ``config`` with ``arch`` and the preset ``method``, on the meta device."""
    cfg = load_config(config, {'model.backbone.arch': arch})
    with torch.device('meta'):
        return build_model(model_cfg_for_estimate(cfg, img_size, method))


def peaks(model: nn.Module, with_cp: object, amp: str, img_size: int) -> dict[int, int]:
    """Predicted peak bytes at each batch of ``BATCHES`` (1 and 2 estimated, the rest extrapolated)."""
    model.backbone.with_cp = with_cp  # every block's level
    one, two = (estimate(None, b, img_size, amp, meta_model=model) for b in (1, 2))
    per_image = two.peak - one.peak
    return {b: one.peak + (b - 1) * per_image for b in BATCHES}


def check_batch(config: Path, img_size: int, batch: int = 4) -> str:
    """The extrapolation against a direct estimate at ``batch`` for ViT-H + LoRA, bf16."""
    cfg = load_config(config, {'model.backbone.arch': 'vit_h'})
    model_cfg = model_cfg_for_estimate(cfg, img_size, 'lora-qv-r4')
    direct = estimate(model_cfg, batch, img_size, 'bf16').peak
    one, two = (estimate(model_cfg, b, img_size, 'bf16').peak for b in (1, 2))
    extrapolated = one + (batch - 1) * (two - one)
    return (
        f'ViT-H + LoRA (r 4, q v), bf16, batch {batch}: estimated {direct / GIB:.3f} GiB, '
        f'extrapolated from batches 1 and 2 {extrapolated / GIB:.3f} GiB'
    )


def cell(peak: int, reserve_gib: float) -> str:
    mark = '' if fits(peak, reserve_gib)[24] else ' ✗'
    return f'{peak / GIB:.1f}{mark}'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--config', type=Path, default=DEFAULT_CONFIG)
    parser.add_argument('--archs', nargs='+', choices=ARCHS, default=list(ARCHS))
    parser.add_argument(
        '--methods', nargs='+', choices=preset_keys(), default=None, help='preset keys (default: all)'
    )
    parser.add_argument('--img-size', type=int, default=1024)
    parser.add_argument('--reserve-gib', type=float, default=1.0)
    parser.add_argument('--check-batch', action='store_true', help='print the batch-4 extrapolation check')
    parser.add_argument('--out-md', type=Path)
    parser.add_argument('--out-json', type=Path)
    args = parser.parse_args(argv)
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    methods = args.methods or preset_keys()
    results = []
    lines = []
    header = ' | '.join(f'{amp_name(amp)} b{b}' for amp in AMPS for b in BATCHES)
    for arch in args.archs:
        lines += [
            f'#### {ARCH_NAMES[arch]}, {args.img_size}x{args.img_size}: predicted peak GiB '
            f'(✗: does not fit 24 GB keeping {args.reserve_gib:g} GiB free)',
            '',
            f'| method | with_cp | {header} |',
            '| --- | --- |' + ' ---: |' * (len(AMPS) * len(BATCHES)),
        ]
        for method in methods:
            model = build_meta(args.config, arch, method, args.img_size)
            for with_cp in WITH_CP_LEVELS:
                row = {amp: peaks(model, with_cp, amp, args.img_size) for amp in AMPS}
                results.append(
                    dict(arch=arch, method=preset(method).name, key=method, with_cp=with_cp, peaks=row)
                )
                cells = ' | '.join(cell(row[amp][b], args.reserve_gib) for amp in AMPS for b in BATCHES)
                lines.append(f'| {preset(method).name} | {with_cp!r} | {cells} |')
                print(lines[-1], file=sys.stderr, flush=True)
        lines.append('')
    if args.check_batch:
        lines.append(check_batch(args.config, args.img_size))
    text = '\n'.join(lines) + '\n'
    print(text, end='')
    if args.out_md:
        args.out_md.write_text(text)
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=1, default=str) + '\n')
    return 0


def amp_name(amp: str) -> str:
    return 'fp32' if amp == 'none' else amp


if __name__ == '__main__':
    sys.exit(main())
