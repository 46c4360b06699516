"""Input handling shared by the binary metrics: foreground probabilities, labels, valid pixels."""

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.structures import BaseDataElement
from torch import Tensor

__all__ = ['BaseBinaryMetric', 'foreground_probability']


def foreground_probability(seg_logits: Tensor) -> Tensor:
    """Foreground probability map from a data sample's ``seg_logits``.

    ``EncoderDecoder.postprocess_result`` stores ``seg_logits`` at the original image
    size. What it stores depends on the number of channels:

    - 1 channel (binary head, ``out_channels=1``): ``sigmoid(logits)``, already a
      probability. It is returned as is (applying a sigmoid again would squash it
      into [0.5, 0.73]), after checking that it lies in [0, 1].
    - 2 channels (background, foreground): raw scores; the foreground probability
      is ``softmax(seg_logits, dim=0)[1]``. For a ``mask_classification`` head with
      ``num_classes=2`` the scores are the semantic scores ``s`` and this is
      ``sigmoid(s_1 - s_0)``, which agrees with the argmax at 0.5.

    Args:
        seg_logits: (C, H, W) with C = 1 or 2.

    Returns:
        Tensor: (H, W) float64 foreground probabilities on the CPU.
    """
    if not isinstance(seg_logits, Tensor) or seg_logits.ndim != 3:
        shape = tuple(seg_logits.shape) if isinstance(seg_logits, Tensor) else type(seg_logits).__name__
        raise ValueError(f'seg_logits must be a (C, H, W) tensor, got {shape}')
    scores = seg_logits.detach().to(device='cpu', dtype=torch.float64)
    channels = scores.shape[0]
    if channels == 1:
        low, high = scores.min().item(), scores.max().item()
        if low < 0 or high > 1:
            raise ValueError(
                f'1-channel seg_logits must hold probabilities in [0, 1] (EncoderDecoder.postprocess_result '
                f'stores sigmoid(logits) for out_channels=1), got values in [{low:.4g}, {high:.4g}]'
            )
        return scores[0]
    if channels == 2:
        return scores.softmax(dim=0)[1]
    raise ValueError(
        f'seg_logits of shape {tuple(seg_logits.shape)}: this metric is binary and needs 1 channel '
        '(foreground probability) or 2 (background, foreground scores); use IoUMetric for multi-class'
    )


class BaseBinaryMetric(BaseMetric):
    """Base of the per-image metrics of binary segmentation from foreground probabilities.

    ``process`` turns every data sample into numpy maps at the original image size:
    the foreground probability (see :func:`foreground_probability`), the foreground
    mask ``label == 1`` and the valid mask ``label != ignore_index``, and appends
    exactly one entry per image to ``self.results`` (mmengine's distributed
    ``collect_results`` drops padded samples by counting entries). Subclasses
    implement :meth:`process_image` and ``compute_metrics``.

    Labels must be 0 (background), 1 (foreground) or ``ignore_index``; datasets
    whose masks are 0/255 convert them first (``tools/dataset_converters``).

    Args:
        ignore_index: label of pixels that no metric sees.
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed collection.
        prefix: prefix of the metric names in the result dict.
        collect_dir: temporary folder of the CPU collection.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        collect_device: str = 'cpu',
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or ignore_index in (0, 1):
            raise ValueError(
                f'ignore_index must be an int other than the labels 0 and 1, got {ignore_index!r}'
            )
        self.ignore_index = ignore_index

    def process(self, data_batch: Any, data_samples: Sequence[dict | BaseDataElement]) -> None:
        """Store one result per data sample (see :meth:`process_image`)."""
        for sample in data_samples:
            prob, foreground, valid = self.binary_maps(sample)
            self.results.append(self.process_image(prob, foreground, valid))

    def binary_maps(self, sample: dict | BaseDataElement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foreground probability, foreground mask and valid mask of one data sample.

        Args:
            sample: a data sample with ``seg_logits`` and ``gt_sem_seg``, as a dict
                (what mmengine's Evaluator passes) or a ``SegDataSample``.

        Returns:
            tuple: (H, W) float64 probabilities, (H, W) bool foreground, (H, W) bool valid.
        """
        if isinstance(sample, BaseDataElement):
            sample = sample.to_dict()
        for key in ('seg_logits', 'gt_sem_seg'):
            if key not in sample:
                raise KeyError(
                    f'data sample has no {key!r} (keys: {sorted(sample)}): {type(self).__name__} needs the '
                    "foreground probabilities that EncoderDecoder.predict stores in 'seg_logits' and the label"
                )
        prob = foreground_probability(sample['seg_logits']['data'])
        label = sample['gt_sem_seg']['data'].detach().cpu()
        if label.ndim == 3 and label.shape[0] == 1:
            label = label[0]  # (1, H, W) -> (H, W)
        if label.shape != prob.shape:
            raise ValueError(
                f'seg_logits are {tuple(prob.shape)} but the label is {tuple(label.shape)}: binary metrics compare '
                'at the original image size (EncoderDecoder.predict resizes seg_logits to ori_shape; load the '
                'labels after Resize in the test pipeline)'
            )
        valid = label != self.ignore_index
        values = torch.unique(label[valid]).tolist()
        bad = [v for v in values if v not in (0, 1)]
        if bad:
            raise ValueError(
                f'labels {bad} found: binary metrics expect 0 (background), 1 (foreground) and '
                f'ignore_index={self.ignore_index}'
            )
        return prob.numpy(), (label == 1).numpy(), valid.numpy()

    @abstractmethod
    def process_image(self, prob: np.ndarray, foreground: np.ndarray, valid: np.ndarray) -> Any:
        """Per-image result to store (small and picklable: it is gathered across ranks).

        Args:
            prob: (H, W) float64 foreground probabilities in [0, 1].
            foreground: (H, W) bool ground-truth foreground.
            valid: (H, W) bool, False at ``ignore_index`` pixels.
        """
