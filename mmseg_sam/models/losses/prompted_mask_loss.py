"""Per-mask losses of prompted SAM: focal, Dice, BCE and the IoU head's regression."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

__all__ = ['PromptedMaskLoss', 'mask_iou']

_IOU_LOSSES = ('mse', 'l1')


def mask_iou(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """IoU of binary masks over the valid pixels.

    Args:
        pred: (N, M, H, W) bool predicted masks.
        target: (N, H, W) bool ground truth, one per row of ``pred``.
        valid: (H, W) bool pixels that count (not the ignore label), or None for all.

    Returns:
        Tensor: (N, M) float IoU; 1 where prediction and target are both empty.
    """
    target = target[:, None]  # (N, H, W) -> (N, 1, H, W)
    if valid is not None:
        pred, target = pred & valid, target & valid
    inter = (pred & target).flatten(2).sum(-1).float()
    union = (pred | target).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@MODELS.register_module()
class PromptedMaskLoss(nn.Module):
    """The mask and IoU losses of a prompted SAM, per predicted mask.

    Each term is a mean over the valid pixels (the ignore label excluded) of one mask,
    so the head can keep, for an ambiguous single-point prompt, only the lowest total of
    its multimask outputs (SAM's rule). The presets:

    - SAM (Kirillov et al., 2023, appendix): ``focal=20, dice=1, iou=1`` (the default);
      SAM 2.1's released fine-tuning config weighs mask focal 20, Dice 1, IoU 1 as well.
    - COBOT, natural / remote-sensing pipeline: ``focal=0, dice=1, bce=1`` (BCE with
      logits + Dice per instance). Its released Dice thresholds the prediction first,
      so only BCE trains there; this Dice is the soft one.
    - COBOT medical pipeline (MONAI ``DiceCELoss(sigmoid=True, squared_pred=True)``):
      ``focal=0, dice=1, bce=1, squared_pred=True``.

    Args:
        focal: weight of the sigmoid focal loss (alpha 0.25, gamma 2, as SAM / SAM 2).
        dice: weight of the soft Dice loss ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)``.
        bce: weight of binary cross-entropy with logits.
        iou: weight of the IoU head's regression to the masks' actual IoU.
        iou_loss: ``'mse'`` (SAM) or ``'l1'`` (SAM 2's ``iou_use_l1_loss``).
        squared_pred: Dice denominator over ``p**2`` and ``t**2`` (MONAI's ``squared_pred``).
        focal_alpha: the focal loss's alpha (negative: no alpha weighting).
        focal_gamma: the focal loss's gamma.
    """

    def __init__(
        self,
        focal: float = 20.0,
        dice: float = 1.0,
        bce: float = 0.0,
        iou: float = 1.0,
        iou_loss: str = 'mse',
        squared_pred: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        weights = dict(focal=focal, dice=dice, bce=bce, iou=iou)
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'PromptedMaskLoss {name}={value!r}: a weight must be a number >= 0')
        if not focal + dice + bce:
            raise ValueError('PromptedMaskLoss needs a mask term: focal, dice and bce are all 0')
        if iou_loss not in _IOU_LOSSES:
            raise ValueError(f'iou_loss must be one of {_IOU_LOSSES}, got {iou_loss!r}')
        self.weights = {k: float(v) for k, v in weights.items()}
        self.iou_loss = iou_loss
        self.squared_pred = squared_pred
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def mask_terms(self, logits: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """The weighted mask terms of every predicted mask.

        Args:
            logits: (N, M, H, W) mask logits (M = 1, or 3 multimask outputs).
            target: (N, H, W) bool ground-truth masks.
            valid: (H, W) bool pixels that count.

        Returns:
            dict[str, Tensor]: ``loss_focal`` / ``loss_dice`` / ``loss_bce`` (those with a
            weight > 0), each (N, M) float32.
        """
        logits = logits.float()
        t = target[:, None].expand_as(logits).float()  # (N, H, W) -> (N, M, H, W)
        w = valid.float().expand_as(logits)  # (H, W) -> (N, M, H, W)
        count = w.flatten(2).sum(-1).clamp_min(1)  # (N, M)
        terms: dict[str, Tensor] = {}
        if self.weights['focal'] or self.weights['bce']:
            ce = F.binary_cross_entropy_with_logits(logits, t, reduction='none')
            if self.weights['bce']:
                terms['loss_bce'] = self.weights['bce'] * (ce * w).flatten(2).sum(-1) / count
            if self.weights['focal']:
                p = logits.sigmoid()
                p_t = p * t + (1 - p) * (1 - t)
                focal = ce * (1 - p_t) ** self.focal_gamma
                if self.focal_alpha >= 0:
                    focal = focal * (self.focal_alpha * t + (1 - self.focal_alpha) * (1 - t))
                terms['loss_focal'] = self.weights['focal'] * (focal * w).flatten(2).sum(-1) / count
        if self.weights['dice']:
            p = logits.sigmoid() * w
            tv = t * w
            inter = (p * tv).flatten(2).sum(-1)
            if self.squared_pred:
                denom = (p * p).flatten(2).sum(-1) + (tv * tv).flatten(2).sum(-1)
            else:
                denom = p.flatten(2).sum(-1) + tv.flatten(2).sum(-1)
            terms['loss_dice'] = self.weights['dice'] * (1 - (2 * inter + 1) / (denom + 1))
        return terms

    def iou_term(self, iou_pred: Tensor, logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
        """The IoU head's loss against the actual IoU of ``logits > 0`` (no gradient into the masks).

        Args:
            iou_pred: (N, M) predicted IoU.
            logits: (N, M, H, W) mask logits.
            target: (N, H, W) bool ground truth.
            valid: (H, W) bool pixels that count.

        Returns:
            Tensor: (N, M) weighted per-mask loss, float32.
        """
        actual = mask_iou(logits.detach() > 0, target, valid)
        diff = iou_pred.float() - actual
        per_mask = diff.abs() if self.iou_loss == 'l1' else diff * diff
        return self.weights['iou'] * per_mask

    def extra_repr(self) -> str:
        weights = ', '.join(f'{k}={v:g}' for k, v in self.weights.items())
        return f'{weights}, iou_loss={self.iou_loss!r}, squared_pred={self.squared_pred}'
