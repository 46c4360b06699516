"""The checks of ``gpu_report.py``: environment and attention kernels, every preset through ``tools/train.py``, the launcher.

- :func:`section_environment`: device and versions; the kernels SDPA runs in a windowed
  and a global SAM block and whether the fused path matches segment_anything's eager
  attention within :data:`PARITY_TOL`.
- :func:`section_correctness`: one ``tools/train.py --amp`` iteration of every preset in
  bf16 and then fp16 (in this process): finite loss, only trainable parameters changed.
- :func:`section_dist`: ``tools/dist_train.sh CONFIG 1``: NCCL on CUDA, gloo on a CPU.
"""

import contextlib
import copy
import importlib.util
import io
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import benchmark as bm
import torch
from gpu_report_run import (
    AMP,
    DEMO_CONFIG,
    REPO,
    TINY_IMG,
    TRAIN_AMPS,
    Run,
    Section,
    Setup,
    autocast,
    release_memory,
)
from mmengine.config import Config
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from mmseg_sam.datasets import generate_synthetic_dataset
from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.peft.presets import PRESETS, PEFTPreset, preset
from mmseg_sam.utils.start_weights import StartWeights, save_start_weights

# max |fused - eager| / max |eager|, of a block's output and of its input's gradient
PARITY_TOL = {'bf16': 3e-2, 'fp16': 1e-2}
# SDPA's backends, by the aten operator each runs (its backward adds ``_backward``).
SDPA_KERNELS = {
    '_scaled_dot_product_flash_attention': 'flash',
    '_scaled_dot_product_flash_attention_for_cpu': 'flash (CPU)',
    '_scaled_dot_product_efficient_attention': 'memory-efficient',
    '_scaled_dot_product_cudnn_attention': 'cuDNN',
    '_scaled_dot_product_fused_attention_overrideable': 'fused (overrideable)',
    '_scaled_dot_product_attention_math': 'math',
}


# ---------------------------------------------------------------------- environment
def sdpa_kernels(names: set[str]) -> str:
    """The SDPA backends among profiled operator names (forward or ``_backward``), or ``'-'``."""
    found = {
        SDPA_KERNELS[op]
        for name in names
        if (op := name.removeprefix('aten::').removesuffix('_backward')) in SDPA_KERNELS
    }
    return ', '.join(sorted(found)) or '-'


