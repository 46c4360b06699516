"""The model a fine-tuning run starts from, for the zero-shot baseline of ``tools/test.py CONFIG none``.

A config names SAM's weights (``model.sam_checkpoint``) and a PEFT method
(``model.backbone.peft``). Built as it is, the model is SAM only where the method
starts at zero: LoRA with ``init='xavier'`` (COBOT's reference initialisation, both
A and B random), COBOT on such a host, VPT's prompt tokens and the side network of
LST all change SAM's outputs before any training. The baseline a fine-tuned
checkpoint is compared with must be SAM itself, so the zero-shot model is the
config's model without its PEFT method: SAM's encoder, and SAM's whole decoder
where the head is SAM's promptable one (``SAMPromptedHead``, ``SAM2PromptedHead``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from mmengine.config import Config

__all__ = ['zero_shot_config']


def _describe(peft: Any) -> str:
    items = peft if isinstance(peft, (list, tuple)) else [peft]
    return ' + '.join(
        f'{item.get("type", "?")}({", ".join(f"{k}={v!r}" for k, v in item.items() if k != "type")})'
        if isinstance(item, Mapping)
        else repr(item)
        for item in items
    )


def zero_shot_config(cfg: Config) -> tuple[Config, str]:
    """The config whose model is the one fine-tuning starts from: SAM's weights, no PEFT method.

    Args:
        cfg: a full config (``cfg.model`` a segmentor with a ``backbone``).

    Returns:
        ``(config, message)``: a copy of ``cfg`` with ``model.backbone.peft`` removed,
        and a sentence saying what is evaluated (for the log).

    Raises:
        ValueError: the config has no ``model.backbone``, or no ``model.sam_checkpoint``
            nor ``model.backbone.checkpoint`` (then the weights are random: there is
            no SAM to compare with).
    """
    cfg = copy.deepcopy(cfg)
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, Mapping) else None
    if not isinstance(backbone, Mapping):
        raise ValueError(f'the zero-shot baseline needs a config with model.backbone, got model={model!r}')
    source = model.get('sam_checkpoint') or backbone.get('checkpoint')
    if not source:
        raise ValueError(
            "tools/test.py CONFIG none evaluates SAM's own weights, but the config names none: set "
            'model.sam_checkpoint (e.g. --cfg-options model.sam_checkpoint=/path/sam_vit_b_01ec64.pth)'
        )
    peft = backbone.get('peft')
    if peft:
        backbone['peft'] = None
        removed = f'without the PEFT method of backbone.peft ({_describe(peft)})'
    else:
        removed = 'with no PEFT method in the config'
    message = (
        f'zero-shot baseline: the model fine-tuning starts from, the weights of {source} {removed}; '
        'a fine-tuned checkpoint is scored against exactly this model'
    )
    return cfg, message
