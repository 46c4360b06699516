"""What a pipeline step does, decided by its class rather than its registry name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmcv.transforms import LoadAnnotations, LoadImageFromFile
from mmseg.registry import TRANSFORMS

__all__ = ['is_annotation_step', 'is_image_loader', 'transform_class']


def transform_class(step: Mapping[str, Any] | object) -> type | None:
    """The class of a pipeline step given as a config dict (``type`` a name or a class) or an object.

    Returns:
        The class, or None when a config names a type that no registry in scope knows.
    """
    if not isinstance(step, Mapping):
        return type(step)
    kind = step.get('type')
    if isinstance(kind, type):
        return kind
    return TRANSFORMS.get(kind) if isinstance(kind, str) else None


def is_annotation_step(step: Mapping[str, Any] | object) -> bool:
    """Whether a step loads or needs the ground truth (so inference must drop it).

    True for every annotation loader (a subclass of mmcv's ``LoadAnnotations``:
    mmseg's ``LoadAnnotations``, ``LoadBinaryAnnotations``, a user's own subclass)
    and for steps that declare ``needs_annotations = True`` (``CheckSegSample``).
    """
    cls = transform_class(step)
    return cls is not None and (issubclass(cls, LoadAnnotations) or getattr(cls, 'needs_annotations', False))


def is_image_loader(step: Mapping[str, Any] | object) -> bool:
    """Whether a step loads the image from ``img_path`` (mmcv's ``LoadImageFromFile`` or a subclass)."""
    cls = transform_class(step)
    return cls is not None and issubclass(cls, LoadImageFromFile)
