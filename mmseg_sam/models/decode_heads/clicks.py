"""Correction points from the error region of a prediction, for training and for evaluation.

Two rules, one per use:

- :func:`sample_error_points` (training, SAM's recipe): a point drawn uniformly from the
  error region between the prediction and the ground truth; positive (label 1) on a
  false negative, negative (label 0) on a false positive.
- :func:`next_clicks` (evaluation, the interactive-segmentation protocol of RITM,
  Sofiiuk et al. 2022, ``isegm/inference/clicker.py``): the click goes to the pixel
  farthest from the boundary of the false-negative or the false-positive region,
  whichever reaches farther (ties: negative, as RITM's ``fn_max > fp_max``), the first
  such pixel in row-major order. Distances are exact Euclidean distance transforms of
  the regions padded by one pixel, so the image border counts as a boundary.

Where a prediction has no error left (or no valid pixel), the point is SAM's padding
point: coordinates (0, 0), label -1, which the prompt encoder embeds as "not a point".
Coordinates are (x, y) = (column, row) pixel indices of the masks' frame.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor

__all__ = ['next_clicks', 'sample_error_points']


def _error_regions(pred: Tensor, gt: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """False negatives and false positives (N, H, W), both restricted to valid pixels."""
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(f'pred and gt must both be (N, H, W), got {tuple(pred.shape)} and {tuple(gt.shape)}')
    if tuple(valid.shape) != tuple(gt.shape[1:]):
        raise ValueError(f'valid must be (H, W) = {tuple(gt.shape[1:])}, got {tuple(valid.shape)}')
    return gt & ~pred & valid, pred & ~gt & valid


def sample_error_points(
    pred: Tensor, gt: Tensor, valid: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One point per mask, uniform over its error region (SAM's training rule).

    Args:
        pred: (N, H, W) bool predicted masks.
        gt: (N, H, W) bool ground-truth masks.
        valid: (H, W) bool pixels that count (not the ignore label).
        generator: torch generator on ``pred``'s device (None: the global one).

    Returns:
        tuple[Tensor, Tensor]: (N, 1, 2) float (x, y) and (N, 1) long labels (1 false
        negative, 0 false positive, -1 no error).
    """
    fn, fp = _error_regions(pred, gt, valid)
    n, h, w = gt.shape
    error = (fn | fp).flatten(1)  # (N, H*W)
    has_error = error.any(dim=1)
    weights = torch.where(has_error[:, None], error, torch.ones_like(error)).float()
    if n == 0:
        return gt.new_zeros((0, 1, 2), dtype=torch.float32), gt.new_zeros((0, 1), dtype=torch.long)
    index = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (N,)
    rows, cols = index // w, index % w
    labels = fn.flatten(1).gather(1, index[:, None]).squeeze(1).long()  # 1 on a false negative, else 0
    labels = torch.where(has_error, labels, torch.full_like(labels, -1))
    points = torch.stack([cols, rows], dim=-1).float()  # (N, 2) as (x, y)
    points = torch.where(has_error[:, None], points, torch.zeros_like(points))
    return points[:, None], labels[:, None]


def _farthest(region: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The largest distance to the region's boundary (image border included) and its first pixel."""
    if not region.any():
        return 0.0, (0, 0)
    dist = distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    best = float(dist.max())
    rows, cols = np.nonzero(dist == best)
    return best, (int(rows[0]), int(cols[0]))


def next_clicks(pred: Tensor, gt: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The next simulated click per mask (RITM's clicker; see the module docstring).

    Args:
        pred: (N, H, W) bool predicted masks (all False before the first click).
        gt: (N, H, W) bool ground-truth masks.
        valid: (H, W) bool pixels that count.

    Returns:
        tuple[Tensor, Tensor]: (N, 1, 2) float (x, y) on ``gt``'s device and (N, 1) long
        labels (1 positive, 0 negative, -1 no error left).
    """
    fn, fp = _error_regions(pred, gt, valid)
    fn_np, fp_np = fn.cpu().numpy(), fp.cpu().numpy()
    points, labels = [], []
    for fn_i, fp_i in zip(fn_np, fp_np):
        fn_dist, fn_at = _farthest(fn_i)
        fp_dist, fp_at = _farthest(fp_i)
        if fn_dist == 0 and fp_dist == 0:
            points.append((0.0, 0.0))
            labels.append(-1)
            continue
        positive = fn_dist > fp_dist
        row, col = fn_at if positive else fp_at
        points.append((float(col), float(row)))
        labels.append(1 if positive else 0)
    n = gt.shape[0]
    coords = torch.tensor(points, dtype=torch.float32, device=gt.device).reshape(n, 1, 2)
    return coords, torch.tensor(labels, dtype=torch.long, device=gt.device).reshape(n, 1)
