"""The measurements of ``gpu_report.py``: a training step's memory against the prediction, and its speed.

- :func:`section_memory`: the peak of a steady-state training step of the binary
  segmentor next to ``estimate_memory.py``'s prediction of the same step.
- :func:`section_speed`: ``benchmark.py``'s timing of an encoder step (median and range,
  images/s) next to segment_anything's encoder with the same LoRA, and SAM 2.1's Hiera.
"""

import copy
import statistics
from pathlib import Path
from typing import Any

import benchmark as bm
import estimate_memory as em
import torch
from gpu_report_run import AMP, DEMO_CONFIG, METHODS, Run, Section, Setup, autocast, release_memory
from torch import Tensor, nn

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.models.backbones.sam_vit import WITH_CP_LEVELS
from mmseg_sam.models.peft.presets import preset

# The segmentor the memory section measures (memory_table.py's).
MODEL_CONFIG = Path(__file__).resolve().parents[2] / 'configs/_base_/models/sam-vit-b_mask-decoder-binary.py'
MEMORY_CLAIM = 0.10  # docs/memory.md: the prediction is within 10% of the measured peak


# --------------------------------------------------------------------------- memory
def segmentor_cfg(setup: Setup, arch: Any, method: str) -> dict[str, Any]:
    """The binary segmentor's model config with ``arch`` and the preset ``method`` at the run's size."""
    if setup.tiny:
        cfg = em.load_config(DEMO_CONFIG)
    else:
        cfg = em.load_config(MODEL_CONFIG, {'model.backbone.arch': arch})
    model = em.model_cfg_for_estimate(cfg, setup.img_size, method)
    model['backbone'].update(copy.deepcopy(dict(setup.method(method))))
    return model


def step_peak(model: nn.Module, batch: int, img_size: int, amp: str, device: torch.device, base: int) -> int:
    """Peak bytes of a steady-state training step (the second of two), as ``estimate_memory.py`` counts it.

    The step is the estimator's: its stand-in loss under autocast, backward, AdamW. On
    CUDA, ``max_memory_allocated`` minus ``base`` (allocated before the model was built);
    on a CPU, what the step's allocations reach above its start (the allocator's events)
    plus the weights, AdamW state and images alive at its start.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    images = torch.randn(batch, 3, img_size, img_size, device=device)

    def step() -> None:
        with autocast(device, amp):
            loss = em.stand_in_loss(model, images)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # AdamW's state exists from here on, as in the estimate
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor)]
    alive = em.storage_bytes(list(model.parameters()) + list(model.buffers()) + state + [images])
    _, _, peak = em._allocated(step)
    return alive + peak


def section_memory(run: Run) -> Section:
    """Measured peak of a training step next to ``estimate_memory.py``'s prediction, over the grid."""
    setup, section = run.setup, Section()
    device = setup.device
    section.info['measure'] = (
        'torch.cuda.max_memory_allocated of the second training step'
        if device.type == 'cuda'
        else 'CPU allocator events (torch.profiler) of the second training step: a CPU figure, not a GPU one'
    )
    for label, arch in setup.archs.items():
        for method in METHODS:
            model_cfg = segmentor_cfg(setup, arch, method)
            built: dict[str, Any] = {}

            def measure(batch: int, with_cp: Any, model_cfg: dict = model_cfg, built: dict = built) -> dict:
                if not built:
                    with torch.device('meta'):
                        built['meta'] = em.build_model(model_cfg)
                    built['base'] = torch.cuda.memory_allocated(device) if device.type == 'cuda' else 0
                    with torch.device(device):
                        built['model'] = em.build_model(model_cfg)
                built['meta'].backbone.with_cp = with_cp
                built['model'].backbone.with_cp = with_cp
                predicted = em.estimate(None, batch, setup.img_size, AMP, meta_model=built['meta']).peak
                measured = step_peak(built['model'], batch, setup.img_size, AMP, device, built['base'])
                ratio = measured / predicted
                return dict(
                    measured_mib=measured / em.MIB,
                    predicted_mib=predicted / em.MIB,
                    ratio=ratio,
                    within_claim=abs(ratio - 1) <= MEMORY_CLAIM,
                )

            for batch in setup.batches:
                for with_cp in WITH_CP_LEVELS:
                    key = dict(arch=label, method=method, batch=batch, with_cp=with_cp)
                    section.row(
                        run, f'memory:{label}', batch, key, lambda b=batch, cp=with_cp: measure(b, cp)
                    )
            built.clear()
            release_memory()
    done = [r for r in section.rows if 'ratio' in r]
    section.info['within_claim'] = f'{sum(r["within_claim"] for r in done)} of {len(done)} rows within 10%'
    return section