def profiled_ops(fn: Callable[[], Any]) -> tuple[Any, set[str]]:
    """``fn()`` and the names of the operators it ran."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    return result, {event.name for event in prof.events()}


def rel_diff(a: Tensor, b: Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def attention_rows(setup: Setup, label: str, arch: Any, amp: str) -> list[dict[str, Any]]:
    """Kernels and fused-vs-eager parity of a windowed and a global SAM block in ``amp``.

    The blocks are the first two of ``arch`` with block 1 made global, with LoRA (so that
    training runs the folded form, as in a PEFT step), every parameter perturbed (the
    zero-initialised relative-position tables and LoRA would hide a difference); the eager
    twin runs segment_anything's attention on the same weights.
    """
    device, img = setup.device, setup.img_size
    with torch.device('meta'):
        settings = dict(SAMViT(arch=arch, img_size=img).arch_settings)
    two = dict(settings, num_layers=2, global_attn_indexes=(1,))
    peft = setup.method(bm.LORA)['peft']
    torch.manual_seed(0)
    with torch.device(device):
        fused = SAMViT(arch=two, img_size=img, peft=peft).train()
        eager = SAMViT(arch=two, img_size=img, peft=peft, attn_impl='eager').train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p))
    eager.load_state_dict(fused.state_dict())
    grid = img // settings['patch_size']
    x = torch.randn(1, grid, grid, settings['embed_dims'], generator=gen).to(device)
    upstream = torch.randn(x.shape, generator=gen).to(device)
    rows = []
    for index, kind in ((0, 'windowed'), (1, 'global')):

        def step(block: nn.Module, dtype: str | None) -> tuple[Tensor, Tensor, set[str], set[str]]:
            inp = x.clone().requires_grad_(True)
            with autocast(device, dtype):
                out, fwd_ops = profiled_ops(lambda: block(inp))
            _, bwd_ops = profiled_ops(lambda: (out.float() * upstream).sum().backward())
            return out.detach().float(), inp.grad.float(), fwd_ops, bwd_ops

        out_ref, grad_ref, _, _ = step(eager.blocks[index], None)
        out_eager, grad_eager, _, _ = step(eager.blocks[index], amp)
        out_fused, grad_fused, fwd_ops, bwd_ops = step(fused.blocks[index], amp)
        fused.eval()
        with torch.no_grad(), autocast(device, amp):
            _, infer_ops = profiled_ops(lambda i=index: fused.blocks[i](x))
        fused.train()
        diffs = dict(output=rel_diff(out_fused, out_eager), input_grad=rel_diff(grad_fused, grad_eager))
        rows.append(
            dict(
                arch=label,
                amp=amp,
                block=kind,
                tokens=grid * grid,
                attn_impl_training=fused.blocks[index].attn.grad_impl or fused.blocks[index].attn.attn_impl,
                training_forward=sdpa_kernels(fwd_ops),
                training_backward=sdpa_kernels(bwd_ops),
                inference=sdpa_kernels(infer_ops),
                fused_vs_eager=diffs,
                eager_vs_fp32=dict(
                    output=rel_diff(out_eager, out_ref), input_grad=rel_diff(grad_eager, grad_ref)
                ),
                fused_vs_fp32=dict(
                    output=rel_diff(out_fused, out_ref), input_grad=rel_diff(grad_fused, grad_ref)
                ),
                tolerance=PARITY_TOL[amp],
                ok=max(diffs.values()) <= PARITY_TOL[amp],
            )
        )
    return rows


def section_environment(run: Run) -> Section:
    """Device, versions, SDPA kernels and fused-vs-eager parity."""
    setup, section = run.setup, Section()
    device = setup.device
    info = dict(
        device_type=device.type,
        torch=torch.__version__,
        python=platform.python_version(),
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cpu=bm.describe_machine({}),
        threads=torch.get_num_threads(),
    )
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(
            device=props.name,
            memory_gib=props.total_memory / 2**30,
            capability=f'{props.major}.{props.minor}',
            flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
            mem_efficient_sdp_enabled=torch.backends.cuda.mem_efficient_sdp_enabled(),
            cudnn_sdp_enabled=torch.backends.cuda.cudnn_sdp_enabled(),
        )
    else:
        info.update(device=info['cpu'], memory_gib=None)
    section.info.update(info)
    for label, arch in setup.archs.items():
        for amp in TRAIN_AMPS:
            done = len(section.rows)
            section.row(
                run, 'environment', 1, dict(arch=label, amp=amp, block='windowed and global'),
                lambda label=label, arch=arch, amp=amp: attention_rows(setup, label, arch, amp),
            )  # fmt: skip
            for row in section.rows[done:]:
                if 'ok' in row:
                    section.check(
                        f'{label} {row["block"]} block, {amp}: fused attention matches eager',
                        row['ok'],
                        f'max rel. diff {max(row["fused_vs_eager"].values()):.2e} (tolerance {row["tolerance"]:g})',
                    )
    return section


# ---------------------------------------------------------------------- correctness
def load_train_main() -> Callable[[list[str]], None]:
    """``tools/train.py``'s ``main``, imported from its file."""
    spec = importlib.util.spec_from_file_location('gpu_report_train_tool', REPO / 'tools/train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def write_train_config(
    path: Path, data_root: Path, backbone: Mapping[str, Any], load_from: Path | None
) -> Path:
    """A one-iteration config over the demo config: ``backbone`` at 32x32, no validation, a full checkpoint."""
    path.write_text(f"""
_base_ = [{str(DEMO_CONFIG)!r}]
data_root = {str(data_root)!r}
load_from = {str(load_from) if load_from else None!r}
model = dict(data_preprocessor=dict(size=({TINY_IMG}, {TINY_IMG})), backbone=dict(_delete_=True, **{dict(backbone)!r}))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='Resize', scale=({TINY_IMG}, {TINY_IMG}), keep_ratio=False), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline, serialize_data=False))
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
train_cfg = dict(max_iters=1)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
""")
    return path


