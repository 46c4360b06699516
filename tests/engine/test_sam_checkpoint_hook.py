import logging
import re
import shutil
from types import SimpleNamespace

import pytest
import torch

from mmseg_sam.engine.hooks import SAMCheckpointHook
from mmseg_sam.utils.checkpoint import frozen_fingerprint
from tests.conftest import build_reference_sam, tiny_segmentor

LORA = dict(type='LoRA', rank=2, targets=('q', 'v'))


def _runner(model, **cfg):
    return SimpleNamespace(model=model, logger=logging.getLogger('test'), cfg=cfg)


def _checkpoint(model):
    return {'meta': {}, 'state_dict': dict(model.state_dict())}


def test_saves_only_what_the_sam_checkpoint_lacks(sam_checkpoint):
    model = tiny_segmentor(sam_checkpoint, peft=dict(type='LoRA', rank=2, targets=('q', 'v')))
    checkpoint = _checkpoint(model)
    SAMCheckpointHook().before_save_checkpoint(_runner(model), checkpoint)
    kept = set(checkpoint['state_dict'])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert kept == trainable | {k for k in model.state_dict() if k not in dict(model.named_parameters())}
    assert (
        'backbone.blocks.0.attn.qkv.weight' not in kept
        and 'decode_head.prompt_encoder.no_mask_embed.weight' not in kept
    )
    meta = checkpoint['meta']['mmseg_sam']
    assert meta['trainable_only'] and meta['sam_checkpoints'] == [str(sam_checkpoint)]
    frozen = {k: v for k, v in model.state_dict().items() if k not in kept}
    assert meta['dropped_keys'] == len(frozen) > 0
    assert meta['frozen_sha256'] == frozen_fingerprint(frozen)  # the dropped tensors, nothing else
    full = _checkpoint(model)
    SAMCheckpointHook(save_frozen=True).before_save_checkpoint(_runner(model), full)
    assert set(full['state_dict']) == set(model.state_dict())


def test_without_sam_checkpoint_nothing_is_dropped():
    model = tiny_segmentor(peft=dict(type='LoRA', rank=2))
    checkpoint = _checkpoint(model)
    SAMCheckpointHook().before_save_checkpoint(_runner(model), checkpoint)
    assert set(checkpoint['state_dict']) == set(model.state_dict())


def test_loading_checks_keys_strictly(sam_checkpoint):
    lora = dict(type='LoRA', rank=2, targets=('q', 'v'))
    model = tiny_segmentor(sam_checkpoint, peft=lora)
    checkpoint = _checkpoint(model)
    hook = SAMCheckpointHook()
    hook.before_save_checkpoint(_runner(model), checkpoint)
    hook.after_load_checkpoint(_runner(tiny_segmentor(sam_checkpoint, peft=lora)), checkpoint)  # fine

    with pytest.raises(
        ValueError, match=r'(?s)missing keys \(\d+\): backbone\.blocks\.0\.attn\.proj\.bias.*sam_checkpoint'
    ):
        hook.after_load_checkpoint(_runner(tiny_segmentor(None, peft=lora)), checkpoint)
    with pytest.raises(ValueError, match=r'unexpected keys \(8\): backbone\.blocks\.0\.attn\.qkv\.lora_A'):
        hook.after_load_checkpoint(_runner(tiny_segmentor(sam_checkpoint)), checkpoint)
    trainable_missing = dict(
        checkpoint, state_dict={k: v for k, v in checkpoint['state_dict'].items() if 'lora_B' not in k}
    )
    with pytest.raises(ValueError, match=r'missing keys \(4\): backbone\.blocks\.0\.attn\.qkv\.lora_B'):
        hook.after_load_checkpoint(_runner(tiny_segmentor(sam_checkpoint, peft=lora)), trainable_missing)


@pytest.fixture(scope='module')
def other_sam(tmp_path_factory):
    """Another SAM of the tiny architecture with other values (as MedSAM is to SAM ViT-B)."""
    path = tmp_path_factory.mktemp('other') / 'medsam_tiny.pth'
    torch.save(build_reference_sam(seed=1).state_dict(), path)
    return path


def _saved(sam_checkpoint):
    model = tiny_segmentor(sam_checkpoint, peft=LORA)
    checkpoint = _checkpoint(model)
    SAMCheckpointHook().before_save_checkpoint(_runner(model), checkpoint)
    return checkpoint


def test_frozen_weights_of_another_sam_checkpoint_are_refused_naming_both(sam_checkpoint, other_sam, caplog):
    checkpoint = _saved(sam_checkpoint)
    hook = SAMCheckpointHook()
    with pytest.raises(
        ValueError,
        match=rf"(?s)frozen weights differ .*SAM checkpoint \['{re.escape(str(sam_checkpoint))}'\] \(sha256:.*"
        rf"model\.sam_checkpoint \['{re.escape(str(other_sam))}'\] .*allow_other_sam_checkpoint=True",
    ):
        hook.after_load_checkpoint(_runner(tiny_segmentor(other_sam, peft=LORA)), checkpoint)

    with caplog.at_level(logging.INFO, logger='test'):
        runner = _runner(tiny_segmentor(other_sam, peft=LORA), allow_other_sam_checkpoint=True)
        hook.after_load_checkpoint(runner, checkpoint)  # asked for: a warning
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert (
            'frozen weights differ' in warning.message
            and 'allow_other_sam_checkpoint=True' in warning.message
        )
        caplog.clear()
        hook.after_load_checkpoint(_runner(tiny_segmentor(sam_checkpoint, peft=LORA)), checkpoint)
        assert [r.levelno for r in caplog.records] == [logging.INFO]  # the same file: verified
        assert 'the ones it was trained with (sha256:' in caplog.records[0].message


def test_a_sam_checkpoint_changed_in_place_is_refused(sam_checkpoint, other_sam, tmp_path):
    path = tmp_path / 'sam.pth'
    shutil.copy(sam_checkpoint, path)
    checkpoint = _saved(path)
    shutil.copy(other_sam, path)
    with pytest.raises(
        ValueError, match=r'the same path: the file has changed since the checkpoint was saved'
    ):
        SAMCheckpointHook().after_load_checkpoint(_runner(tiny_segmentor(path, peft=LORA)), checkpoint)


def test_a_checkpoint_without_fingerprint_loads_with_a_warning(sam_checkpoint, other_sam, caplog):
    checkpoint = _saved(sam_checkpoint)
    del checkpoint['meta']['mmseg_sam']['frozen_sha256']  # saved before fingerprints were recorded
    with caplog.at_level(logging.INFO, logger='test'):
        SAMCheckpointHook().after_load_checkpoint(_runner(tiny_segmentor(other_sam, peft=LORA)), checkpoint)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert (
        f"['{other_sam}'], which could not be verified to be the ones it was trained with" in record.message
    )
    assert f"trained with ['{sam_checkpoint}']" in record.message


def test_the_option_must_be_a_bool(sam_checkpoint):
    checkpoint = _saved(sam_checkpoint)
    runner = _runner(tiny_segmentor(sam_checkpoint, peft=LORA), allow_other_sam_checkpoint='yes')
    with pytest.raises(TypeError, match=r"allow_other_sam_checkpoint must be True or False, got 'yes'"):
        SAMCheckpointHook().after_load_checkpoint(runner, checkpoint)
