import logging
from types import SimpleNamespace

import pytest

from mmseg_sam.engine.hooks import SAMCheckpointHook
from tests.conftest import tiny_segmentor


def _runner(model):
    return SimpleNamespace(model=model, logger=logging.getLogger('test'))


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
