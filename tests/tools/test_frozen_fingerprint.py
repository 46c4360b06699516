"""A trainable-only checkpoint records the fingerprint of the frozen weights it was trained on; tools/test.py,
tools/infer.py and the library refuse other ones (another SAM of the same architecture, as MedSAM is to SAM
ViT-B) naming both files, unless ``allow_other_sam_checkpoint=True`` says so."""

import json
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_sam.apis import init_model, load_checkpoint
from mmseg_sam.datasets import generate_synthetic_dataset
from tests.conftest import build_reference_sam, run_tool
from tests.tools.test_prompted_tools import prompted_config

ALLOW = 'allow_other_sam_checkpoint=True'


@pytest.fixture(scope='module')
def trained(tmp_path_factory, sam_checkpoint) -> tuple[Path, Path, Path, list[Path]]:
    """A prompted tiny model (BitFit) trained one iteration by tools/train.py on ``sam_checkpoint``; another
    SAM of the same tiny architecture with other values; two 64 x 80 images: (config, checkpoint, other, images)."""
    root = tmp_path_factory.mktemp('frozen_fingerprint')
    generate_synthetic_dataset(
        root / 'data', num_train=2, num_val=2, img_size=(64, 80), mode='binary', seed=1
    )
    cfg = prompted_config(root / 'cfg.py', root / 'data', sam_checkpoint, dict(peft=dict(type='BitFit')), {})
    assert run_tool('tools/train.py', cfg, '--work-dir', root / 'work') is None
    other = root / 'medsam_tiny.pth'
    torch.save(build_reference_sam(seed=1).state_dict(), other)
    return cfg, root / 'work/iter_1.pth', other, sorted((root / 'data/img_dir/val').glob('*.png'))


def _refusal(trained_with: Path, now: Path) -> str:
    """The refusal's pattern: both SAM checkpoints, and the option."""
    return (
        rf"(?s)the frozen weights differ .*SAM checkpoint \['{re.escape(str(trained_with))}'\] \(sha256:.*"
        rf"model\.sam_checkpoint \['{re.escape(str(now))}'\] .*--cfg-options {ALLOW}"
    )


def _metrics(work: Path) -> dict:
    [scalars] = list(work.glob('*/*.json'))
    return json.loads(scalars.read_text().splitlines()[-1])


@pytest.mark.slow
def test_training_records_the_fingerprint(trained, sam_checkpoint):
    cfg, ckpt, _, _ = trained
    meta = torch.load(ckpt, map_location='cpu', weights_only=True)['meta']['mmseg_sam']
    assert meta['sam_checkpoints'] == [str(sam_checkpoint)]
    assert re.fullmatch(r'sha256:[0-9a-f]{64}', meta['frozen_sha256']) and meta['dropped_keys'] > 0


@pytest.mark.slow
def test_test_tool_refuses_another_sam_checkpoint(tmp_path, trained, sam_checkpoint):
    cfg, ckpt, other, _ = trained
    with pytest.raises(ValueError, match=_refusal(sam_checkpoint, other)):
        run_tool(
            'tools/test.py',
            cfg,
            ckpt,
            '--work-dir',
            tmp_path / 'refused',
            '--cfg-options',
            f'model.sam_checkpoint={other}',
        )
    assert not list((tmp_path / 'refused').glob('*/*.json'))  # nothing was scored
    options = ('--cfg-options', f'model.sam_checkpoint={other}', ALLOW)
    run_tool('tools/test.py', cfg, ckpt, '--work-dir', tmp_path / 'allowed', *options)
    run_tool(
        'tools/test.py',
        cfg,
        ckpt,
        '--work-dir',
        tmp_path / 'same',
        '--cfg-options',
        f'model.sam_checkpoint={sam_checkpoint}',
    )
    allowed, same = _metrics(tmp_path / 'allowed'), _metrics(tmp_path / 'same')
    assert allowed['instances'] == same['instances'] > 0  # both scored the whole set


@pytest.mark.slow
def test_infer_tool_refuses_another_sam_checkpoint(tmp_path, trained, sam_checkpoint, capsys):
    cfg, ckpt, other, images = trained

    def infer(out: str, *options: str) -> int:
        return run_tool(
            'tools/infer.py',
            cfg,
            ckpt,
            *images,
            '--out-dir',
            tmp_path / out,
            '--boxes',
            '4,6,40,50',
            *options,
        )

    assert infer('refused', '--cfg-options', f'model.sam_checkpoint={other}') == 1
    assert re.search(_refusal(sam_checkpoint, other), capsys.readouterr().err)
    assert not (tmp_path / 'refused/masks').exists()
    assert infer('allowed', '--cfg-options', f'model.sam_checkpoint={other}', ALLOW) == 0
    assert infer('same', '--cfg-options', f'model.sam_checkpoint={sam_checkpoint}') == 0
    for out in ('allowed', 'same'):
        assert sorted(p.name for p in (tmp_path / out / 'masks').iterdir()) == [p.name for p in images]


@pytest.mark.slow
def test_library_refuses_another_sam_checkpoint(trained, sam_checkpoint):
    cfg, ckpt, other, _ = trained
    with pytest.raises(ValueError, match=_refusal(sam_checkpoint, other)):
        init_model(cfg, ckpt, cfg_options={'model.sam_checkpoint': str(other)})
    init_model(
        cfg, ckpt, cfg_options={'model.sam_checkpoint': str(other), 'allow_other_sam_checkpoint': True}
    )
    model_cfg = Config.fromfile(cfg).model
    model_cfg.sam_checkpoint = str(other)
    model = MODELS.build(model_cfg)
    with pytest.raises(ValueError, match=_refusal(sam_checkpoint, other)):
        load_checkpoint(model, ckpt)
    load_checkpoint(model, ckpt, allow_other_sam_checkpoint=True)
    with pytest.raises(TypeError, match=r"allow_other_sam_checkpoint must be True, False or None, got 'yes'"):
        load_checkpoint(model, ckpt, allow_other_sam_checkpoint='yes')
