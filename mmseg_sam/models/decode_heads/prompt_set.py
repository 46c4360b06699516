"""The prompts of a prompted SAM and the mapping between the ground truth's frame and the model input.

:class:`PromptSet` carries one image's prompts in the model input's frame, as SAM's prompt
encoder takes them. The helpers read a packed sample's instances and prompts
(``data_sample.gt_instances``, see :class:`~mmseg_sam.datasets.PackPromptedSegInputs`) and
map coordinates from the frame of the packed ground truth into the input, as
``SamPredictor``'s ``apply_coords`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.structures import InstanceData
from torch import Tensor

__all__ = ['PromptSet', 'first_prompts', 'frame_scale', 'sample_instances', 'sample_source', 'to_input']


class PromptSet:
    """The prompts of one image's N instances in the model's input frame, as SAM's prompt encoder takes them.

    Attributes:
        points: ``(coords (N, K, 2), labels (N, K))`` or None.
        boxes: (N, 4) xyxy or None.
        mask_input: (N, 1, 4h, 4w) low-resolution logits or None.
    """

    def __init__(
        self,
        points: tuple[Tensor, Tensor] | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
    ) -> None:
        self.points, self.boxes, self.mask_input = points, boxes, mask_input

    @property
    def ambiguous(self) -> bool:
        """A single point and nothing else: SAM predicts its three multimask outputs."""
        return self.boxes is None and self.points is not None and self.points[0].shape[1] == 1

    def add_points(self, coords: Tensor, labels: Tensor) -> PromptSet:
        """These prompts with (N, k, 2) / (N, k) more points appended."""
        if self.points is not None:
            coords = torch.cat([self.points[0], coords], dim=1)
            labels = torch.cat([self.points[1], labels], dim=1)
        return PromptSet((coords, labels), self.boxes, self.mask_input)

    def with_mask(self, mask_input: Tensor | None) -> PromptSet:
        return PromptSet(self.points, self.boxes, mask_input)

    def select(self, rows: slice) -> PromptSet:
        """The prompts of instances ``rows`` only."""
        points = None if self.points is None else (self.points[0][rows], self.points[1][rows])
        boxes = None if self.boxes is None else self.boxes[rows]
        mask_input = None if self.mask_input is None else self.mask_input[rows]
        return PromptSet(points, boxes, mask_input)


def sample_source(sample: Any) -> str:
    return str(sample.metainfo.get('seg_map_path') or sample.metainfo.get('img_path') or '<unknown sample>')


def sample_instances(sample: Any, ignore_index: int) -> tuple[InstanceData, Tensor, tuple[int, int]]:
    """A sample's ``gt_instances``, its valid pixels (H, W) and the image's ``img_shape`` (pre-padding)."""
    if 'gt_instances' not in sample:
        raise ValueError(
            f'{sample_source(sample)} has no gt_instances: a prompted model needs instances and prompts in its '
            'pipeline (GenerateInstances or an instance loader, SamplePrompts, PackPromptedSegInputs)'
        )
    inst = sample.gt_instances
    size = tuple(inst.masks.shape[-2:])
    if 'gt_sem_seg' in sample:
        label = sample.gt_sem_seg.data[0, : size[0], : size[1]]  # training batches pad gt_sem_seg
        valid = label != ignore_index
    else:
        valid = torch.ones(size, dtype=torch.bool, device=inst.masks.device)
    if tuple(valid.shape) != size:
        raise ValueError(
            f'{sample_source(sample)}: gt_sem_seg {tuple(valid.shape)} and the instance masks {size} are not one frame'
        )
    img_shape = tuple(sample.metainfo.get('img_shape', size))[:2]
    return inst, valid, img_shape


def frame_scale(img_shape: tuple[int, int], size: Sequence[int]) -> tuple[float, float]:
    """(x, y) factors from the masks' frame to the model input (``SamPredictor``'s ``apply_coords``)."""
    return img_shape[1] / size[1], img_shape[0] / size[0]


def to_input(coords: Tensor, scale: tuple[float, float]) -> Tensor:
    """(..., 2) (x, y) in the masks' frame -> the input frame."""
    return coords * coords.new_tensor(scale)


def first_prompts(
    inst: InstanceData, keep: Tensor, kind: str, scale: tuple[float, float], sample: Any
) -> PromptSet:
    """The sampled box or points of the instances where ``keep``, in the input frame."""
    if kind == 'box':
        if 'prompt_boxes' not in inst:
            raise ValueError(
                f'{sample_source(sample)}: box prompts asked for, but SamplePrompts gave no prompt_boxes'
            )
        boxes = inst.prompt_boxes[keep].float()  # (N, 4) xyxy
        return PromptSet(boxes=to_input(boxes.reshape(-1, 2, 2), scale).reshape(-1, 4))
    if 'prompt_points' not in inst or inst.prompt_points.shape[1] == 0:
        raise ValueError(
            f'{sample_source(sample)}: point prompts asked for (train_prompting box_prob < 1), but SamplePrompts gave '
            'no points: set num_pos_points >= 1'
        )
    coords = to_input(inst.prompt_points[keep].float(), scale)
    return PromptSet(points=(coords, inst.prompt_point_labels[keep].long()))
