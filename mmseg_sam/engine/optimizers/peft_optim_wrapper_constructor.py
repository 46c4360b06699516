"""An optimizer constructor for frozen backbones: one summary line, not one warning per tensor."""

import logging

from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

__all__ = ['PEFTOptimWrapperConstructor']

_FROZEN_MESSAGE = 'is skipped since its requires_grad=False'


class _DropFrozenWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _FROZEN_MESSAGE not in record.getMessage()


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, quiet about frozen parameters.

    With ``paramwise_cfg`` set, the default constructor logs a warning for every
    parameter with ``requires_grad=False``: hundreds of lines for a frozen SAM ViT-H.
    This constructor builds exactly the same optimizer (frozen parameters are left
    out either way) and logs one line with their count instead.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        logger = MMLogger.get_current_instance()
        quiet = _DropFrozenWarnings()
        logger.addFilter(quiet)
        try:
            optim_wrapper = super().__call__(model)
        finally:
            logger.removeFilter(quiet)
        frozen = [p for p in model.parameters() if not p.requires_grad]
        if frozen:
            logger.info(
                f'optimizer: {len(frozen)} frozen parameter tensors '
                f'({sum(p.numel() for p in frozen):,} values) are not optimised'
            )
        return optim_wrapper
