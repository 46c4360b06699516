"""Trainable-only checkpoints, and strict checks when a checkpoint is loaded."""

import re

from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch import nn

from ...utils.checkpoint import check_keys, upgrade_peft_key
from .unwrap import unwrap_model

__all__ = ['SAMCheckpointHook', 'check_checkpoint_keys']

_META_KEY = 'mmseg_sam'


def _frozen_from_sam(model: nn.Module) -> dict[str, str]:
    """Frozen parameters whose values come from a SAM checkpoint, with that checkpoint.

    A part (backbone, decode head) counts when it was built with ``checkpoint`` set:
    its frozen parameters are then restored from that file at construction.
    """
    frozen = {}
    for part_name in ('backbone', 'decode_head'):
        part = getattr(model, part_name, None)
        source = getattr(part, 'checkpoint', None) if part is not None else None
        if source is None:
            continue
        for name, param in part.named_parameters():
            if not param.requires_grad:
                frozen[f'{part_name}.{name}'] = source
    return frozen


@HOOKS.register_module()
class SAMCheckpointHook(Hook):
    """Save only what the SAM checkpoint does not hold; check every load strictly.

    Saving (``save_frozen=False``, the default): frozen parameters that were loaded
    from a SAM checkpoint at construction are dropped from the saved state dict, so
    a ViT-B Conv-LoRA checkpoint holds the PEFT parameters, the head and the
    optimizer state (a few MB) instead of 375 MB. The checkpoint's
    ``meta['mmseg_sam']`` records that and which SAM checkpoint supplies the rest;
    ``tools/test.py``, ``--resume`` and ``load_from`` work with it because the config
    names the same SAM checkpoint. ``save_frozen=True`` keeps full checkpoints.

    Loading (``load_from``, ``--resume``, ``tools/test.py``): MMEngine loads
    non-strictly; this hook first compares the checkpoint with the model and raises
    on any unexpected key, and on any missing key that is not a frozen parameter
    restored from a SAM checkpoint, naming the keys and the reason.

    Args:
        save_frozen: keep the frozen SAM weights in saved checkpoints.
    """

    priority = 'VERY_LOW'

    def __init__(self, save_frozen: bool = False) -> None:
        self.save_frozen = save_frozen

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.save_frozen:
            return
        frozen = _frozen_from_sam(unwrap_model(runner.model))
        state = checkpoint['state_dict']
        dropped = [k for k in state if k in frozen]
        for key in dropped:
            del state[key]
        checkpoint.setdefault('meta', {})[_META_KEY] = dict(
            trainable_only=True, dropped_keys=len(dropped), sam_checkpoints=sorted(set(frozen.values()))
        )

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        missing = check_checkpoint_keys(model, checkpoint.get('state_dict', checkpoint))
        if missing:
            sources = sorted({_frozen_from_sam(model)[k] for k in missing})
            runner.logger.info(
                f'checkpoint holds no values for {len(missing)} frozen parameters: '
                f'they keep the weights loaded from {sources}'
            )


def check_checkpoint_keys(model: nn.Module, state: dict) -> list[str]:
    """Compare a checkpoint's state dict with a model built from the config: keys, then shapes.

    Returns:
        list[str]: the missing keys, all frozen weights restored from a SAM checkpoint.

    Raises:
        ValueError: any unexpected key, or any other missing key, named; or any tensor
            whose shape differs from the model's (another LoRA rank, another width),
            naming the keys and both shapes.
    """
    frozen = _frozen_from_sam(model)
    # DDP's prefix off, PEFT keys of the earlier layout renamed as SAMViT's load renames them
    state = {upgrade_peft_key(re.sub(r'^module\.', '', k)): v for k, v in state.items()}
    expected = model.state_dict()
    missing = check_keys(
        expected,
        state,
        'the checkpoint does not fit the model built from the config:',
        allowed_missing=frozen.__contains__,
        allowed_missing_reason='only frozen weights restored from a SAM checkpoint may be absent; '
        'is model.sam_checkpoint set as when the checkpoint was saved?',
    )
    mismatched = [
        f'{key}: checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)}'
        for key, value in state.items()
        if hasattr(value, 'shape') and tuple(value.shape) != tuple(expected[key].shape)
    ]
    if mismatched:
        listed = '; '.join(mismatched[:8]) + (
            f'; ... (+{len(mismatched) - 8} more)' if len(mismatched) > 8 else ''
        )
        raise ValueError(
            f'the checkpoint does not fit the model built from the config: {len(mismatched)} tensors have '
            f'another shape ({listed}); was it trained with another config (PEFT rank, width, classes)?'
        )
    return missing
