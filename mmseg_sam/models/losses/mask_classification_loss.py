"""Mask2Former-style set loss for the mask-classification head (semantic segmentation)."""

import torch
import torch.nn.functional as F
from mmcv.ops import point_sample
from mmseg.registry import MODELS
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

# Points are sampled with border padding: with grid_sample's default zero padding,
# points within half a pixel of the image edge read targets and logits pulled
# towards 0, which biases the loss at the border (Mask2Former's criterion does that).
_SAMPLE = dict(align_corners=False, padding_mode='border')

__all__ = ['MaskClassificationLoss', 'hungarian_match', 'semantic_targets', 'uncertain_point_coords']


def semantic_targets(seg_label: Tensor, num_classes: int, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """One target mask per class present in a label map.

    Args:
        seg_label: (H, W) class indices, ``ignore_index`` for ignored pixels.
        num_classes: number of classes (labels must be below it).
        ignore_index: label of ignored pixels.

    Returns:
        tuple[Tensor, Tensor, Tensor]: classes (K,), masks (K, H, W) float, valid (H, W)
        float (1 where the label is not ignored).
    """
    valid = seg_label != ignore_index
    classes = torch.unique(seg_label[valid])
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        bad = classes[(classes < 0) | (classes >= num_classes)].tolist()
        raise ValueError(
            f'labels {bad} are outside [0, {num_classes}) (num_classes={num_classes}, ignore_index={ignore_index})'
        )
    masks = (seg_label[None] == classes[:, None, None]).float()  # (K, H, W)
    return classes, masks, valid.float()


def _labelled_points(valid: Tensor, coords: Tensor) -> Tensor:
    """1 where a point's whole bilinear footprint is labelled, else 0: (M, 1, H, W), (M, N, 2) -> (M, N).

    Ignored pixels then contribute nothing, not even a fraction at region borders.
    """
    sampled = point_sample(valid, coords, **_SAMPLE)[:, 0]
    return (sampled >= 1 - 1e-6).float()


def _point_bce(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Pairwise mean BCE over weighted points: (Q, N) x (K, N) -> (Q, K)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction='none') * weights
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction='none') * weights
    return (pos @ targets.T + neg @ (1 - targets).T) / weights.sum().clamp(min=1.0)


