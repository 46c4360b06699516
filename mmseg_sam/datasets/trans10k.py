"""Trans10K transparent-object segmentation, v1 (things / stuff) and v2 (11 fine-grained classes)."""

from __future__ import annotations

from typing import Any

from mmseg.registry import DATASETS

from .checked_seg_dataset import CheckedSegDataset

__all__ = ['Trans10KV1Dataset', 'Trans10KV2Dataset', 'TRANS10K_V1_METAINFO', 'TRANS10K_V2_METAINFO']

TRANS10K_V1_METAINFO = dict(
    classes=('background', 'things', 'stuff'),
    palette=[[0, 0, 0], [255, 0, 0], [255, 255, 255]],
)

# Class names and colours of Trans2Seg (Xie et al. 2021), the code released with
# Trans10K-v2 ("Glass Bow" there is the glass bowl). Masks drawn in these colours
# are mapped to the class of their colour by tools/dataset_converters/trans10k_v2.py.
TRANS10K_V2_METAINFO = dict(
    classes=(
        'background',
        'shelf',
        'jar or tank',
        'freezer',
        'window',
        'glass door',
        'eyeglass',
        'cup',
        'floor glass',
        'glass bowl',
        'water bottle',
        'storage box',
    ),
    palette=[
        [0, 0, 0],
        [120, 120, 70],
        [235, 255, 7],
        [6, 230, 230],
        [204, 255, 4],
        [120, 120, 120],
        [140, 140, 140],
        [255, 51, 7],
        [224, 5, 255],
        [204, 5, 255],
        [150, 5, 61],
        [4, 250, 7],
    ],
)


class _Trans10KDataset(CheckedSegDataset):
    """Trans10K as written by the converters: ``.jpg`` images, class-index ``.png`` masks."""

    def __init__(
        self,
        img_suffix: str = '.jpg',
        seg_map_suffix: str = '.png',
        reduce_zero_label: bool = False,
        **kwargs: Any,
    ) -> None:
        if reduce_zero_label:
            raise ValueError(
                f'{type(self).__name__}: background is class 0 and is evaluated in mIoU; '
                f'reduce_zero_label must be False'
            )
        super().__init__(
            img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs
        )


@DATASETS.register_module()
class Trans10KV1Dataset(_Trans10KDataset):
    """Trans10K-v1: background, things (cups, bottles, ...), stuff (windows, glass walls, ...).

    Splits written by ``tools/dataset_converters/trans10k_v1.py``: train 5000,
    val 1000, test 4428 (the release's easy and hard subsets merged; the
    converter also writes ``splits/{val,test}_{easy,hard}.txt`` to evaluate them
    apart through ``ann_file``).
    """

    METAINFO = TRANS10K_V1_METAINFO


@DATASETS.register_module()
class Trans10KV2Dataset(_Trans10KDataset):
    """Trans10K-v2: 11 fine-grained transparent classes + background.

    Splits written by ``tools/dataset_converters/trans10k_v2.py``: train 5000,
    val 1000, test 4428.
    """

    METAINFO = TRANS10K_V2_METAINFO
