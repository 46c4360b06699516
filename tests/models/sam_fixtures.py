"""The tiny SAM ViT (tests/conftest.py's TINY_ARCH) as the conformance test's fixture of SAMViT."""

from mmseg_sam.models.backbones import SAMViT
from tests.conftest import TINY_ARCH, TINY_IMG
from tests.models.families import Family

# padded windows at 64x64 (a 4x4 grid, window 3), and a non-square 48x80
CONFORMANCE = {
    'SAMViT': Family(lambda **kw: SAMViT(arch=TINY_ARCH, img_size=TINY_IMG, **kw), ((64, 64), (48, 80))),
}
