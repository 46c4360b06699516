"""The ``sam2`` package's modeling code, imported when a SAM 2 module is first built.

``import mmseg_sam`` does not import sam2 (nor hydra and omegaconf, which
``sam2/__init__.py`` imports): the SAM 2 family's classes (``SAM2Hiera``, its heads,
VPT's prompted Hiera attention) call :func:`sam2_modeling` when they are built or run.
A machine without sam2 still imports mmseg_sam and runs the SAM family; building a
SAM 2 module there raises the install command.
"""

import functools
import importlib
from types import SimpleNamespace
from typing import Any

__all__ = ['SAM2_INSTALL', 'Sam2Class', 'sam2_modeling']

SAM2_INSTALL = (
    'pip install hydra-core iopath && SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0 '
    '(`make setup` does this)'
)

# name -> (module, attribute) of what mmseg_sam uses from sam2
_NAMES = {
    'Hiera': ('sam2.modeling.backbones.hieradet', 'Hiera'),
    'MultiScaleAttention': ('sam2.modeling.backbones.hieradet', 'MultiScaleAttention'),
    'MultiScaleBlock': ('sam2.modeling.backbones.hieradet', 'MultiScaleBlock'),
    'do_pool': ('sam2.modeling.backbones.hieradet', 'do_pool'),
    'FpnNeck': ('sam2.modeling.backbones.image_encoder', 'FpnNeck'),
    'ImageEncoder': ('sam2.modeling.backbones.image_encoder', 'ImageEncoder'),
    'window_partition': ('sam2.modeling.backbones.utils', 'window_partition'),
    'window_unpartition': ('sam2.modeling.backbones.utils', 'window_unpartition'),
    'PositionEmbeddingSine': ('sam2.modeling.position_encoding', 'PositionEmbeddingSine'),
    'MaskDecoder': ('sam2.modeling.sam.mask_decoder', 'MaskDecoder'),
    'PromptEncoder': ('sam2.modeling.sam.prompt_encoder', 'PromptEncoder'),
    'TwoWayTransformer': ('sam2.modeling.sam.transformer', 'TwoWayTransformer'),
    'NO_OBJ_SCORE': ('sam2.modeling.sam2_base', 'NO_OBJ_SCORE'),
}


@functools.cache
def sam2_modeling() -> SimpleNamespace:
    """sam2's modeling classes and functions that mmseg_sam uses, by name (imported on the first call).

    Raises:
        ImportError: sam2 (1.1.0) or one of its modeling dependencies (hydra-core,
            iopath) is missing, with the command that installs them.
    """
    try:
        found = {
            name: getattr(importlib.import_module(module), attr) for name, (module, attr) in _NAMES.items()
        }
    except ImportError as err:
        raise ImportError(
            f'the SAM 2 modules of mmseg_sam need the official sam2 package (1.1.0) and its modeling '
            f'dependencies ({err}): {SAM2_INSTALL}'
        ) from err
    return SimpleNamespace(**found)


class Sam2Class:
    """A class attribute that reads a sam2 class on access: ``mask_decoder_cls = Sam2Class('MaskDecoder')``."""

    def __init__(self, name: str) -> None:
        if name not in _NAMES:
            raise ValueError(f'Sam2Class name {name!r} is not one of {sorted(_NAMES)}')
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return getattr(sam2_modeling(), self.name)
