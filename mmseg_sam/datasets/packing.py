"""Pack the instances and prompts of a sample into ``data_sample.gt_instances``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmengine.structures import InstanceData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

from .instances import INSTANCES_FRAME, frame_changes, sample_files

__all__ = ['PackPromptedSegInputs']

#: results key -> (InstanceData field, dtype, shape after N with H, W, K for the sizes).
_FIELDS = {
    'gt_instance_masks': ('masks', torch.bool, ('H', 'W')),
    'gt_instance_labels': ('labels', torch.int64, ()),
    'gt_instance_bboxes': ('bboxes', torch.float32, (4,)),
    'prompt_boxes': ('prompt_boxes', torch.float32, (4,)),
    'prompt_points': ('prompt_points', torch.float32, ('K', 2)),
    'prompt_point_labels': ('prompt_point_labels', torch.int64, ('K',)),
}
_REQUIRED = ('gt_instance_masks', 'gt_instance_labels', 'gt_instance_bboxes')


@TRANSFORMS.register_module()
class PackPromptedSegInputs(PackSegInputs):
    """mmseg's ``PackSegInputs`` plus the instances and prompts in ``data_sample.gt_instances``.

    ``gt_instances`` is an MMEngine ``InstanceData`` of N instances (N may be 0,
    with every field empty but shaped):

    - ``masks``: bool ``(N, H, W)``; ``labels``: int64 ``(N,)`` class indices;
      ``bboxes``: float32 ``(N, 4)``, tight ``(x0, y0, x1, y1)`` of inclusive
      pixel indices (:class:`~mmseg_sam.datasets.GenerateInstances`);
    - when :class:`~mmseg_sam.datasets.SamplePrompts` drew them: ``prompt_boxes``
      float32 ``(N, 4)``; ``prompt_points`` float32 ``(N, K, 2)`` of ``(x, y)``;
      ``prompt_point_labels`` int64 ``(N, K)`` (1 positive, 0 negative, -1
      padding).

    All are in the pixel frame of ``gt_seg_map`` at the end of the pipeline (the
    image's frame when the annotations are loaded before ``Resize``). A geometric
    step between ``GenerateInstances`` and this one would move the image and
    ``gt_seg_map`` and not the instances: the frame that ``GenerateInstances``
    recorded (``instances_frame``: ``gt_seg_map``'s shape and checksum,
    ``img_shape``, ``flip``) must be the sample's frame here, else it is refused.
    ``gt_sem_seg``, the inputs and the meta keys are packed as ``PackSegInputs``
    does.

    Args:
        meta_keys: as ``PackSegInputs``.

    Raises:
        ValueError: when the instance keys are missing or their shapes disagree
            with each other or with ``gt_seg_map``, or a step after
            ``GenerateInstances`` moved the sample (``RandomFlip``, ``Resize``,
            ``RandomCrop``, ``Pad``, ``RandomRotate``), naming the sample's files.
    """

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        """Pack like ``PackSegInputs`` and add ``gt_instances``."""
        missing = [key for key in _REQUIRED if key not in results]
        if missing:
            raise ValueError(
                f'PackPromptedSegInputs needs {missing} for {sample_files(results)}: put GenerateInstances '
                '(and SamplePrompts) before it'
            )
        masks = results['gt_instance_masks']
        n = len(masks)
        h, w = masks.shape[1:] if masks.ndim == 3 else (-1, -1)
        k = np.shape(results['prompt_points'])[1] if 'prompt_points' in results else None
        sizes = {'H': h, 'W': w, 'K': k}
        seg = results.get('gt_seg_map')
        if seg is not None and seg.shape[:2] != (h, w):
            raise ValueError(
                f'{sample_files(results)}: gt_instance_masks {masks.shape} are not in the frame of '
                f'gt_seg_map {seg.shape}: put GenerateInstances after every transform that moves the image '
                'or the mask (Resize, RandomCrop, RandomFlip, Pad, RandomRotate)'
            )
        if INSTANCES_FRAME in results and seg is not None:
            changes = frame_changes(results[INSTANCES_FRAME], results)
            if changes:
                raise ValueError(
                    f'{sample_files(results)}: a pipeline step after GenerateInstances moved the image and '
                    f'gt_seg_map but not the instance masks and prompts ({"; ".join(changes)}): put '
                    'GenerateInstances (and SamplePrompts) after every transform that moves the image or the '
                    'mask (Resize, RandomCrop, RandomFlip, Pad, RandomRotate)'
                )
        packed = super().transform(results)
        instances = InstanceData()
        for key, (field, dtype, tail) in _FIELDS.items():
            if key not in results:
                continue
            value = np.asarray(results[key])
            expected = (n, *(sizes.get(d, d) for d in tail))
            if value.shape != expected:
                raise ValueError(
                    f'{sample_files(results)}: {key} has shape {value.shape}, expected {expected} '
                    f'(N={n} instances)'
                )
            setattr(instances, field, torch.from_numpy(np.ascontiguousarray(value)).to(dtype))
        packed['data_samples'].gt_instances = instances
        return packed
