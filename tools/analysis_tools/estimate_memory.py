"""Predict the peak memory of one training step, without a GPU.

The model of a config (any backbone and head that mmseg's registry builds) runs one
training step on *fake tensors* (``torch._subclasses.FakeTensorMode``: shapes, dtypes
and autograd, no data), under autocast when ``--amp`` is given. A dispatch mode sees
every tensor each operator returns, in forward and backward, and keeps the byte count of
each distinct storage (views share one) until the last tensor on it dies (a weak
reference to the storage), so that it knows the live bytes after every operator:

- **weights**: every parameter and buffer (dedupe by storage);
- **gradients**: one per trainable parameter, in its dtype;
- **optimizer state**: AdamW, two fp32 tensors per trainable parameter (plus one
  transient per-parameter buffer while it steps);
- **activations**: what is still alive at the end of the forward (what autograd keeps
  for backward, and what gradient checkpointing keeps: block inputs), per component
  (the model's children and each element of their block lists);
- **peak**: the largest live total over forward and backward, and what it is made of;
  the largest single buffer.

Checkpoint paths in the config are dropped (weights do not change memory). The loss is a
stand-in that keeps what a per-pixel loss keeps: the head's logits resized to the input
(bilinear) and a sigmoid BCE against zeros, plus the backbone's auxiliary PEFT losses.
A prompted model (``SAMPromptedEncoderDecoder``) runs its own training loss instead, on
``--instances`` instances per image (default 8) through every correction round of its
``train_prompting``; a config that mixes box and point first prompts is estimated with
single points for every instance (three multimask outputs per instance: the most kept).
Conv-LoRA sends every sample to its largest-scale expert (the routing that keeps the
most; a shape-only run has no routing to read).

    python tools/analysis_tools/estimate_memory.py CONFIG --batch 2 --img-size 1024 --amp bf16
    python tools/analysis_tools/estimate_memory.py configs/_base_/models/sam-vit-b_mask-decoder-binary.py \\
        --preset lora-qv-r4 --cfg-options model.backbone.with_cp=selective

``--measure`` also runs the step for real on the CPU (random weights) and reports what it
allocated next to the prediction: allocator events from ``torch.profiler`` with
``profile_memory=True`` (each allocation and free of PyTorch's CPU allocator), summed per
phase (forward, backward, optimizer step).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import random
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import mmseg_sam  # noqa: F401
from mmseg_sam.models.decode_heads import SAMPromptedHead
from mmseg_sam.models.peft import collect_aux_losses
from mmseg_sam.models.peft.presets import preset, preset_keys

AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
GPU_SIZES_GB = (16, 24, 40, 80)
MIB = 2**20
GIB = 2**30
# Config keys that name weight files: a memory estimate needs no weights.
CHECKPOINT_KEYS = ('checkpoint', 'sam_checkpoint', 'pretrained', 'init_cfg')
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, fp32


# ------------------------------------------------------------------------ tracking
class StorageTracker(TorchDispatchMode):
    """Live bytes of the tensor storages that operators create, by the component that made them.

    Every tensor an operator returns is looked at once per storage: its bytes are added
    to the live total and to the current owner (the innermost component running, or the
    phase), and subtracted again when the storage is freed (a weakref finalizer). Views
    and in-place results share a storage and add nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.largest = (0, '')
        self.by_owner: dict[str, int] = {}
        self.peak_by_owner: dict[str, int] = {}
        self.owners: list[str] = ['forward']
        self._seen: dict[int, tuple[int, str]] = {}

    def add(self, t: Tensor, owner: str | None = None) -> None:
        """Count the storage of ``t`` (once) as allocated by ``owner`` (default: the current one)."""
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._seen:
            return
        nbytes, owner = storage.nbytes(), owner or self.owners[-1]
        self._seen[key] = (nbytes, owner)
        self.live += nbytes
        self.by_owner[owner] = self.by_owner.get(owner, 0) + nbytes
        if nbytes > self.largest[0]:
            self.largest = (nbytes, owner)
        if self.live > self.peak:
            self.peak = self.live
            self.peak_by_owner = dict(self.by_owner)
        weakref.finalize(storage, self._free, key)

    def exclude(self, tensors: list[Tensor]) -> None:
        """Treat the storages of ``tensors`` (weights, made before the step) as known and count them nowhere.

        Without this a view of a weight (``weight.t()`` in a linear) would count the weight
        as new memory.
        """
        for t in tensors:
            self._seen.setdefault(t.untyped_storage()._cdata, (0, 'weights'))

    def _free(self, key: int) -> None:
        nbytes, owner = self._seen.pop(key)
        self.live -= nbytes
        self.by_owner[owner] -= nbytes

    def owner_of(self, t: Tensor) -> str | None:
        entry = self._seen.get(t.untyped_storage()._cdata)
        return entry and entry[1]

    def reassign(self, t: Tensor, owner: str) -> None:
        """Book the storage of ``t`` under ``owner`` from now on (e.g. a gradient made in backward)."""
        key = t.untyped_storage()._cdata
        if key not in self._seen:
            self.add(t, owner)
            return
        nbytes, old = self._seen[key]
        self._seen[key] = (nbytes, owner)
        self.by_owner[old] -= nbytes
        self.by_owner[owner] = self.by_owner.get(owner, 0) + nbytes

    @contextmanager
    def owner(self, name: str) -> Iterator[None]:
        self.owners.append(name)
        try:
            yield
        finally:
            self.owners.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self.add(t)
        return out


