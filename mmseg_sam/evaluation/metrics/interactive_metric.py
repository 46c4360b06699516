"""Per-instance IoU / Dice under a box prompt and along simulated clicks, with NoC@85 / NoC@90."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.registry import METRICS
from PIL import Image
from prettytable import PrettyTable

__all__ = ['InteractiveSegMetric', 'instance_scores']


def instance_scores(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice of masks against their instance, over the valid pixels.

    Args:
        pred: (N, ..., H, W) bool predicted masks (e.g. (N, K, H, W) for K clicks).
        gt: (N, H, W) bool ground-truth instances.
        valid: (H, W) bool pixels that count (not the ignore label).

    Returns:
        tuple[ndarray, ndarray]: IoU and Dice of shape ``pred.shape[:-2]``; 1 where the
        prediction and the instance are both empty over the valid pixels.
    """
    extra = pred.ndim - gt.ndim
    g = (gt & valid).reshape(gt.shape[:1] + (1,) * extra + gt.shape[1:])
    p = pred & valid
    inter = (p & g).sum(axis=(-2, -1)).astype(np.float64)
    p_area = p.sum(axis=(-2, -1)).astype(np.float64)
    g_area = np.broadcast_to(g.sum(axis=(-2, -1)), p_area.shape).astype(np.float64)
    union = p_area + g_area - inter
    iou = np.divide(inter, union, out=np.ones_like(union), where=union > 0)
    dice = np.divide(2 * inter, p_area + g_area, out=np.ones_like(union), where=union > 0)
    return iou, dice


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@METRICS.register_module()
class InteractiveSegMetric(BaseMetric):
    """Scores of a prompted SAM per instance, the way the prompted papers and the interactive literature report them.

    Reads ``pred_instances`` of ``SAMPromptedHead`` (``box_masks``; ``click_masks``
    (N, K, H, W)) against ``gt_instances.masks`` over the valid pixels
    (``gt_sem_seg`` not ``ignore_index``). Result keys (percent for IoU / Dice):

    - ``box_mIoU``, ``box_mDice``: per-instance IoU / Dice under the box prompt,
      averaged per class, then over the classes that have instances (COBOT's average);
      ``box_IoU_instances``: the plain mean over instances; ``box_IoU.<class>`` per class.
    - ``point_mIoU``: the same after one click (the one-point prompt), class-averaged.
    - ``click_mIoU@k`` for k = 1..K: class-averaged IoU after k clicks (the curve).
    - ``NoC@85``, ``NoC@90``: the mean over instances of the number of clicks needed to
      reach IoU 0.85 / 0.90, K where never reached (the interactive-segmentation protocol
      caps at its 20 clicks: set the head's ``test_prompting clicks=20``).
    - ``instances``, ``images_without_instances``: what was scored; an image without
      instances is counted there, never scored as 0.

    With ``output_dir`` (``tools/test.py --out DIR``) every image's predictions are
    written: ``DIR/<image name>.json`` holds, per instance in the order of
    ``gt_instances``, its ``label``, and under a box its mask (``box_mask``, COCO RLE
    as ``pycocotools.mask.encode`` writes it, counts as text), predicted IoU
    (``box_score``) and actual IoU (``box_iou``); along the clicks the K masks
    (``click_masks``), the clicks (``click_points`` ``(x, y)`` pixel indices,
    ``click_labels`` 1 / 0) and their IoU (``click_iou``). ``DIR/<image name>.png``
    is the class-index map painted from the masks (``pred_sem_seg``). The masks are
    in the frame of the packed ground truth, ``size`` ``[H, W]``.

    Args:
        ignore_index: the label of pixels that do not count.
        noc_thresholds: IoU thresholds of the NoC keys.
        output_dir: folder for the predictions, or None.
        keep_results: accepted for ``tools/test.py --out``, which sets it; the
            predictions are written whenever ``output_dir`` is set.
        **kwargs: BaseMetric arguments (``collect_device``, ``prefix``).
    """

    default_prefix = ''

    def __init__(
        self,
        ignore_index: int = 255,
        noc_thresholds: Sequence[float] = (0.85, 0.90),
        output_dir: str | os.PathLike | None = None,
        keep_results: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for thr in noc_thresholds:
            if not 0 < thr <= 1:
                raise ValueError(f'noc_thresholds must lie in (0, 1], got {thr!r}')
        if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise ValueError(f'output_dir {output_dir} is a file, expected a folder')
        self.ignore_index = ignore_index
        self.noc_thresholds = tuple(float(t) for t in noc_thresholds)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.keep_results = bool(keep_results)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'pred_instances' not in sample or 'gt_instances' not in sample:
                raise ValueError(
                    'InteractiveSegMetric scores prompted predictions: the model must be a SAMPromptedEncoderDecoder '
                    'and the pipeline must pack gt_instances (PackPromptedSegInputs)'
                )
            gt = _numpy(sample['gt_instances']['masks']).astype(bool)
            pred = sample['pred_instances']
            labels = _numpy(sample['gt_instances']['labels']).astype(np.int64)
            if 'gt_sem_seg' in sample:
                valid = (
                    _numpy(sample['gt_sem_seg']['data'])[0, : gt.shape[-2], : gt.shape[-1]]
                    != self.ignore_index
                )
            else:
                valid = np.ones(gt.shape[-2:], dtype=bool)
            result: dict[str, Any] = dict(labels=labels, n=len(gt))
            if 'box_masks' in pred:
                result['box'] = instance_scores(_numpy(pred['box_masks']).astype(bool), gt, valid)
            if 'click_masks' in pred:
                result['click'] = instance_scores(_numpy(pred['click_masks']).astype(bool), gt, valid)
            if self.output_dir is not None:
                self.write_prediction(sample, result)
            self.results.append(result)

    def write_prediction(self, sample: Any, result: dict[str, Any]) -> None:
        """``output_dir/<name>.json`` (per-instance masks as COCO RLE, scores, clicks) and ``<name>.png``."""
        from pycocotools import mask as mask_utils  # noqa: PLC0415  (COCO's RLE, a requirement)

        def rle(mask: np.ndarray) -> dict[str, Any]:
            encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            return dict(size=[int(v) for v in encoded['size']], counts=encoded['counts'].decode('ascii'))

        metainfo = sample.get('metainfo', sample)
        path = metainfo.get('img_path') if isinstance(metainfo, dict) else None
        name = Path(path or f'{len(self.results):06d}').stem
        pred = sample['pred_instances']
        labels = result['labels'].tolist()
        instances: list[dict[str, Any]] = [dict(label=int(label)) for label in labels]
        if 'box_masks' in pred:
            masks = _numpy(pred['box_masks']).astype(bool)
            scores = _numpy(pred['box_scores']).tolist() if 'box_scores' in pred else [None] * len(labels)
            for j, entry in enumerate(instances):
                entry.update(box_mask=rle(masks[j]), box_score=scores[j], box_iou=float(result['box'][0][j]))
        if 'click_masks' in pred:
            masks = _numpy(pred['click_masks']).astype(bool)  # (N, K, H, W)
            points = _numpy(pred['click_points']).tolist() if 'click_points' in pred else None
            clicked = _numpy(pred['click_labels']).tolist() if 'click_labels' in pred else None
            for j, entry in enumerate(instances):
                entry['click_masks'] = [rle(m) for m in masks[j]]
                entry['click_iou'] = [float(v) for v in result['click'][0][j]]
                if points is not None:
                    entry['click_points'] = points[j]
                if clicked is not None:
                    entry['click_labels'] = clicked[j]
        size = list(_numpy(sample['gt_instances']['masks']).shape[-2:])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        record = dict(img_path=path, size=size, instances=instances)
        (self.output_dir / f'{name}.json').write_text(json.dumps(record))
        if 'pred_sem_seg' in sample:
            painted = _numpy(sample['pred_sem_seg']['data'])[0]
            dtype = np.uint8 if painted.max(initial=0) < 256 else np.uint16
            Image.fromarray(painted.astype(dtype)).save(self.output_dir / f'{name}.png')

    def compute_metrics(self, results: list) -> dict[str, float]:
        logger = MMLogger.get_current_instance()
        scored = [r for r in results if r['n']]
        out: dict[str, float] = dict(
            instances=float(sum(r['n'] for r in results)),
            images_without_instances=float(len(results) - len(scored)),
        )
        if not scored:
            raise ValueError(
                f'InteractiveSegMetric: none of the {len(results)} images has an instance to score; check '
                'GenerateInstances (classes, min_area) on this dataset'
            )
        labels = np.concatenate([r['labels'] for r in scored])
        classes = list((self.dataset_meta or {}).get('classes', []))
        name = lambda c: classes[c] if c < len(classes) else str(c)  # noqa: E731
        present = sorted(set(labels.tolist()))
        table = PrettyTable()
        table.add_column('class', [name(c) for c in present])
        table.add_column('instances', [int((labels == c).sum()) for c in present])

        def class_mean(values: np.ndarray) -> tuple[float, list[float]]:
            per_class = [float(values[labels == c].mean()) for c in present]
            return float(np.mean(per_class)), per_class

        if all('box' in r for r in scored):
            iou = np.concatenate([r['box'][0] for r in scored])
            dice = np.concatenate([r['box'][1] for r in scored])
            out['box_mIoU'], per_class = class_mean(iou)
            out['box_mDice'], per_dice = class_mean(dice)
            out['box_IoU_instances'] = float(iou.mean())
            for c, value in zip(present, per_class):
                out[f'box_IoU.{name(c)}'] = value
            table.add_column('box IoU', [round(100 * v, 2) for v in per_class])
            table.add_column('box Dice', [round(100 * v, 2) for v in per_dice])
        if all('click' in r for r in scored):
            iou = np.concatenate([r['click'][0] for r in scored])  # (N, K)
            k_max = iou.shape[1]
            curve = [class_mean(iou[:, k])[0] for k in range(k_max)]
            out['point_mIoU'] = curve[0]
            for k, value in enumerate(curve, start=1):
                out[f'click_mIoU@{k}'] = value
            table.add_column('1-point IoU', [round(100 * v, 2) for v in class_mean(iou[:, 0])[1]])
            for thr in self.noc_thresholds:
                reached = iou >= thr
                noc = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, k_max)
                out[f'NoC@{round(100 * thr)}'] = float(noc.mean())
        print_log('per-class results:\n' + table.get_string(), logger=logger)
        for key, value in out.items():  # IoU / Dice in percent, as mmseg's metrics report them
            if 'IoU' in key or 'Dice' in key:
                out[key] = 100 * value
        return out