def demo_backbone(item: PEFTPreset) -> dict[str, Any]:
    """The demo's small SAMViT at 32x32 with the preset's method (the papers' settings)."""
    backbone = Config.fromfile(str(DEMO_CONFIG)).model.backbone.to_dict()
    backbone.pop('peft', None)
    return {**backbone, 'img_size': TINY_IMG, 'frozen': True, **copy.deepcopy(dict(item.backbone))}


def logged_loss(log: str) -> float | None:
    """The ``loss`` of the last training iteration a log printed, or None."""
    values = re.findall(r'Iter\(train\).*?\sloss: (\S+)', log)
    return float(values[-1]) if values else None


def start_weights(item: PEFTPreset, data_root: Path, work: Path) -> StartWeights:
    """The preset's model, saved as the iterations' ``load_from``; its values and which parameters may change."""
    work.mkdir(parents=True, exist_ok=True)
    generate_synthetic_dataset(data_root, num_train=2, num_val=1, img_size=TINY_IMG)  # once: then a no-op
    config = write_train_config(work / 'gpu_report_start.py', data_root, demo_backbone(item), None)
    return save_start_weights(config, work / 'start.pth')


FP16_INIT_SCALE = 2.0**16  # GradScaler's default initial loss scale
FP16_RETRY_SCALE = 2.0**10  # the retry's, after a first step skipped at the default


def train_one_iteration(
    train_main: Callable[[list[str]], None],
    item: PEFTPreset,
    amp: str,
    start: StartWeights,
    data_root: Path,
    work: Path,
    init_scale: float | None = None,
) -> dict[str, Any]:
    """One ``tools/train.py --amp`` iteration of ``item`` from ``start`` (in this process): its loss, what changed.

    ``init_scale``: fp16's initial loss scale (None: GradScaler's default, 2**16).
    """
    work.mkdir(parents=True, exist_ok=True)
    name = f'gpu_report_{bm.slug(item.name)}_{amp}'  # the Runner's experiment name: one per run
    if init_scale is not None:  # a retry in the same process gets its own logger and visualizer
        name += f'_scale{int(init_scale)}'
    config = write_train_config(work / f'{name}.py', data_root, demo_backbone(item), start.path)
    log = io.StringIO()  # the Runner's logger writes to the stdout it finds
    argv = [
        str(config),
        '--work-dir',
        str(work),
        '--amp',
        '--cfg-options',
        f'optim_wrapper.dtype={TRAIN_AMPS[amp]}',
    ]
    if init_scale is not None:  # the wrapper named, so that --amp keeps this loss scale
        argv += [
            'optim_wrapper.type=PortableAmpOptimWrapper',
            f'optim_wrapper.loss_scale.init_scale={init_scale}',
        ]
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train_main(argv)
    (work / 'train.log').write_text(log.getvalue())
    checkpoint = torch.load(work / 'iter_1.pth', map_location='cpu', weights_only=True)
    after = checkpoint['state_dict']
    changed = {n for n, value in start.values.items() if not torch.equal(after[n].cpu(), value.cpu())}
    trainable, method = start.trainable, start.method
    loss = logged_loss(log.getvalue())
    return dict(
        loss=loss,
        finite_loss=loss is not None and math.isfinite(loss),
        changed=len(changed),
        trainable=len(trainable),
        method_changed=len(changed & method),
        method_params=len(method),
        frozen_changed=sorted(changed - trainable)[:5],
        # fp16's loss scale after the step: halved when the step was skipped for inf / NaN gradients
        loss_scale=(checkpoint.get('optimizer', {}).get('loss_scaler') or {}).get('scale'),
        # only trainable tensors changed; the method's among them (none for decoder-only)
        params_ok=changed <= trainable and bool(changed & method) == bool(method),
    )


