"""The segmentor inside the wrappers a runner may put around it."""

from __future__ import annotations

from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

__all__ = ['unwrap_model']


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP-style wrappers and test-time-augmentation models (``tools/test.py --tta``).

    MMEngine's checkpoint loading unwraps both the same way, so keys and modules
    seen through this function are the ones a checkpoint holds.
    """
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model
