"""Trainable-only checkpoints, and strict checks when a checkpoint is loaded."""

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch import nn

from ...utils.checkpoint import check_keys, frozen_fingerprint, upgrade_peft_key
from .unwrap import unwrap_model

__all__ = [
    'ALLOW_OTHER_SAM_CHECKPOINT',
    'SAMCheckpointHook',
    'allows_other_sam_checkpoint',
    'check_checkpoint_keys',
    'check_frozen_weights',
]

_META_KEY = 'mmseg_sam'
ALLOW_OTHER_SAM_CHECKPOINT = 'allow_other_sam_checkpoint'
"""The config key (top level) that lets a trainable-only checkpoint run on other frozen weights
than it was trained on: ``--cfg-options allow_other_sam_checkpoint=True``."""


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
    ``meta['mmseg_sam']`` records that, which SAM checkpoint supplies the rest
    (``sam_checkpoints``) and a fingerprint of the dropped tensors
    (``frozen_sha256``, :func:`~mmseg_sam.utils.checkpoint.frozen_fingerprint`);
    ``tools/test.py``, ``--resume`` and ``load_from`` work with it because the config
    names the same SAM checkpoint. ``save_frozen=True`` keeps full checkpoints.

    Loading (``load_from``, ``--resume``, ``tools/test.py``): MMEngine loads
    non-strictly; this hook first compares the checkpoint with the model and raises
    on any unexpected key, and on any missing key that is not a frozen parameter
    restored from a SAM checkpoint, naming the keys and the reason. Then the frozen
    weights the model holds for the missing keys must have the fingerprint the
    checkpoint recorded (:func:`check_frozen_weights`): another SAM checkpoint of the
    same architecture is refused, naming both files, unless the config sets
    ``allow_other_sam_checkpoint=True``.

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
        meta = dict(
            trainable_only=True, dropped_keys=len(dropped), sam_checkpoints=sorted(set(frozen.values()))
        )
        if dropped:
            meta['frozen_sha256'] = frozen_fingerprint({k: state[k] for k in dropped})
        for key in dropped:
            del state[key]
        checkpoint.setdefault('meta', {})[_META_KEY] = meta

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        missing = check_checkpoint_keys(model, checkpoint.get('state_dict', checkpoint))
        allow_other = allows_other_sam_checkpoint(getattr(runner, 'cfg', None))
        check_frozen_weights(model, checkpoint, missing, runner.logger, allow_other)


def allows_other_sam_checkpoint(cfg: Mapping[str, Any] | None) -> bool:
    """The config's ``allow_other_sam_checkpoint`` (False when unset or without a config).

    Raises:
        TypeError: the value is not a bool (naming it).
    """
    value = (cfg or {}).get(ALLOW_OTHER_SAM_CHECKPOINT, False)
    if not isinstance(value, bool):
        raise TypeError(f'{ALLOW_OTHER_SAM_CHECKPOINT} must be True or False, got {value!r}')
    return value


def check_frozen_weights(
    model: nn.Module,
    checkpoint: Mapping[str, Any],
    missing: Sequence[str],
    logger: logging.Logger,
    allow_other: bool = False,
) -> None:
    """Check that the frozen weights a checkpoint lacks are the ones it was trained with.

    A trainable-only checkpoint takes its frozen weights (``missing``) from the SAM
    checkpoint the config names now; it recorded the fingerprint of the ones it was
    trained with. Equal fingerprints are logged (INFO); a checkpoint without one,
    saved before fingerprints were recorded, loads with a WARNING that the weights
    could not be verified.

    Args:
        model: the unwrapped segmentor, its frozen weights loaded from the SAM checkpoint.
        checkpoint: ``{'state_dict': ..., 'meta': ...}``.
        missing: the keys the checkpoint lacks (:func:`check_checkpoint_keys`).
        logger: where the outcome is logged.
        allow_other: run on other frozen weights (a WARNING) instead of raising.

    Raises:
        ValueError: the fingerprints differ, naming the SAM checkpoint recorded at save
            time and the one the config names now, and the option that allows it.
    """
    if not missing:
        return
    frozen = _frozen_from_sam(model)
    now_sources = sorted({frozen[k] for k in missing})
    meta = (checkpoint.get('meta') or {}).get(_META_KEY) or {}
    saved_sources = list(meta.get('sam_checkpoints') or [])
    recorded = meta.get('frozen_sha256')
    head = (
        f'checkpoint holds no values for {len(missing)} frozen parameters: they keep the weights loaded from '
    )
    if recorded is None:
        logger.warning(
            f'{head}{now_sources}, which could not be verified to be the ones it was trained with: it records '
            f'no fingerprint of them (saved before fingerprints were recorded; trained with {saved_sources or "?"})'
        )
        return
    state = model.state_dict()
    now = frozen_fingerprint({k: state[k] for k in missing})
    if now == recorded:
        logger.info(f'{head}{now_sources}, the ones it was trained with ({recorded[:19]}...)')
        return
    notes = ''
    if set(saved_sources) == set(now_sources):
        notes += ' (the same path: the file has changed since the checkpoint was saved)'
    if meta.get('dropped_keys') not in (None, len(missing)):
        notes += (
            f' (it was saved without {meta["dropped_keys"]} frozen tensors, the model takes {len(missing)} '
            'from its SAM checkpoint: another freeze or PEFT setting?)'
        )
    differ = (
        f'the frozen weights differ from the ones the checkpoint was trained with: it was saved with those '
        f'of the SAM checkpoint {saved_sources} ({recorded[:19]}...), the model built from the config loaded '
        f'them from model.sam_checkpoint {now_sources} ({now[:19]}...){notes}'
    )
    if allow_other:
        logger.warning(f'{differ}; running on them as {ALLOW_OTHER_SAM_CHECKPOINT}=True allows')
        return
    raise ValueError(
        f"{differ}. Its results would not be the trained model's: set model.sam_checkpoint to the file it "
        f'was trained with, or, to run on these weights on purpose, set {ALLOW_OTHER_SAM_CHECKPOINT}=True '
        f'(tools: --cfg-options {ALLOW_OTHER_SAM_CHECKPOINT}=True; load_checkpoint(..., '
        f'{ALLOW_OTHER_SAM_CHECKPOINT}=True))'
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