def components(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The parts memory is reported by: the model's children, and each element of their block lists.

    A block list is the outermost ``nn.ModuleList`` on each path inside a child
    (``backbone.blocks``, ``backbone.trunk.blocks`` of a Hiera, a decoder's ``layers``), so
    any backbone is broken down by its blocks; lists inside a block (experts) are not.
    """
    parts = []
    for name, child in model.named_children():
        if name == 'data_preprocessor':
            continue
        parts.append((name, child))
        lists: list[str] = []
        for sub_name, sub in child.named_modules():
            if not isinstance(sub, nn.ModuleList) or any(sub_name.startswith(f'{n}.') for n in lists):
                continue
            lists.append(sub_name)
            parts += [(f'{name}.{sub_name}.{i}', m) for i, m in enumerate(sub)]
    return parts


@contextmanager
def attributed(model: nn.Module, tracker: StorageTracker) -> Iterator[None]:
    """Book what each component's forward allocates under its name (forward hooks, removed on exit)."""

    def enter(name: str) -> Callable[..., None]:
        return lambda *_: tracker.owners.append(name)

    def leave(*_: Any) -> None:  # returns None: the output stays the module's
        tracker.owners.pop()

    handles = []
    for name, module in components(model):
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# -------------------------------------------------------------------------- model
def load_config(path: str | Path, options: Mapping[str, Any] | None = None) -> Config:
    cfg = Config.fromfile(str(path))
    if options:
        cfg.merge_from_dict(dict(options))
    return cfg


def model_cfg_for_estimate(
    cfg: Config, img_size: int | None = None, method: str | None = None
) -> dict[str, Any]:
    """``cfg.model`` without weight files, at ``img_size``, with the preset ``method`` if given."""
    model = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model))

    def drop(node: Any) -> None:
        if isinstance(node, dict):
            for key in CHECKPOINT_KEYS:
                if key in node:
                    node[key] = None
            for value in node.values():
                drop(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                drop(value)

    drop(model)
    backbone = model.get('backbone', {})
    if method is not None:
        item = preset(method)
        backbone.pop('peft', None)
        backbone['frozen'] = True
        backbone.update(copy.deepcopy(dict(item.backbone)))
    if img_size is not None:
        if 'img_size' in backbone:
            backbone['img_size'] = img_size
        head = model.get('decode_head')
        if isinstance(head, dict) and 'image_size' in head:  # a prompted head maps prompts into this size
            head['image_size'] = img_size
        pre = model.get('data_preprocessor')
        if isinstance(pre, dict) and pre.get('size') is not None:
            pre['size'] = (img_size, img_size)
    return model


def input_size(model_cfg: Mapping[str, Any], img_size: int | None) -> int:
    """The training input side: ``img_size``, else the data preprocessor's or the backbone's."""
    if img_size is not None:
        return img_size
    pre = model_cfg.get('data_preprocessor') or {}
    if pre.get('size') is not None:
        return int(max(pre['size']))
    size = (model_cfg.get('backbone') or {}).get('img_size')
    if size is None:
        raise ValueError(
            'the config states no input size (data_preprocessor.size, backbone.img_size): pass --img-size'
        )
    return int(size)


def prompted_samples(
    model: nn.Module, batch: int, img_size: int, instances: int
) -> list[SegDataSample] | None:
    """Data samples with ``instances`` empty instances and their prompts, for a prompted model; else None.

    A ``box_prob`` strictly between 0 and 1 is set to 0 on ``model`` (every first prompt a single
    point, the multimask case), so that the step depends on no random draw.
    """
    head = getattr(model, 'decode_head', None)
    if not isinstance(head, SAMPromptedHead):
        return None
    if 0 < head.train_prompting['box_prob'] < 1:
        head.train_prompting = dict(head.train_prompting, box_prob=0.0)
    size = (img_size, img_size)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=size, pad_shape=size, ori_shape=size))
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *size, dtype=torch.long))
        sample.gt_instances = InstanceData(
            masks=torch.zeros(instances, *size, dtype=torch.bool),
            labels=torch.ones(instances, dtype=torch.long),
            prompt_boxes=torch.zeros(instances, 4),
            prompt_points=torch.zeros(instances, 1, 2),
            prompt_point_labels=torch.ones(instances, 1, dtype=torch.long),
        )
        samples.append(sample)
    return samples


