"""Access to segment_anything's modeling code, with or without torchvision.

``segment_anything/__init__.py`` imports ``SamPredictor`` and the automatic mask
generator, which import torchvision. Where torchvision is missing or broken (for
example a CUDA torchvision next to a CPU torch, which raises at import), only
``segment_anything.modeling`` is needed by mmseg_sam, and that sub-package needs
nothing but torch. This module imports it normally when the package init works, and
otherwise registers the package without running its ``__init__`` so that
``segment_anything.modeling`` still imports. In that fallback ``SamPredictor`` is
unavailable from ``segment_anything`` (it needs torchvision anyway).
"""

import importlib
import importlib.util
import sys
import types
import warnings

__all__ = [
    'Attention',
    'Block',
    'ImageEncoderViT',
    'LayerNorm2d',
    'MaskDecoder',
    'PromptEncoder',
    'TwoWayTransformer',
    'SAM_PACKAGE_INIT_LOADED',
    'window_partition',
    'window_unpartition',
]


def _import_modeling() -> tuple[types.ModuleType, bool]:
    """Import ``segment_anything.modeling``.

    Returns:
        tuple[ModuleType, bool]: the modeling module and whether the package's own
        ``__init__`` ran (False when the torchvision-free fallback was used).
    """
    try:
        return importlib.import_module('segment_anything.modeling'), True
    except (ImportError, RuntimeError, AttributeError) as err:
        init_error = err
    spec = importlib.util.find_spec('segment_anything')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('segment_anything is not installed: pip install segment-anything') from init_error
    # Drop whatever the failed import left behind, then register a bare package.
    for name in [n for n in sys.modules if n == 'segment_anything' or n.startswith('segment_anything.')]:
        del sys.modules[name]
    package = types.ModuleType('segment_anything')
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__spec__ = spec
    sys.modules['segment_anything'] = package
    warnings.warn(
        f'segment_anything imported without its package __init__ ({type(init_error).__name__}: '
        f'{init_error}); SamPredictor is unavailable but the modeling code works.',
        stacklevel=2,
    )
    return importlib.import_module('segment_anything.modeling'), False


_modeling, SAM_PACKAGE_INIT_LOADED = _import_modeling()
_image_encoder = importlib.import_module('segment_anything.modeling.image_encoder')
_common = importlib.import_module('segment_anything.modeling.common')

ImageEncoderViT = _modeling.ImageEncoderViT
MaskDecoder = _modeling.MaskDecoder
PromptEncoder = _modeling.PromptEncoder
TwoWayTransformer = _modeling.TwoWayTransformer
Block = _image_encoder.Block
Attention = _image_encoder.Attention
LayerNorm2d = _common.LayerNorm2d
window_partition = _image_encoder.window_partition
window_unpartition = _image_encoder.window_unpartition
