"""A horizontal-flip test-time-augmentation pipeline derived from a test pipeline."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from .roles import is_annotation_step

__all__ = ['flip_tta_pipeline']


def flip_tta_pipeline(test_pipeline: Sequence[Mapping]) -> list[dict]:
    """``tta_pipeline`` for ``tools/test.py --tta``: the test pipeline, twice (as is, flipped).

    SAM's encoder runs at one input size, so the augmentation is a horizontal flip
    at the test pipeline's own size (mmseg's multi-scale resizes do not apply).
    The flip is inserted before the annotation loader (as in mmseg's own
    ``tta_pipeline``s, so the ground truth stays at the original size and
    orientation); ``SAMSegTTAModel`` un-flips and averages the views.

    Args:
        test_pipeline: transforms starting with ``LoadImageFromFile`` and ending
            with ``PackSegInputs``.

    Returns:
        list[dict]: ``[LoadImageFromFile, TestTimeAug(...)]``.

    Raises:
        ValueError: the pipeline does not start and end as above (names its types).
    """
    steps = [dict(copy.deepcopy(t)) for t in test_pipeline]
    types = [t.get('type') for t in steps]
    if len(steps) < 2 or types[0] != 'LoadImageFromFile' or types[-1] != 'PackSegInputs':
        raise ValueError(
            f'cannot derive a tta_pipeline from the test pipeline {types}: expected it to start with '
            "'LoadImageFromFile' and end with 'PackSegInputs'; set cfg.tta_pipeline yourself"
        )
    middle = steps[1:-1]
    flip = [
        dict(type='RandomFlip', prob=0.0, direction='horizontal'),
        dict(type='RandomFlip', prob=1.0, direction='horizontal'),
    ]
    at = next((i for i, t in enumerate(middle) if is_annotation_step(t)), len(middle))
    stages = [[t] for t in middle[:at]] + [flip] + [[t] for t in middle[at:]] + [[steps[-1]]]
    return [steps[0], dict(type='TestTimeAug', transforms=stages)]