def static_point_embeddings(model: nn.Module) -> None:
    """Give segment_anything's prompt encoders in ``model`` sam2's ``_embed_points``.

    segment_anything's ``PromptEncoder._embed_points`` writes the label embeddings through
    boolean indexing (``embedding[labels == -1] = 0``), whose shape depends on the data and
    which fake tensors cannot run; sam2's computes the same values with ``torch.where`` (it
    also handles labels 2 and 3, which SAM's point prompts never hold). Memory differs at
    most by a few (N, K, C) point embeddings.
    """
    from sam2.modeling.sam.prompt_encoder import PromptEncoder as SAM2PromptEncoder

    from mmseg_sam.models.sam_modeling import PromptEncoder

    for module in model.modules():
        if isinstance(module, PromptEncoder):
            module._embed_points = types.MethodType(SAM2PromptEncoder._embed_points, module)


def sample_tensors(samples: list[SegDataSample] | None) -> list[Tensor]:
    """The tensors of ``prompted_samples`` (inputs of the step, not its activations)."""
    if not samples:
        return []
    return [t for s in samples for t in (s.gt_sem_seg.data, *s.gt_instances.values())]


def stand_in_loss(model: nn.Module, images: Tensor, samples: list[SegDataSample] | None = None) -> Tensor:
    """Forward of a segmentor and a per-pixel loss that keeps what mmseg's losses keep.

    The backbone's auxiliary PEFT losses (Conv-LoRA's) are added as the segmentor adds them.
    With ``samples`` (a prompted model, see :func:`prompted_samples`) the model's own loss runs.
    """
    if samples is not None:
        return sum(v for k, v in model.loss(images, samples).items() if 'loss' in k)
    with collect_aux_losses() as aux:
        feats = model.extract_feat(images)
        out = model.decode_head(feats)
    outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
    loss = images.new_zeros((), dtype=torch.float32)
    for t in outs:
        if t.dim() == 4:  # (B, C, h, w) logits -> (B, C, H, W), as mmseg's loss_by_feat resizes them
            t = F.interpolate(t, size=images.shape[-2:], mode='bilinear', align_corners=False)
            loss = loss + F.binary_cross_entropy_with_logits(
                t.float(), torch.zeros_like(t, dtype=torch.float32)
            )
        else:
            loss = loss + t.float().mean()
    return loss + sum(aux.values())


