"""Time one prompted training step with each ``round_memory``: rounds back-propagated one at a time, recomputed, kept.

Builds the model of a prompted config with random weights, gives each image ``--instances``
rectangular instances with a box and a point, and times ``loss`` + ``backward`` (no
optimizer step) of SAM's recipe (``--rounds`` correction rounds and 2 mask-only rounds,
the first prompt a single point: three multimask outputs) with ``round_memory`` set to
``'backward'`` and ``'recompute'`` (with the config's ``instance_chunk``) and to ``'keep'``
(every round in one graph, no chunks), alternating, ``--repeat`` times each after a
warm-up. It also times the encoder's part
of the step (its forward and backward on a stand-in loss) to give the decoder's share.
Prints the medians with their spread (min-max) and the ratio.

    python tools/analysis_tools/benchmark_prompted.py \\
        configs/demo/sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py --img-size 128
"""

import argparse
import copy
import random
import statistics
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_sam  # noqa: F401
from mmseg_sam.models.peft.presets import preset


def samples(batch: int, size: int, instances: int) -> tuple[torch.Tensor, list[SegDataSample]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(batch):
        masks = torch.zeros(instances, size, size, dtype=torch.bool)
        boxes = []
        for mask in masks:
            x0, y0 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            mask[y0 : y0 + h, x0 : x0 + w] = True
            boxes.append([x0, y0, x0 + w - 1, y0 + h - 1])
        boxes = torch.tensor(boxes, dtype=torch.float32)
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_instances = InstanceData(
            masks=masks,
            labels=torch.ones(instances, dtype=torch.long),
            prompt_boxes=boxes,
            prompt_points=((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None],
            prompt_point_labels=torch.ones(instances, 1, dtype=torch.long),
        )
        sample.gt_sem_seg = PixelData(data=masks.any(0).long()[None])
        out.append(sample)
    return torch.randn(batch, 3, size, size), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument(
        '--img-size', type=int, default=None, help='encoder and head size (default: the config)'
    )
    parser.add_argument('--arch', default=None, help='backbone arch, e.g. vit_b')
    parser.add_argument('--preset', default=None, help="PEFT preset replacing the config's (e.g. lora-qv-r4)")
    parser.add_argument(
        '--chunk', type=int, default=None, help="instance_chunk of 'backward' and 'recompute' (0: none)"
    )
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--instances', type=int, default=8)
    parser.add_argument('--rounds', type=int, default=8, help='correction rounds (2 mask-only rounds follow)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args()
    register_all_modules(init_default_scope=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config).model
    cfg.sam_checkpoint = None
    head = cfg.decode_head
    head.train_prompting = dict(box_prob=0.0, correction_rounds=args.rounds, mask_only_rounds=2)
    if args.arch:
        cfg.backbone.arch = args.arch
    if args.preset:
        cfg.backbone.peft = None
        cfg.backbone.update(dict(preset(args.preset).backbone))
    if args.chunk is not None:
        head.instance_chunk = args.chunk or None
    if args.img_size:
        cfg.backbone.img_size = head.image_size = args.img_size
        cfg.data_preprocessor.size = (args.img_size, args.img_size)
    size = head.image_size
    images, data = samples(args.batch, size, args.instances)
    models = {}
    for name in ('backward', 'recompute', 'keep'):
        variant = copy.deepcopy(cfg)
        variant.decode_head.round_memory = name
        if name == 'keep':  # every round and instance in one graph
            variant.decode_head.instance_chunk = None
        torch.manual_seed(0)
        models[name] = MODELS.build(variant).train()

    def step(name: str) -> float:
        model = models[name]
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1), random.seed(1)
        start = time.perf_counter()
        if name == 'encoder only':
            feats = models['keep'].extract_feat(images)
            sum(
                (f.float() * 1e-3).sum() for f in (feats if isinstance(feats, (list, tuple)) else [feats])
            ).backward()
        else:
            sum(v for k, v in model.loss(images, data).items() if 'loss' in k).backward()
        return time.perf_counter() - start

    models['encoder only'] = models['keep']
    times: dict[str, list[float]] = {name: [] for name in models}
    for name in models:  # warm-up
        step(name)
    for _ in range(args.repeat):
        for name in models:
            times[name].append(step(name))
    medians = {name: statistics.median(values) for name, values in times.items()}
    chunk = cfg.decode_head.get('instance_chunk')
    print(
        f'{args.config} at {size}, batch {args.batch}, {args.instances} instances, {args.rounds + 3} rounds; '
        f"instance_chunk={chunk} ('keep': none)"
    )
    print('| step | median s | min-max s |\n| --- | ---: | ---: |')
    for name, values in times.items():
        print(f'| {name} | {medians[name]:.3f} | {min(values):.3f}-{max(values):.3f} |')
    for name in ('backward', 'recompute'):
        ratios = [c / o for c, o in zip(times[name], times['keep'])]
        print(
            f'{name} / keep: median {statistics.median(ratios):.3f} (min-max {min(ratios):.3f}-{max(ratios):.3f})'
        )
    share = 1 - medians['encoder only'] / medians['keep']
    print(f"decoder's share of the one-graph ('keep') step: {share:.0%}")


if __name__ == '__main__':
    main()