def _point_dice(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Pairwise dice cost over weighted points: (Q, N) x (K, N) -> (Q, K)."""
    probs = logits.sigmoid() * weights
    targets = targets * weights
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def hungarian_match(
    cls_logits: Tensor,
    mask_logits: Tensor,
    classes: Tensor,
    masks: Tensor,
    valid: Tensor,
    cost_class: float = 1.0,
    cost_mask: float = 5.0,
    cost_dice: float = 5.0,
    num_points: int = 12544,
) -> tuple[Tensor, Tensor]:
    """Optimal one-to-one assignment of queries to target masks for one image.

    The cost of query q for target k is ``-cost_class * p_q(class_k) + cost_mask *
    BCE + cost_dice * dice``, the mask terms computed on ``num_points`` uniformly
    sampled points shared by all pairs; points touching ignored pixels weigh 0. Solved with scipy's
    ``linear_sum_assignment``.

    Args:
        cls_logits: (Q, C + 1).
        mask_logits: (Q, h, w).
        classes: (K,) target classes.
        masks: (K, H, W) target masks.
        valid: (H, W) 1 for labelled pixels.

    Returns:
        tuple[Tensor, Tensor]: matched query indices and target indices (each (min(Q, K),)).
    """
    coords = torch.rand(1, num_points, 2, device=mask_logits.device)
    pred = point_sample(mask_logits[:, None].float(), coords.expand(len(mask_logits), -1, -1), **_SAMPLE)
    target = point_sample(masks[:, None], coords.expand(len(masks), -1, -1), **_SAMPLE)
    weights = _labelled_points(valid[None, None], coords)  # (1, N)
    pred, target = pred[:, 0], target[:, 0]  # (Q, N), (K, N)
    cost = (
        -cost_class * cls_logits.float().softmax(-1)[:, classes]
        + cost_mask * _point_bce(pred, target, weights)
        + cost_dice * _point_dice(pred, target, weights)
    )
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    device = cls_logits.device
    return torch.as_tensor(rows, dtype=torch.long, device=device), torch.as_tensor(
        cols, dtype=torch.long, device=device
    )


@torch.no_grad()
def uncertain_point_coords(
    mask_logits: Tensor,
    valid: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """PointRend's importance sampling: points where the mask logit is closest to 0.

    ``oversample_ratio * num_points`` candidates are drawn uniformly; the
    ``importance_sample_ratio`` share of the points are the most uncertain labelled
    candidates (ignored pixels are never picked for being uncertain) and the rest
    are uniform.

    Args:
        mask_logits: (M, 1, h, w).
        valid: (M, 1, H, W) 1 for labelled pixels.

    Returns:
        Tensor: (M, num_points, 2) coordinates in [0, 1].
    """
    m = mask_logits.shape[0]
    num_candidates = max(int(num_points * oversample_ratio), num_points)
    candidates = torch.rand(m, num_candidates, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits.float(), candidates, **_SAMPLE)[:, 0].abs()
    uncertainty = uncertainty.masked_fill(_labelled_points(valid, candidates) == 0, float('-inf'))
    num_uncertain = int(importance_sample_ratio * num_points)
    index = uncertainty.topk(num_uncertain, dim=1).indices  # (M, num_uncertain)
    picked = candidates.gather(1, index[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random:
        picked = torch.cat([picked, torch.rand(m, num_random, 2, device=mask_logits.device)], dim=1)
    return picked


@MODELS.register_module()
class MaskClassificationLoss(nn.Module):
    """Set loss of the mask-classification head: Hungarian matching, then CE + BCE + dice.

    Per image, target masks are the classes present in the label map. Queries are
    matched to them (:func:`hungarian_match`); the class loss is a cross-entropy over
    all queries (unmatched ones target "no object", weighted ``no_object_weight``);
    the mask losses are sigmoid BCE and dice on ``num_points`` points per matched mask
    chosen by importance sampling, averaged over the matched masks of the batch.
    Ignored pixels (``ignore_index``) weigh 0 in matching and in the mask losses.

    Defaults follow the Conv-LoRA reference (Mask2Former's criterion): matching costs
    class 1, BCE 5, dice 5; the loss weights default to the same values.

    Args:
        num_classes: classes of the dataset (without "no object").
        class_weight: weight of the classification loss.
        mask_weight: weight of the point-sampled BCE.
        dice_weight: weight of the point-sampled dice loss.
        no_object_weight: CE weight of the "no object" class.
        cost_class: matching cost weight of the class probability.
        cost_mask: matching cost weight of the BCE.
        cost_dice: matching cost weight of the dice.
        num_points: points per mask for matching and the mask losses.
        oversample_ratio: candidates per point for importance sampling.
        importance_sample_ratio: share of points chosen by uncertainty.
        loss_name: prefix of the returned loss names (``loss`` gives ``loss_cls``,
            ``loss_mask``, ``loss_dice``; mmseg sums every name starting with ``loss``).
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 1.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        cost_class: float = 1.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        loss_name: str = 'loss',
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(f'importance_sample_ratio must be in [0, 1], got {importance_sample_ratio!r}')
        if num_points < 1 or oversample_ratio < 1:
            raise ValueError(
                f'need num_points >= 1 and oversample_ratio >= 1, got {num_points}, {oversample_ratio}'
            )
        self.num_classes = num_classes
        self.weights = dict(cls=class_weight, mask=mask_weight, dice=dice_weight)
        self.costs = dict(cost_class=cost_class, cost_mask=cost_mask, cost_dice=cost_dice)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self._loss_name = loss_name
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer('class_weights', class_weights, persistent=False)

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(
        self, cls_logits: Tensor, mask_logits: Tensor, seg_label: Tensor, ignore_index: int = 255
    ) -> dict[str, Tensor]:
        """Compute the weighted loss terms.

        Args:
            cls_logits: (B, Q, C + 1).
            mask_logits: (B, Q, h, w).
            seg_label: (B, H, W) class indices.
            ignore_index: label of ignored pixels.

        Returns:
            dict[str, Tensor]: ``{loss_name}_cls``, ``{loss_name}_mask``, ``{loss_name}_dice``.
        """
        b, q, c1 = cls_logits.shape
        if c1 != self.num_classes + 1:
            raise ValueError(
                f'cls_logits have {c1} classes, expected num_classes + 1 = {self.num_classes + 1}'
            )
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=cls_logits.device)
        matched_pred, matched_target, matched_valid = [], [], []
        for i in range(b):
            classes, masks, valid = semantic_targets(seg_label[i], self.num_classes, ignore_index)
            if not len(classes):
                continue
            rows, cols = hungarian_match(
                cls_logits[i], mask_logits[i], classes, masks, valid, num_points=self.num_points, **self.costs
            )
            target_classes[i, rows] = classes[cols]
            matched_pred.append(mask_logits[i, rows])
            matched_target.append(masks[cols])
            matched_valid.append(valid[None].expand(len(cols), -1, -1))

        loss_cls = F.cross_entropy(
            cls_logits.float().transpose(1, 2),
            target_classes,
            weight=self.class_weights.to(cls_logits.device),
        )
        if matched_pred:
            pred = torch.cat(matched_pred)[:, None]  # (M, 1, h, w)
            target = torch.cat(matched_target)[:, None]  # (M, 1, H, W)
            valid = torch.cat(matched_valid)[:, None]
            coords = uncertain_point_coords(
                pred, valid, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_logits = point_sample(pred.float(), coords, **_SAMPLE)[:, 0]  # (M, N)
            point_target = point_sample(target, coords, **_SAMPLE)[:, 0]
            point_weight = _labelled_points(valid, coords)
            bce = F.binary_cross_entropy_with_logits(point_logits, point_target, reduction='none')
            loss_mask = ((bce * point_weight).sum(1) / point_weight.sum(1).clamp(min=1.0)).mean()
            probs = point_logits.sigmoid() * point_weight
            point_target = point_target * point_weight
            dice = 1 - (2 * (probs * point_target).sum(1) + 1) / (probs.sum(1) + point_target.sum(1) + 1)
            loss_dice = dice.mean()
        else:  # nothing labelled in the batch: keep the graph, contribute 0
            loss_mask = loss_dice = mask_logits.sum() * 0.0
        return {
            f'{self._loss_name}_cls': self.weights['cls'] * loss_cls,
            f'{self._loss_name}_mask': self.weights['mask'] * loss_mask,
            f'{self._loss_name}_dice': self.weights['dice'] * loss_dice,
        }