def build_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    model = MODELS.build(copy.deepcopy(dict(model_cfg)))
    return model.train()


def storage_bytes(tensors: list[Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
    return sum(seen.values())


def autocast(dtype: torch.dtype | None) -> Any:
    return torch.autocast('cpu', dtype=dtype) if dtype is not None else nullcontext()


# ---------------------------------------------------------------------- estimate
@dataclass
class Estimate:
    """A predicted training step; bytes."""

    batch: int
    img_size: int
    amp: str
    params: int
    trainable: int
    weights: int
    gradients: int
    optimizer_state: int
    optimizer_transient: int
    inputs: int
    activations: int
    activations_by_component: dict[str, int]
    peak_forward_backward: int
    peak_breakdown: dict[str, int]
    largest_buffer: int
    largest_buffer_owner: str
    with_cp: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        """Steady-state peak of a step: optimizer state is alive, gradients are freed between steps."""
        fwd_bwd = self.weights + self.optimizer_state + self.inputs + self.peak_forward_backward
        step = self.weights + self.optimizer_state + self.inputs + self.gradients + self.optimizer_transient
        return max(fwd_bwd, step)

    @property
    def parameter_part(self) -> int:
        return self.weights + self.gradients + self.optimizer_state


def estimate(
    model_cfg: Mapping[str, Any] | None,
    batch: int,
    img_size: int,
    amp: str = 'none',
    meta_model: nn.Module | None = None,
    instances: int = 8,
) -> Estimate:
    """Run one training step on fake tensors and count its memory (see the module docstring).

    Args:
        model_cfg: the model's config, built on the meta device; or None with ``meta_model``.
        batch, img_size, amp: the step.
        meta_model: a model already built on the meta device (a copy is used), to estimate
            several steps of one model without building it each time.
        instances: instances per image of a prompted model (ignored otherwise).
    """
    dtype = AMP_DTYPES[amp]
    # Built on the meta device (initialisers that read values, such as trunc_normal_, do
    # nothing there), then given fake CPU storage: fake tensors carry autocast's CPU rules.
    if meta_model is not None:
        model = copy.deepcopy(meta_model).train()
    else:
        with torch.device('meta'):
            model = build_model(model_cfg)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device='cpu')
        params = list(model.parameters())
        trainable = [p for p in params if p.requires_grad]
        weights = storage_bytes(params + list(model.buffers()))
        images = torch.randn(batch, 3, img_size, img_size)
        samples = prompted_samples(model, batch, img_size, instances)
        if samples is not None:
            static_point_embeddings(model)
        tracker = StorageTracker()
        tracker.exclude(params + list(model.buffers()) + [images, *sample_tensors(samples)])
        with tracker:
            with attributed(model, tracker), autocast(dtype):
                loss = stand_in_loss(model, images, samples)
            kept = {k: v for k, v in tracker.by_owner.items() if v}
            activations = tracker.live
            tracker.owners[-1] = 'backward'
            loss.backward()
            for p in trainable:
                if p.grad is not None:
                    tracker.reassign(p.grad, 'gradients')
        gradients = storage_bytes([p.grad for p in trainable if p.grad is not None])
        numel = sum(p.numel() for p in trainable)
        order = [*(name for name, _ in components(model)), 'forward', 'backward', 'gradients']
        rank = {name: i for i, name in enumerate(order)}

        def ordered(by_owner: dict[str, int]) -> dict[str, int]:
            return dict(
                sorted(((k, v) for k, v in by_owner.items() if v), key=lambda kv: rank.get(kv[0], -1))
            )

        peak_breakdown = ordered(tracker.peak_by_owner)
        kept = ordered(kept)
    backbone = getattr(model, 'backbone', None)
    return Estimate(
        batch=batch,
        img_size=img_size,
        amp=amp,
        params=sum(p.numel() for p in params),
        trainable=numel,
        weights=weights,
        gradients=gradients,
        optimizer_state=ADAMW_STATES * 4 * numel,
        # the foreach AdamW step makes one temporary per parameter (the denominator)
        optimizer_transient=4 * numel,
        activations=activations,
        inputs=storage_bytes([images, *sample_tensors(samples)]),
        activations_by_component=kept,
        peak_forward_backward=tracker.peak,
        peak_breakdown=peak_breakdown,
        largest_buffer=tracker.largest[0],
        largest_buffer_owner=tracker.largest[1],
        with_cp=getattr(backbone, 'with_cp', None),
    )


# ----------------------------------------------------------------------- measure
def _allocated(fn: Callable[[], Any]) -> tuple[Any, int, int]:
    """Run ``fn`` under the profiler; its result, the net bytes it left allocated and its peak.

    Bytes come from the CPU allocator's events (``profile_memory=True``): each allocation
    adds its size, each free subtracts it, in time order; the peak is the running
    maximum above the start.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return result, live, peak


def measure(
    model_cfg: Mapping[str, Any], batch: int, img_size: int, amp: str = 'none', instances: int = 8
) -> dict[str, int]:
    """One real training step on the CPU (random weights), measured with the allocator's events.

    Returns bytes: weights (the parameters' and buffers' storages), activations (net
    allocation of the forward: what is alive when it ends), peak_forward_backward (the
    peak above the step's start, through forward and backward), gradients (net
    allocation of forward and backward: the backward frees what the forward kept), optimizer_state (net allocation of the first AdamW
    step) and the peak of that step above its start.
    """
    dtype = AMP_DTYPES[amp]
    gc.collect()  # earlier garbage freed inside a measured phase would count against it
    torch.manual_seed(0)
    random.seed(0)  # a prompted model's round plan: the same prompts and so the same weights used
    model = build_model(model_cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = storage_bytes(list(model.parameters()) + list(model.buffers()))
    optimizer = torch.optim.AdamW(trainable, lr=1e-4) if trainable else None
    images = torch.randn(batch, 3, img_size, img_size)
    samples = prompted_samples(model, batch, img_size, instances)

    def forward() -> Tensor:
        with autocast(dtype):
            return stand_in_loss(model, images, samples)

    loss, activations, fwd_peak = _allocated(forward)
    _, backward_net, bwd_peak = _allocated(loss.backward)
    del loss
    # The backward frees what the forward kept and leaves the gradients.
    gradients = activations + backward_net
    _, optimizer_state, step_peak = _allocated(optimizer.step) if optimizer else (None, 0, 0)
    return dict(
        weights=weights,
        activations=activations,
        peak_forward_backward=max(fwd_peak, activations + bwd_peak),
        gradients=gradients,
        optimizer_state=optimizer_state,
        optimizer_peak=step_peak,
    )


# ------------------------------------------------------------------------ report
def fits(peak: int, reserve_gib: float) -> dict[int, bool]:
    """Whether ``peak`` bytes fit each GPU size (GiB), keeping ``reserve_gib`` for the CUDA context."""
    return {gb: peak + reserve_gib * GIB <= gb * GIB for gb in GPU_SIZES_GB}


def mib(n: int) -> str:
    return f'{n / MIB:,.0f} MiB'


def report_text(
    est: Estimate, title: str, reserve_gib: float, measured: Mapping[str, int] | None = None
) -> str:
    lines = [
        f'{title}',
        f'batch {est.batch}, {est.img_size}x{est.img_size}, amp {est.amp}, with_cp={est.with_cp!r}; '
        f'{est.params:,} parameters, {est.trainable:,} trainable',
        '',
        '| part | predicted | measured (CPU) |' if measured else '| part | predicted |',
        '| --- | ---: | ---: |' if measured else '| --- | ---: |',
    ]

    def row(name: str, value: int, key: str | None = None) -> None:
        cells = [name, mib(value)]
        if measured:
            cells.append(mib(measured[key]) if key in measured else '')
        lines.append('| ' + ' | '.join(cells) + ' |')

    row('weights (parameters and buffers)', est.weights, 'weights')
    row('gradients of the trainable parameters', est.gradients, 'gradients')
    row('optimizer state (AdamW: 2 fp32 per trainable parameter)', est.optimizer_state, 'optimizer_state')
    row('input batch', est.inputs)
    row('activations kept for backward (end of forward)', est.activations, 'activations')
    row(
        'forward + backward peak above weights, optimizer state and inputs',
        est.peak_forward_backward,
        'peak_forward_backward',
    )
    row(f'largest single buffer ({est.largest_buffer_owner})', est.largest_buffer)
    lines.append(f'| **peak of a training step** | **{mib(est.peak)}** |' + (' |' if measured else ''))
    lines += ['', '| component | kept for backward | at the peak |', '| --- | ---: | ---: |']
    names = list(est.activations_by_component) + [
        n for n in est.peak_breakdown if n not in est.activations_by_component
    ]
    for name in names:
        kept = est.activations_by_component.get(name, 0)
        at_peak = est.peak_breakdown.get(name, 0)
        lines.append(f'| {name} | {mib(kept)} | {mib(at_peak)} |')
    lines += [
        '',
        f'| GPU memory | fits (keeping {reserve_gib:g} GiB for the CUDA context) |',
        '| --- | --- |',
    ]
    for gb, ok in fits(est.peak, reserve_gib).items():
        lines.append(f'| {gb} GB | {"fits" if ok else "does not fit"} |')
    return '\n'.join(lines) + '\n'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config', help='a training config (its model is estimated)')
    parser.add_argument('--batch', type=int, default=1, help='images per step (default 1)')
    parser.add_argument('--img-size', type=int, default=None, help="input side (default: the config's)")
    parser.add_argument('--amp', choices=tuple(AMP_DTYPES), default='none', help='autocast dtype')
    parser.add_argument(
        '--preset',
        default=None,
        help="replace the backbone's PEFT method by a preset of mmseg_sam.models.peft.presets, by key "
        f'({", ".join(preset_keys())})',
    )
    parser.add_argument(
        '--reserve-gib', type=float, default=1.0, help='GiB kept free on the GPU (CUDA context)'
    )
    parser.add_argument(
        '--measure', action='store_true', help='also run the step on the CPU and report what it allocated'
    )
    parser.add_argument(
        '--instances', type=int, default=8, help='prompted models: instances per image (default 8)'
    )
    parser.add_argument('--out-json', type=Path, help='write the estimate (and measurement) as JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f'--batch must be a positive int, got {args.batch}')
    if args.img_size is not None and args.img_size < 1:
        parser.error(f'--img-size must be a positive int, got {args.img_size}')
    register_all_modules(init_default_scope=True)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    cfg = load_config(args.config, args.cfg_options)
    if args.preset is not None:
        try:
            preset(args.preset)
        except KeyError as err:
            parser.error(str(err))
    model_cfg = model_cfg_for_estimate(cfg, args.img_size, args.preset)
    size = input_size(model_cfg, args.img_size)
    if args.instances < 1:
        parser.error(f'--instances must be a positive int, got {args.instances}')
    est = estimate(model_cfg, args.batch, size, args.amp, instances=args.instances)
    measured = measure(model_cfg, args.batch, size, args.amp, args.instances) if args.measure else None
    title = f'Training-step memory of {args.config}' + (f' with {args.preset}' if args.preset else '')
    print(report_text(est, title, args.reserve_gib, measured), end='')
    if args.out_json:
        out = dict(asdict(est), peak=est.peak, parameter_part=est.parameter_part, measured=measured)
        args.out_json.write_text(json.dumps(out, indent=2, default=str) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
