"""sam2 is imported when a SAM 2 module is built, not with mmseg_sam; without it the error names the install."""

import sys

import pytest

from mmseg_sam.models import sam2_modeling as lazy
from mmseg_sam.models.backbones import SAM2Hiera
from mmseg_sam.models.decode_heads import SAM2MaskDecoderHead
from tests.models.sam2_fixtures import TINY_SAM2_ARCH


def test_the_lazy_names_are_sam2s_own():
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam2_base import NO_OBJ_SCORE

    modeling = lazy.sam2_modeling()
    assert modeling.Hiera is Hiera and modeling.NO_OBJ_SCORE == NO_OBJ_SCORE
    assert SAM2MaskDecoderHead.mask_decoder_cls is MaskDecoder


def test_without_sam2_building_names_the_install(monkeypatch):
    lazy.sam2_modeling.cache_clear()
    try:
        # a None entry makes `import` raise ImportError, as a missing package does
        monkeypatch.setitem(sys.modules, 'sam2.modeling.backbones.hieradet', None)
        with pytest.raises(ImportError, match=r'sam2 package \(1\.1\.0\).*pip install hydra-core iopath'):
            SAM2Hiera(arch=TINY_SAM2_ARCH)
    finally:
        monkeypatch.undo()
        lazy.sam2_modeling.cache_clear()
    assert SAM2Hiera(arch=TINY_SAM2_ARCH).blocks  # builds again once sam2 is back


def test_sam2_class_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="'MaskDecodr' is not one of"):
        lazy.Sam2Class('MaskDecodr')
