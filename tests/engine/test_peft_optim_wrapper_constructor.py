import logging

from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mmseg_sam.engine.optimizers import PEFTOptimWrapperConstructor
from tests.conftest import tiny_segmentor

CFG = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
)
PARAMWISE = dict(bias_decay_mult=0.0, norm_decay_mult=0.0)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _build(constructor_cls, model):
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    try:
        wrapper = constructor_cls(CFG, PARAMWISE)(model)
    finally:
        logger.removeHandler(handler)
    return wrapper, handler.messages


def test_same_optimizer_one_summary_line():
    model = tiny_segmentor(peft=dict(type='LoRA', rank=2, targets=('q', 'v')))
    ours, messages = _build(PEFTOptimWrapperConstructor, model)
    default, default_messages = _build(DefaultOptimWrapperConstructor, model)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert sum('requires_grad=False' in m for m in default_messages) == len(frozen) > 0
    assert not any('requires_grad=False' in m for m in messages)
    assert any(f'{len(frozen)} frozen parameter tensors' in m for m in messages)
    ours_groups = [(len(g['params']), g['lr'], g['weight_decay']) for g in ours.optimizer.param_groups]
    default_groups = [(len(g['params']), g['lr'], g['weight_decay']) for g in default.optimizer.param_groups]
    assert ours_groups == default_groups
    optimised = {id(p) for g in ours.optimizer.param_groups for p in g['params']}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
