"""Class-balanced BCE with logits (shadow detection) for binary heads with one output channel."""

import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .binary_loss import BinaryLoss

__all__ = ['BalancedBCELoss']


@MODELS.register_module()
class BalancedBCELoss(BinaryLoss):
    """Balanced BCE with logits, as used for shadow detection.

    Over the valid pixels of the whole batch, with ``pos`` the number of foreground
    and ``neg`` the number of background pixels::

        loss = pos / (pos + neg) * mean(BCEWithLogits(pred, y, pos_weight=neg / pos))

    times ``loss_weight``, the mean being over the valid pixels. Ignored pixels
    (``target == ignore_index``) are excluded from the counts and the mean, and their
    logits get no gradient.

    When the batch has no foreground pixel the factor ``pos / (pos + neg)`` is 0, so the
    loss is exactly 0 (with zero gradient); ``pos`` is clamped to at least 1 inside
    ``pos_weight`` so that no inf or NaN appears. A batch without valid pixels gives 0.

    The computation is done in float32 whatever the dtype of ``pred`` (AMP-safe).

    Args:
        loss_weight: multiplier of the loss.
        loss_name: name of the loss item; mmseg adds items whose name starts with
            ``loss_`` to the total loss.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_balanced_bce') -> None:
        super().__init__(loss_weight, loss_name)

    def _loss(self, pred: Tensor, y: Tensor, valid: Tensor) -> Tensor:
        pos = y.sum()
        num_valid = valid.sum()
        neg = num_valid - pos
        pos_weight = neg / pos.clamp(min=1)
        bce = F.binary_cross_entropy_with_logits(pred, y, pos_weight=pos_weight, reduction='none')
        mean_bce = (valid * bce).sum() / num_valid.clamp(min=1)
        return (pos / num_valid.clamp(min=1)) * mean_bce
