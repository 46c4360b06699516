"""Cost of the multi-class heads as the number of classes grows, on SAM ViT-B.

For each head (one mask token per class, mask classification with 100 queries, mmseg's UPerHead
+ FCNHead on Feature2Pyramid), each number of classes and each input size this prints, as a
markdown table, the trainable parameters (encoder with LoRA q/v r4 + head), the peak memory and
the time of a training step (forward, loss, backward, AdamW step on a batch of two images with
label maps of all classes; two because UPerHead's batch norm after its 1x1 pooling needs two):

    python tools/analysis_tools/benchmark_heads.py --classes 2 19 59 150 --img-size 512 1024 --part head

The models are the repository's model bases (``configs/_base_/models/sam-vit-b_*``) with
``num_classes`` set. ``--part full`` times the whole step; ``--part head`` feeds random maps of
the encoder's output shapes to the head and times only what differs between the heads
(UPerHead's pyramid neck included): the encoder's share of a step is the same for all of them
(docs/benchmarks.md measures it), and a head's cost does not depend on the values it reads. Every row runs in its own spawned interpreter; peak memory is
that child's peak RSS minus its RSS after building the model and the batch (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA). Times: median and range of ``--repeat`` runs after
``--warmup`` runs.
"""

import argparse
import multiprocessing
import resource
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HEADS = {
    'tokens': ('one token per class', 'sam-vit-b_mask-decoder-multiclass.py'),
    'maskcls': ('mask classification (100 queries)', 'sam-vit-b_mask-decoder-maskcls.py'),
    'upernet': ('UPerHead + FCNHead', 'sam-vit-b_upernet.py'),
}
PEFT = dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))


def model_cfg(head: str, num_classes: int, img_size: int, arch: Any = 'vit_b') -> dict:
    """The head's model base with ``num_classes`` classes at ``img_size``, without a checkpoint."""
    from mmengine.config import Config

    model = Config.fromfile(REPO / 'configs/_base_/models' / HEADS[head][1]).model
    model.sam_checkpoint = None
    model.backbone.update(arch=arch, img_size=img_size, peft=PEFT)
    model.data_preprocessor.size = (img_size, img_size)
    model.decode_head.num_classes = num_classes
    if head == 'tokens':
        model.decode_head.out_channels = num_classes
    elif head == 'maskcls':
        model.decode_head.num_queries = 100
    else:
        from mmseg_sam.models.backbones import SAM_ARCHS

        dims = (SAM_ARCHS[arch] if isinstance(arch, str) else arch)['embed_dims']
        model.neck.embed_dim = dims
        model.decode_head.in_channels = [dims] * 4
        model.auxiliary_head.update(in_channels=dims, num_classes=num_classes)
    return model.to_dict()


