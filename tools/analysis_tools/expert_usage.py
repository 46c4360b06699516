"""Which scale expert Conv-LoRA's gates pick, per block, over a dataset: a heatmap and counts.

Usage::

    python tools/analysis_tools/expert_usage.py CONFIG CHECKPOINT [--split val|test] [--max-images N]
        [--out-png usage.png] [--out-json usage.json] [--cfg-options ...]

Runs the model of CONFIG with CHECKPOINT in eval mode (routing: argmax of the clean
gate logits) over the val or test dataloader of CONFIG and counts, for every
Conv-LoRA layer, how often each expert was chosen. A routing decision is made per
window in SAM's windowed-attention blocks and per image in global-attention blocks
(and in MLP layers, which see whole images), so the counts of a windowed block are
``windows per image`` times larger; the heatmap therefore shows fractions of each
layer's decisions, and marks the two kinds of block. The JSON has the raw counts.
A model without Conv-LoRA is refused.
"""

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from torch import nn

import mmseg_sam  # noqa: F401  (registers SAM models; allow-lists checkpoint classes)
from mmseg_sam.apis import init_model
from mmseg_sam.models.peft.conv_lora import conv_lora_layers, pop_expert_usage

_ATTENTION_COLOURS = {'windowed': 'tab:blue', 'global': 'tab:red'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--split', choices=('val', 'test'), default='val', help='which dataloader of the config'
    )
    parser.add_argument('--max-images', type=int, help='stop after this many images (default: all)')
    parser.add_argument('--out-png', help='heatmap path (default: CHECKPOINT stem + _expert_usage.png)')
    parser.add_argument('--out-json', help='counts path (default: CHECKPOINT stem + _expert_usage.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def load_segmentor(config: str, checkpoint: str, cfg_options: dict | None = None) -> tuple[Config, nn.Module]:
    """Build the model of ``config`` and load ``checkpoint`` strictly (:func:`mmseg_sam.apis.init_model`)."""
    model = init_model(config, checkpoint, cfg_options=cfg_options)
    return model.cfg, model


def describe_layers(model: nn.Module) -> list[dict]:
    """Per Conv-LoRA layer: name, block, the block's attention, routing granularity, experts."""
    layers = []
    for name, layer in conv_lora_layers(model).items():
        match = re.search(r'(?:^|\.)blocks\.(\d+)\.', name)
        if match is None:
            raise ValueError(f'Conv-LoRA layer {name} is not inside a SAM block (blocks.<i>)')
        index = int(match.group(1))
        block = model.backbone.blocks[index]
        windowed = getattr(block, 'window_size', 0) > 0
        layers.append(
            dict(
                name=name,
                block=index,
                attention='windowed' if windowed else 'global',
                routed_per='window' if windowed and '.attn.' in name else 'image',
                k=layer.gate.k,
                scales=[float(e.scale) for e in layer.experts],
            )
        )
    return layers


def count_routing(
    model: nn.Module, dataloader, max_images: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Run ``model.test_step`` over ``dataloader`` and sum the experts chosen per layer.

    Returns:
        tuple[dict, int]: layer name -> (M,) counts, and the number of images seen.
    """
    totals: dict[str, np.ndarray] = {}
    images = 0
    for data in dataloader:
        if max_images is not None:
            left = max_images - images
            if left <= 0:
                break
            data = {key: value[:left] for key, value in data.items()}  # lists of images / samples
        with torch.no_grad():
            model.test_step(data)
        for name, counts in pop_expert_usage(model).items():
            totals[name] = totals.get(name, 0) + counts.numpy()
        images += len(data['inputs'])
    return totals, images


def plot_heatmap(layers: list[dict], out: str | Path, title: str) -> None:
    """Block x expert heatmap of the fraction of each layer's routing decisions that chose the expert."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fractions = np.array([layer['fractions'] for layer in layers])  # (layers, M)
    num_layers, num_experts = fractions.shape
    fig, ax = plt.subplots(figsize=(3.5 + 0.7 * num_experts, 1.8 + 0.4 * num_layers), layout='constrained')
    image = ax.imshow(
        fractions, cmap='viridis', vmin=0.0, vmax=max(1.0, float(fractions.max())), aspect='auto'
    )
    for row in range(num_layers):
        for col in range(num_experts):
            value = fractions[row, col]
            colour = 'black' if value > 0.6 else 'white'
            ax.text(col, row, f'{value:.0%}', ha='center', va='center', fontsize=8, color=colour)
    scales = layers[0]['scales']
    ax.set_xticks(range(num_experts), [f'E{i}\nx{s:g}' for i, s in enumerate(scales)], fontsize=8)
    ax.set_xlabel('expert (upsampling scale)', fontsize=9)
    labels = [
        f'{layer["name"].removeprefix("backbone.")}\nper {layer["routed_per"]}, n={layer["decisions"]}'
        for layer in layers
    ]
    ax.set_yticks(range(num_layers), labels, fontsize=7)
    for tick, layer in zip(ax.get_yticklabels(), layers):
        tick.set_color(_ATTENTION_COLOURS[layer['attention']])
    fig.legend(
        handles=[Patch(color=c, label=f'{kind} attention block') for kind, c in _ATTENTION_COLOURS.items()],
        loc='outside lower center',
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.colorbar(image, ax=ax).set_label('fraction of routing decisions', fontsize=8)
    ax.set_title(title, fontsize=9)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stem = Path(args.checkpoint).with_suffix('')
    out_png = Path(args.out_png or f'{stem}_expert_usage.png')
    out_json = Path(args.out_json or f'{stem}_expert_usage.json')
    try:
        if args.max_images is not None and args.max_images < 1:
            raise ValueError(f'--max-images must be >= 1, got {args.max_images}')
        cfg, model = load_segmentor(args.config, args.checkpoint, args.cfg_options)
        layers = describe_layers(model)  # refuses a model without Conv-LoRA before any data is read
        dataloader_cfg = cfg.get(f'{args.split}_dataloader')
        if dataloader_cfg is None:
            raise ValueError(f'the config has no {args.split}_dataloader')
        dataloader = Runner.build_dataloader(copy.deepcopy(dataloader_cfg))
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1

    totals, images = count_routing(model, dataloader, args.max_images)
    if images == 0:
        print(f'error: the {args.split} dataloader yielded no images', file=sys.stderr)
        return 1
    for layer in layers:
        counts = totals[layer['name']]
        decisions = int(counts.sum()) // layer['k']
        layer.update(
            counts=counts.tolist(),
            decisions=decisions,
            decisions_per_image=decisions / images,
            fractions=(counts / decisions).tolist(),
        )
    report = dict(
        config=str(args.config),
        checkpoint=str(args.checkpoint),
        split=args.split,
        num_images=images,
        note='counts: routing decisions that chose each expert (k per decision); one decision per window '
        'in windowed-attention layers, per image in global-attention and MLP layers',
        layers=layers,
    )
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + '\n')
    title = f'Conv-LoRA expert usage: {Path(args.config).stem}\n{args.split} split, {images} images'
    plot_heatmap(layers, out_png, title)
    print(f'{images} images, {len(layers)} Conv-LoRA layers -> {out_png}, {out_json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