# ---------------------------------------------------------------------------- speed
def speed_rows(setup: Setup) -> list[tuple[str, Any, bm.Row, dict[str, Any]]]:
    """(encoder label, SAMViT arch, benchmark row, backbone options) of the speed grid, in the order they run.

    Per SAM size: segment_anything's encoder with the same LoRA, then LoRA and Conv-LoRA
    at each ``with_cp`` level; then SAM 2.1's Hiera with LoRA and Conv-LoRA.
    """
    lora_peft = setup.method(bm.LORA)['peft']
    rows = []
    for label, arch in setup.archs.items():
        reference = bm.Row(
            'sam-encoder-lora',
            f'segment_anything encoder + {preset(bm.LORA).name}',
            'reference',
            dict(peft=lora_peft),
        )
        rows.append((label, arch, reference, {}))
        for method in METHODS:
            for with_cp in WITH_CP_LEVELS:
                row = bm.Row(method, preset(method).name, bm.REFERENCE_FAMILY, dict(setup.method(method)))
                rows.append((label, arch, row, dict(with_cp=with_cp)))
    sam2_label, first_arch = setup.sam2[0], next(iter(setup.archs.values()))
    for method in METHODS:
        row = bm.Row(
            bm.family_prefix('sam2') + method, preset(method).name, 'sam2', dict(setup.method(method))
        )
        rows.append((sam2_label, first_arch, row, {}))
    return rows


def speed_row(setup: Setup, arch: Any, row: bm.Row, options: dict[str, Any], batch: int) -> dict[str, Any]:
    """``benchmark.py``'s measurement of ``row`` in this process, the model built on the device."""
    with torch.device('meta'):
        settings = dict(SAMViT(arch=arch, img_size=setup.img_size).arch_settings)
    opts = dict(
        archs={bm.REFERENCE_FAMILY: arch, 'sam2': setup.sam2[1]}, options={bm.REFERENCE_FAMILY: options, 'sam2': {}},
        arch_settings=settings, img_size=setup.img_size, batch=batch, device=str(setup.device),
        amp=AMP, warmup=setup.warmup, repeat=setup.repeat, threads=None,
    )  # fmt: skip
    with torch.device(setup.device):
        result = bm.measure(row, opts)
    steps = result['step_ms_all']
    median = statistics.median(steps)
    return dict(
        kind=row.kind,
        trainable=result['trainable'],
        step_ms=median,
        step_ms_min=min(steps),
        step_ms_max=max(steps),
        steps=len(steps),
        images_per_s=batch * 1000 / median,
        forward_ms=result['forward_ms'],
        peak_mib=result['peak_mem_mib'] if setup.device.type == 'cuda' else None,
    )


def section_speed(run: Run) -> Section:
    """Training-step time and images/s (``benchmark.py``'s measurement) over the grid, with the references."""
    setup, section = run.setup, Section()
    section.info['timing'] = (
        f'encoder step (forward + backward + AdamW), {AMP} autocast; median and range of {setup.repeat} steps '
        f'after {setup.warmup} warm-up'
    )
    cuda = setup.device.type == 'cuda'
    section.info['memory'] = 'CUDA max allocated of the encoder step' if cuda else 'not measured on a CPU'
    for batch in setup.batches:
        for label, arch, row, options in speed_rows(setup):
            key = dict(encoder=label, method=row.name, batch=batch, with_cp=options.get('with_cp', False))
            section.row(
                run, f'speed:{label}', batch, key,
                lambda arch=arch, row=row, options=options, batch=batch: speed_row(setup, arch, row, options, batch),
            )  # fmt: skip
    measured = [r for r in section.rows if 'step_ms' in r]
    for r in measured:  # each SAMViT row against segment_anything + LoRA at its size and batch
        refs = [
            x
            for x in measured
            if x['kind'] == 'reference' and (x['encoder'], x['batch']) == (r['encoder'], r['batch'])
        ]
        if r['kind'] == bm.REFERENCE_FAMILY and refs:
            r['step_over_reference'] = r['step_ms'] / refs[0]['step_ms']
    return section
