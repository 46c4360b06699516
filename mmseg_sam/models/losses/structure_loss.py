"""PraNet's structure loss (weighted BCE + weighted IoU) for binary heads with one output channel."""

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

__all__ = ['StructureLoss', 'check_binary_inputs']


def check_binary_inputs(
    name: str, pred: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int
) -> None:
    """Validate the arguments mmseg's ``BaseDecodeHead.loss_by_feat`` passes to a binary loss.

    Args:
        name: the loss class name, used in error messages.
        pred: logits, expected (B, 1, H, W) and floating point.
        target: labels, expected (B, H, W) with values 0, 1 or ``ignore_index``.
        weight: per-pixel weights from a sampler; must be None (not supported).
        ignore_index: the label value of ignored pixels.

    Raises:
        TypeError: if ``pred`` is not a floating-point tensor.
        ValueError: if ``pred`` is not (B, 1, H, W), ``target`` is not (B, H, W) with
            pred's B, H, W, ``weight`` is not None, or ``target`` holds a value other
            than 0, 1 and ``ignore_index``.
    """
    if not torch.is_floating_point(pred):
        raise TypeError(f'{name} expects floating-point logits as pred, got dtype {pred.dtype}')
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(
            f'{name} expects pred of shape (B, 1, H, W), got {tuple(pred.shape)}; '
            'this loss is for binary heads with out_channels=1'
        )
    expected = (pred.shape[0], *pred.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f'{name} expects target of shape (B, H, W) = {expected} to match pred '
            f'{tuple(pred.shape)}, got {tuple(target.shape)}'
        )
    if weight is not None:
        raise ValueError(
            f'{name} does not support a per-pixel weight (got a tensor of shape {tuple(weight.shape)}); '
            'use it without a sampler so that weight is None'
        )
    values = torch.unique(target)
    bad = values[(values != 0) & (values != 1) & (values != ignore_index)]
    if bad.numel():
        raise ValueError(
            f'{name} expects target values 0, 1 or ignore_index={ignore_index}, found {sorted(bad.tolist())}'
        )


@MODELS.register_module()
class StructureLoss(nn.Module):
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
        super().__init__()
        self.weighted_bce = weighted_bce
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        ignore_index: int = 255,
        **kwargs,
    ) -> Tensor:
        """Compute the loss.

        Args:
            pred: (B, 1, H, W) logits, any floating dtype.
            target: (B, H, W) labels: 0 background, 1 foreground, ``ignore_index``
                ignored.
            weight: must be None; per-pixel weights are not supported.
            ignore_index: label value of the pixels to ignore.
            **kwargs: other arguments of mmseg's loss call, unused.

        Returns:
            Tensor: the float32 scalar loss times ``loss_weight``.

        Raises:
            TypeError: if ``pred`` is not floating point.
            ValueError: if the shapes are not as above, ``weight`` is given or
                ``target`` holds values other than 0, 1 and ``ignore_index``.
        """
        check_binary_inputs(type(self).__name__, pred, target, weight, ignore_index)
        pred = pred.float()
        valid = (target != ignore_index).unsqueeze(1).float()
        y = (target == 1).unsqueeze(1).float()
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
        return self.loss_weight * (bce_term + iou_term).mean()

    @property
    def loss_name(self) -> str:
        """Name of the loss item; mmseg backpropagates items whose name starts with ``loss_``."""
        return self._loss_name
