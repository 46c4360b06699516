"""A SAM 2 demo config with the tiny Hiera of tests/models/sam2_fixtures.py, for the tools' tests."""

from pathlib import Path

from tests.models.sam2_fixtures import TINY_SAM2_ARCH, TINY_SAM2_DECODER

REPO = Path(__file__).resolve().parents[2]
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
