"""PraNet's structure loss (weighted BCE + weighted IoU) for binary heads with one output channel."""

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .binary_loss import BinaryLoss, check_binary_inputs

__all__ = ['StructureLoss', 'check_binary_inputs']  # check_binary_inputs re-exported


@MODELS.register_module()
class StructureLoss(BinaryLoss):
    """PraNet's structure loss: boundary-weighted BCE plus boundary-weighted IoU.

    With ``y`` the 0/1 target, ``s = sigmoid(pred)`` and, per image,
    ``w = 1 + 5 * |avg_pool2d(y, 31, stride=1, padding=15) - y|`` (zero padding
    counted in the average, as PraNet), the loss of an image is
    ``wBCE + wIoU`` with

    - ``wBCE = sum(w * bce) / sum(w)``, ``bce`` the per-pixel BCE with logits;
    - ``wIoU = 1 - (sum(w*s*y) + 1) / (sum(w*(s+y)) - sum(w*s*y) + 1)``,

    and the returned value is the mean over the batch times ``loss_weight``.

    Ignored pixels (``target == ignore_index``) contribute nothing: their ``w`` is 0 in
    both terms, so their logits get no gradient. They count as background (``y = 0``)
    inside the 31x31 average that makes ``w`` of their valid neighbours. An image
    without any valid pixel has both terms 0 (it still counts in the batch mean).

    The computation is done in float32 whatever the dtype of ``pred`` (AMP-safe).

    Args:
        weighted_bce: True: the boundary-weighted BCE above (PraNet's intent).
            False: the BCE term is the plain mean of the per-pixel BCE over the valid
            pixels of the whole batch (0 if there are none), added to the batch mean
            of ``wIoU``. This reproduces the reference code (PraNet, Conv-LoRA), which
            passes the legacy ``reduce='none'`` to
            ``F.binary_cross_entropy_with_logits``; torch reads it as ``reduce=True``,
            so its BCE is already a batch-mean scalar and
            ``(w * scalar).sum() / w.sum()`` gives that scalar back.
        loss_weight: multiplier of the loss.
        loss_name: name of the loss item; mmseg adds items whose name starts with
            ``loss_`` to the total loss.
    """

    def __init__(
        self, weighted_bce: bool = True, loss_weight: float = 1.0, loss_name: str = 'loss_structure'
    ) -> None:
        super().__init__(loss_weight, loss_name)
        self.weighted_bce = weighted_bce

    def _loss(self, pred: Tensor, y: Tensor, valid: Tensor) -> Tensor:
        pooled = F.avg_pool2d(y, kernel_size=31, stride=1, padding=15)
        w = (1 + 5 * torch.abs(pooled - y)) * valid
        # Valid pixels have w >= 1, so clamping sum(w) at 1 only changes images with no
        # valid pixel, whose numerators are 0: their terms are 0 instead of NaN.
        w_sum = w.sum(dim=(2, 3)).clamp(min=1)

        bce = F.binary_cross_entropy_with_logits(pred, y, reduction='none')
        if self.weighted_bce:
            bce_term = (w * bce).sum(dim=(2, 3)) / w_sum
        else:
            bce_term = (valid * bce).sum() / valid.sum().clamp(min=1)

        s = torch.sigmoid(pred)
        inter = (w * s * y).sum(dim=(2, 3))
        union = (w * (s + y)).sum(dim=(2, 3))
        iou_term = 1 - (inter + 1) / (union - inter + 1)
        return (bce_term + iou_term).mean()