def section_correctness(run: Run) -> Section:
    """One ``tools/train.py --amp`` iteration of every preset, in bf16 and then in fp16."""
    section = Section()
    root = run.setup.work_dir / 'correctness'
    data = run.setup.work_dir / 'data'
    train_main = load_train_main()
    starts: dict[str, dict[str, Any]] = {}
    for amp in TRAIN_AMPS:
        for item in PRESETS:

            def iteration(item: PEFTPreset = item, amp: str = amp) -> dict[str, Any]:
                work = root / bm.slug(item.name)
                if item.name not in starts:
                    starts[item.name] = start_weights(item, data, work)
                result = train_one_iteration(train_main, item, amp, starts[item.name], data, work / amp)
                scale = result['loss_scale']
                if amp == 'fp16' and scale is not None and scale < FP16_INIT_SCALE:
                    # GradScaler skipped the step (inf / NaN gradients at 2**16), as it may on a first step:
                    # the same iteration from the same weights at a scale that does not overflow
                    retry = train_one_iteration(
                        train_main, item, amp, starts[item.name], data, work / 'fp16_retry', FP16_RETRY_SCALE
                    )
                    result = dict(retry, first_step_skipped_at_scale=FP16_INIT_SCALE)
                return result

            section.row(run, 'correctness', 1, dict(preset=item.name, amp=amp), iteration)
            row = section.rows[-1]
            if 'skipped' in row or 'error' in row:
                continue
            section.check(f'{item.name}, {amp}: finite loss', row['finite_loss'], f'loss {row["loss"]}')
            section.check(
                f"{item.name}, {amp}: only trainable parameters changed, the method's among them",
                row['params_ok'],
                f'{row["changed"]} changed of {row["trainable"]} trainable; method {row["method_changed"]} of '
                f'{row["method_params"]}; frozen ones changed: {row["frozen_changed"] or "none"}',
            )
    return section


# ----------------------------------------------------------------------------- dist
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_dist_train(config: Path, work: Path, timeout_s: float) -> dict[str, Any]:
    """``tools/dist_train.sh CONFIG 1 --amp`` (bf16) in its own process group; its log, loss and backend."""
    env = {
        k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')
    }
    env.update(PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    cmd = [str(REPO / 'tools/dist_train.sh'), str(config), '1', '--work-dir', str(work), '--amp']
    cmd += ['--cfg-options', f'optim_wrapper.dtype={TRAIN_AMPS[AMP]}']
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=timeout_s)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its worker
        log, _ = proc.communicate()
        returncode = None
    (work / 'dist_train.log').write_text(log)
    backend = re.search(r"dist_cfg: \{[^}]*'backend': '(\w+)'", log)
    return dict(
        command=shlex.join(['tools/dist_train.sh', *cmd[1:]]),
        returncode=returncode,
        timed_out=returncode is None,
        distributed='Distributed training: True' in log,
        backend=backend.group(1) if backend else None,
        loss=logged_loss(log),
        checkpoint=(work / 'iter_1.pth').is_file(),
        log_tail=log[-3000:] if returncode != 0 else '',
    )


def section_dist(run: Run) -> Section:
    """The launcher path: ``tools/dist_train.sh`` with one process, NCCL on CUDA, gloo on a CPU."""
    section = Section()
    work = run.setup.work_dir / 'dist'
    work.mkdir(parents=True, exist_ok=True)
    data = run.setup.work_dir / 'data'
    expected = 'nccl' if run.setup.device.type == 'cuda' else 'gloo'
    release_memory()

    def launch() -> dict[str, Any]:
        generate_synthetic_dataset(data, num_train=2, num_val=1, img_size=TINY_IMG)
        config = write_train_config(work / 'gpu_report_dist.py', data, demo_backbone(preset(bm.LORA)), None)
        return run_dist_train(config, work, timeout_s=max(run.budget.remaining(), 1.0))

    section.row(run, 'dist', 1, dict(launcher='tools/dist_train.sh', processes=1), launch)
    row = section.rows[-1]
    if 'skipped' not in row and 'error' not in row:
        section.check(
            'tools/dist_train.sh exited 0', row['returncode'] == 0, f'exit status {row["returncode"]}'
        )
        section.check(
            f'distributed with {expected}',
            row['distributed'] and row['backend'] == expected,
            f'backend {row["backend"]}',
        )
        finite = row['loss'] is not None and math.isfinite(row['loss'])
        section.check('finite loss, checkpoint written', finite and row['checkpoint'], f'loss {row["loss"]}')
    return section
