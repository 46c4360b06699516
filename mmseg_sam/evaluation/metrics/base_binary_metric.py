"""Input handling shared by the binary metrics: foreground probabilities, decisions, labels, valid pixels."""

import os.path as osp
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmengine.structures import BaseDataElement
from PIL import Image
from torch import Tensor

__all__ = ['BaseBinaryMetric', 'BinaryMaps', 'check_threshold', 'foreground_probability']


class BinaryMaps(NamedTuple):
    """One image's maps at its original size, as the binary metrics read them."""

    prob: np.ndarray  # (H, W) float64 foreground probability in [0, 1]
    pred: np.ndarray  # (H, W) bool: the model's decision (pred_sem_seg == 1, the head's threshold)
    foreground: np.ndarray  # (H, W) bool ground-truth foreground
    valid: np.ndarray  # (H, W) bool, False at ignore_index pixels


def check_threshold(threshold: float | None) -> float | None:
    """``None`` (the model's decision) or a probability threshold in [0, 1)."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise ValueError(
            f"threshold must be None (use the model's decision, decode_head.threshold) or a float in [0, 1), "
            f'got {threshold!r}'
        )
    return float(threshold)


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

    ``process`` turns every data sample into numpy maps at the original image size
    (:class:`BinaryMaps`): the foreground probability (see
    :func:`foreground_probability`), the model's decision ``pred_sem_seg == 1`` (for
    a 1-channel head the head's ``threshold``, the same that ``tools/infer.py`` and
    ``--show-dir`` use), the foreground mask ``label == 1`` and the valid mask
    ``label != ignore_index``, and appends exactly one entry per image to
    ``self.results`` (mmengine's distributed ``collect_results`` drops padded
    samples by counting entries). Subclasses implement :meth:`process_image` and
    ``compute_metrics``.

    With ``output_dir`` (``tools/test.py --out DIR``) every image's prediction is
    written as mmseg's ``IoUMetric`` writes it, ``DIR/<image name>.png`` of class
    indices (0/1), and its foreground probability as an 8-bit grey map
    ``DIR/probabilities/<image name>.png`` (``round(255 * p)``, what the saliency and
    camouflage toolboxes read). ``format_only=True`` writes them without scoring.

    Labels must be 0 (background), 1 (foreground) or ``ignore_index``; datasets
    whose masks are 0/255 convert them first (``tools/dataset_converters``).

    Args:
        ignore_index: label of pixels that no metric sees.
        output_dir: folder for the predictions, or None.
        format_only: only write the predictions (needs ``output_dir``); the result
            dict is empty.
        keep_results: accepted for mmseg's ``tools/test.py --out``, which sets it;
            the predictions are written whenever ``output_dir`` is set.
        collect_device: ``'cpu'`` or ``'gpu'``, for distributed collection.
        prefix: prefix of the metric names in the result dict.
        collect_dir: temporary folder of the CPU collection.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        output_dir: str | None = None,
        format_only: bool = False,
        keep_results: bool = False,
        collect_device: str = 'cpu',
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or ignore_index in (0, 1):
            raise ValueError(
                f'ignore_index must be an int other than the labels 0 and 1, got {ignore_index!r}'
            )
        if format_only and not output_dir:
            raise ValueError('format_only=True writes the predictions to output_dir: set output_dir')
        if output_dir is not None and osp.exists(output_dir) and not osp.isdir(output_dir):
            raise ValueError(f'output_dir {output_dir} is a file, expected a folder')
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        self.format_only = bool(format_only)
        self.keep_results = bool(keep_results)
        self._told_threshold = False  # the explicit-threshold warning is logged once

    def process(self, data_batch: Any, data_samples: Sequence[dict | BaseDataElement]) -> None:
        """Store one result per data sample (see :meth:`process_image`); write predictions to ``output_dir``."""
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            maps = None if self.format_only else self.binary_maps(sample)  # format_only: no label needed
            if self.output_dir is not None:
                self.write_prediction(sample, None if maps is None else maps.prob)
            self.results.append(None if maps is None else self.process_image(maps))

    def write_prediction(self, sample: dict, prob: np.ndarray | None = None) -> None:
        """``output_dir/<name>.png`` (0/1 class indices) and ``output_dir/probabilities/<name>.png`` (8-bit).

        ``prob``: the sample's foreground probability when already computed (else it is computed here).
        """
        name = Path(sample.get('img_path') or f'{len(self.results):06d}').stem + '.png'
        out = Path(self.output_dir)
        (out / 'probabilities').mkdir(parents=True, exist_ok=True)
        pred = (
            sample['pred_sem_seg']['data'].detach().cpu().numpy()[0].astype(np.uint8)
        )  # (1, H, W) -> (H, W)
        Image.fromarray(pred).save(out / name)
        if prob is None:
            prob = foreground_probability(sample['seg_logits']['data']).numpy()
        Image.fromarray(np.rint(prob * 255).astype(np.uint8)).save(out / 'probabilities' / name)

    def binary_maps(self, sample: dict | BaseDataElement) -> BinaryMaps:
        """Foreground probability, decision, foreground mask and valid mask of one data sample.

        Args:
            sample: a data sample with ``seg_logits``, ``pred_sem_seg`` and
                ``gt_sem_seg``, as a dict (what mmengine's Evaluator passes) or a
                ``SegDataSample``.

        Returns:
            BinaryMaps: (H, W) maps at the original image size.
        """
        if isinstance(sample, BaseDataElement):
            sample = sample.to_dict()
        for key in ('seg_logits', 'pred_sem_seg', 'gt_sem_seg'):
            if key not in sample:
                raise KeyError(
                    f'data sample has no {key!r} (keys: {sorted(sample)}): {type(self).__name__} needs the '
                    "foreground probabilities that EncoderDecoder.predict stores in 'seg_logits', its decision "
                    "'pred_sem_seg' and the label"
                )
        prob = foreground_probability(sample['seg_logits']['data'])
        label = _squeeze(sample['gt_sem_seg']['data'].detach().cpu())
        pred = _squeeze(sample['pred_sem_seg']['data'].detach().cpu())
        for name, value in (('label', label), ('pred_sem_seg', pred)):
            if value.shape != prob.shape:
                raise ValueError(
                    f'seg_logits are {tuple(prob.shape)} but the {name} is {tuple(value.shape)}: binary metrics '
                    'compare at the original image size (EncoderDecoder.predict resizes seg_logits to ori_shape; '
                    'load the labels after Resize in the test pipeline)'
                )
        valid = label != self.ignore_index
        values = torch.unique(label[valid]).tolist()
        bad = [v for v in values if v not in (0, 1)]
        if bad:
            raise ValueError(
                f'labels {bad} found: binary metrics expect 0 (background), 1 (foreground) and '
                f'ignore_index={self.ignore_index}'
            )
        return BinaryMaps(prob.numpy(), (pred == 1).numpy(), (label == 1).numpy(), valid.numpy())

    def decide(self, maps: BinaryMaps, threshold: float | None) -> np.ndarray:
        """The foreground decision a metric scores: the model's, or ``prob > threshold`` when one is given."""
        if threshold is None:
            return maps.pred
        decision = maps.prob > threshold
        if not self._told_threshold and not np.array_equal(decision, maps.pred):
            self._told_threshold = True
            MMLogger.get_current_instance().warning(
                f"{type(self).__name__} scores prob > {threshold}, which differs from the model's decision "
                '(decode_head.threshold) that tools/infer.py and --show-dir use; set threshold=None to score '
                "the model's decision"
            )
        return decision

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only:
            MMLogger.get_current_instance().info(f'predictions written to {self.output_dir}; not scored')
            return {}
        return self.compute_scores(results)

    @abstractmethod
    def compute_scores(self, results: list) -> dict[str, float]:
        """The metric values from the per-image results."""

    @abstractmethod
    def process_image(self, maps: BinaryMaps) -> Any:
        """Per-image result to store (small and picklable: it is gathered across ranks)."""


def _squeeze(label: Tensor) -> Tensor:
    return label[0] if label.ndim == 3 and label.shape[0] == 1 else label  # (1, H, W) -> (H, W)
