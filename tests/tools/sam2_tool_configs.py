"""A SAM 2 demo config with the tiny Hiera of tests/models/sam2_fixtures.py, and a model trained on it, for the tools' tests."""

from pathlib import Path
from types import SimpleNamespace

import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_sam.engine.hooks import SAMCheckpointHook
from tests.conftest import REPO
from tests.models.sam2_fixtures import TINY_SAM2_ARCH, TINY_SAM2_DECODER, official_checkpoint

SAM2_DEMO = REPO / 'configs/demo/sam2.1-hiera-mini_lora-qv-r4_1k_demo-binary-128x128.py'


def write_sam2_config(
    path: Path,
    sam_checkpoint: Path | None,
    peft: dict | list | None,
    data_root: Path | None = None,
    extra: str = '',
) -> Path:
    """The SAM 2 demo config (128x128 binary) with the tiny Hiera and decoder and the given PEFT.

    Args:
        path: the config file to write.
        sam_checkpoint: an official-layout SAM 2 checkpoint of the tiny size, or None.
        peft: the backbone's ``peft`` (None: no PEFT).
        data_root: the demo dataset's folder, or None to keep the config's.
        extra: more config lines, appended.
    """
    checkpoint = None if sam_checkpoint is None else str(sam_checkpoint)
    if isinstance(peft, dict):
        peft = dict(_delete_=True, **peft)  # replaces the demo's LoRA instead of merging into it
    data = ''
    if data_root is not None:
        data = (
            f'train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root={str(data_root)!r}))\n'
            f'val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root={str(data_root)!r}))\n'
            'test_dataloader = val_dataloader\n'
        )
    path.write_text(f"""_base_ = [{str(SAM2_DEMO)!r}]
model = dict(
    sam_checkpoint={checkpoint!r},
    backbone=dict(arch=dict(_delete_=True, **{TINY_SAM2_ARCH!r}), peft={peft!r}),
    decode_head=dict(**{TINY_SAM2_DECODER!r}))
{data}{extra}""")
    return path


def sam2_trained(
    tmp_path: Path,
    peft: dict | list | None,
    data_root: Path | None = None,
    extra: str = '',
    std: float = 0.05,
) -> SimpleNamespace:
    """A tiny official SAM 2 checkpoint, a config on it, and a 'trained' model saved trainable-only.

    Every trainable parameter is moved by N(0, ``std``) (Conv-LoRA gates by N(0, 2) so
    routing spreads over the experts), so a tool that drops or mis-maps one changes the outputs.

    Returns:
        SimpleNamespace: ``source`` (the SAM 2 checkpoint), ``original`` (its state dict),
        ``cfg`` (the config file), ``model`` (eval mode) and ``checkpoint`` (the saved file).
    """
    source = tmp_path / 'sam2.1_tiny.pt'
    original = official_checkpoint(source)
    cfg = write_sam2_config(tmp_path / 'sam2_cfg.py', source, peft, data_root, extra)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(cfg).model).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * (2.0 if 'gate' in name else std))
    saved = {'state_dict': dict(model.state_dict()), 'meta': {}}
    SAMCheckpointHook().before_save_checkpoint(SimpleNamespace(model=model), saved)  # trainable-only
    assert not any('trunk.blocks.0.attn.qkv.weight' in k for k in saved['state_dict'])
    checkpoint = tmp_path / 'trained.pth'
    torch.save(saved, checkpoint)
    return SimpleNamespace(source=source, original=original, cfg=cfg, model=model, checkpoint=checkpoint)