def batch(num_classes: int, img_size: int, device: str):
    """Two random images with label maps holding every class (blocks of 16x16 pixels)."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(0)
    cells = img_size // 16
    labels = torch.arange(cells * cells) % num_classes
    labels = labels[torch.randperm(labels.numel(), generator=gen)].reshape(cells, cells)
    labels = labels.repeat_interleave(16, 0).repeat_interleave(16, 1)  # (S/16, S/16) -> (S, S)
    shape = (img_size, img_size)
    samples = []
    for flip in (False, True):
        sample = SegDataSample(metainfo=dict(img_shape=shape, pad_shape=shape, ori_shape=shape))
        sample.gt_sem_seg = PixelData(data=(labels.flip(0) if flip else labels)[None].to(device))
        samples.append(sample)
    return torch.randn(2, 3, img_size, img_size, generator=gen).to(device), samples


def measure(opts: dict[str, Any]) -> dict[str, Any]:
    """Build one row's model and time its training steps (in the calling process)."""
    import torch
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mmseg_sam  # noqa: F401

    register_all_modules(init_default_scope=True)
    if opts.get('threads'):
        torch.set_num_threads(opts['threads'])
    torch.manual_seed(0)
    device = torch.device(opts['device'])
    model = MODELS.build(model_cfg(opts['head'], opts['classes'], opts['img_size'], opts['arch'])).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    inputs, samples = batch(opts['classes'], opts['img_size'], opts['device'])
    train_cfg = model.train_cfg
    feats = None
    if (
        opts['part'] == 'head'
    ):  # random maps of the encoder's output shapes: the heads' cost does not depend on values
        enc, grid = model.backbone, opts['img_size'] // model.backbone.patch_size
        dims = [enc.embed_dims] * len(enc.out_indices) + ([enc.out_channels] if enc.with_neck else [])
        feats = tuple(torch.randn(len(samples), c, grid, grid, device=device) for c in dims)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if feats is None:
            losses = model.loss(inputs, samples)
        else:
            x = model.neck(feats) if model.with_neck else feats
            losses = model.decode_head.loss(x, samples, train_cfg)
            if model.with_auxiliary_head:
                losses.update(
                    {f'aux.{k}': v for k, v in model.auxiliary_head.loss(x, samples, train_cfg).items()}
                )
        loss = sum(v.sum() for k, v in losses.items() if 'loss' in k)
        loss.backward()
        optimizer.step()
        if device.type == 'cuda':
            torch.cuda.synchronize()

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for i in range(opts['warmup'] + opts['repeat']):
        t = time.perf_counter()
        step()
        if i >= opts['warmup']:
            times.append(time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == 'cuda'
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_rss
    )
    return dict(trainable=sum(p.numel() for p in params), peak_mib=peak, times=times)


def _child(opts: dict[str, Any], conn: Connection) -> None:
    try:
        conn.send(measure(opts))
    except Exception as exc:  # reported as the row's result
        conn.send(dict(error=f'{type(exc).__name__}: {exc}'))


def run_isolated(opts: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure` in a fresh spawned interpreter (peak RSS of that row alone)."""
    ctx = multiprocessing.get_context('spawn')
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(opts, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--heads', nargs='+', choices=tuple(HEADS), default=list(HEADS))
    parser.add_argument('--classes', nargs='+', type=int, default=[2, 19, 59, 150])
    parser.add_argument('--img-size', nargs='+', type=int, default=[512, 1024])
    parser.add_argument(
        '--part', choices=('head', 'full'), default='head', help='time the head or the whole step'
    )
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    bad = [c for c in args.classes if c < 2]
    if bad:
        raise SystemExit(f'--classes must be >= 2, got {bad}')
    bad = [s for s in args.img_size if s % 16]
    if bad:
        raise SystemExit(f'--img-size must be multiples of the patch size 16, got {bad}')
    if args.repeat < 1 or args.warmup < 0:
        raise SystemExit(f'--repeat must be >= 1 and --warmup >= 0, got {args.repeat} and {args.warmup}')
    print(
        f'part: {args.part}, device: {args.device}, warmup {args.warmup}, repeat {args.repeat}, SAM ViT-B + LoRA q/v r4'
    )
    print('| head | classes | input | trainable | peak memory (MiB) | step (s): median [min, max] |')
    print('| --- | ---: | ---: | ---: | ---: | --- |')
    for img_size in args.img_size:
        for head in args.heads:
            for classes in args.classes:
                opts = dict(
                    head=head, classes=classes, img_size=img_size, part=args.part, device=args.device,
                    warmup=args.warmup, repeat=args.repeat, arch='vit_b', threads=args.threads,
                )  # fmt: skip
                r = run_isolated(opts)
                name = HEADS[head][0]
                if 'error' in r:
                    print(f'| {name} | {classes} | {img_size} | - | - | {r["error"]} |', flush=True)
                    continue
                t = r['times']
                print(
                    f'| {name} | {classes} | {img_size} | {r["trainable"]:,} | {r["peak_mib"]:.0f} | '
                    f'{statistics.median(t):.3f} [{min(t):.3f}, {max(t):.3f}] |',
                    flush=True,
                )


if __name__ == '__main__':
    main()
