"""Shared plumbing of the binary-segmentation losses (heads with one output channel)."""

import torch
from torch import Tensor, nn

__all__ = ['BinaryLoss', 'check_binary_inputs']


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


class BinaryLoss(nn.Module):
    """Base of the losses for ``out_channels=1`` heads, called the way mmseg calls losses.

    Validates the inputs, computes in float32 (AMP-safe) and scales by
    ``loss_weight``; subclasses implement :meth:`_loss` on prepared tensors.

    Args:
        loss_weight: multiplier of the loss.
        loss_name: name of the loss item; mmseg adds items whose name starts with
            ``loss_`` to the total loss.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_binary') -> None:
        super().__init__()
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
        valid = (target != ignore_index).unsqueeze(1).float()  # (B, H, W) -> (B, 1, H, W)
        y = (target == 1).unsqueeze(1).float()
        return self.loss_weight * self._loss(pred.float(), y, valid)

    def _loss(self, pred: Tensor, y: Tensor, valid: Tensor) -> Tensor:
        """The unweighted loss from float32 logits, 0/1 targets and the valid-pixel mask, all (B, 1, H, W)."""
        raise NotImplementedError

    @property
    def loss_name(self) -> str:
        """Name of the loss item; mmseg backpropagates items whose name starts with ``loss_``."""
        return self._loss_name
