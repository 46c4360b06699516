"""Binary (background / foreground) datasets: a generic one for custom data and the base of the benchmarks."""

from __future__ import annotations

from typing import Any

from mmseg.registry import DATASETS

from .checked_seg_dataset import CheckedSegDataset

__all__ = ['BinaryForegroundDataset', 'ConvertedBinaryDataset', 'binary_metainfo']


def binary_metainfo(foreground: str, colour: tuple[int, int, int]) -> dict:
    """``METAINFO`` of a binary dataset: classes ``('background', foreground)``, black background."""
    return dict(classes=('background', foreground), palette=[[0, 0, 0], list(colour)])


def _check_no_zero_reduction(name: str, reduce_zero_label: bool) -> None:
    if reduce_zero_label:
        raise ValueError(
            f'{name}: reduce_zero_label=True would turn the background (0) into the ignored label '
            f'255 and the foreground into class 0; a binary dataset needs reduce_zero_label=False'
        )


@DATASETS.register_module()
class BinaryForegroundDataset(CheckedSegDataset):
    """Custom binary data: a folder of images and a folder of masks.

    Layout (names pair images with masks; suffixes are configurable)::

        data_root/
          <img_path>/xxx{img_suffix}        e.g. images/train/0001.jpg
          <seg_map_path>/xxx{seg_map_suffix}  e.g. masks/train/0001.png

    Masks as most binary datasets publish them (0/255, or JPEG-compressed near
    0 and 255) must not reach mmseg as they are: mmseg ignores label 255, so the
    foreground would silently drop out of the loss. Load them with
    :class:`~mmseg_sam.datasets.LoadBinaryAnnotations`, which maps values
    ``>= threshold`` (128) to 1::

        train_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadBinaryAnnotations', threshold=128),
            dict(type='Resize', scale=(1024, 1024), keep_ratio=False, interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs'),
        ]

    Masks already stored as 0/1 class indices load with mmseg's
    ``LoadAnnotations`` (``LoadBinaryAnnotations`` refuses them, since the
    threshold would erase their foreground).

    Args:
        img_suffix: Suffix of the images.
        seg_map_suffix: Suffix of the masks (``'.png'``, ``'_mask.png'``, ...).
        reduce_zero_label: Must be False (0 is the background class).
        **kwargs: Arguments of :class:`CheckedSegDataset`.
    """

    METAINFO = binary_metainfo('foreground', (255, 64, 64))

    def __init__(
        self,
        img_suffix: str = '.jpg',
        seg_map_suffix: str = '.png',
        reduce_zero_label: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_no_zero_reduction(type(self).__name__, reduce_zero_label)
        super().__init__(
            img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs
        )


class ConvertedBinaryDataset(CheckedSegDataset):
    """Base of the binary benchmarks written by ``tools/dataset_converters/``.

    The converters store masks as 0/1 class-index PNGs, so these datasets load
    with mmseg's ``LoadAnnotations``. A subclass sets ``METAINFO`` (its
    foreground's name) and ``IMG_SUFFIX`` (the image format its converter writes).

    Args:
        img_suffix: Suffix of the images; ``None`` takes the class's ``IMG_SUFFIX``.
        seg_map_suffix: Suffix of the masks.
        reduce_zero_label: Must be False (0 is the background class).
        **kwargs: Arguments of :class:`CheckedSegDataset`.
    """

    METAINFO = binary_metainfo('foreground', (255, 64, 64))
    IMG_SUFFIX = '.jpg'

    def __init__(
        self,
        img_suffix: str | None = None,
        seg_map_suffix: str = '.png',
        reduce_zero_label: bool = False,
        **kwargs: Any,
    ) -> None:
        _check_no_zero_reduction(type(self).__name__, reduce_zero_label)
        super().__init__(
            img_suffix=self.IMG_SUFFIX if img_suffix is None else img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=False,
            **kwargs,
        )
