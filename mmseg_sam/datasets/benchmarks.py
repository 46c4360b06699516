"""The binary benchmarks of the SAM-PEFT papers, as converted by ``tools/dataset_converters/``.

Every dataset reads mmseg's layout with 0/1 class-index PNG masks::

    data/<name>/img_dir/{split}/<name>{IMG_SUFFIX}
    data/<name>/ann_dir/{split}/<name>.png

Datasets trained together (COD10K + CAMO, Kvasir + CVC-ClinicDB) share their
``METAINFO``, as mmengine's ``ConcatDataset`` requires.
"""

from __future__ import annotations

from mmseg.registry import DATASETS

from .binary_foreground import ConvertedBinaryDataset, binary_metainfo

__all__ = [
    'COD10KDataset',
    'CAMODataset',
    'CHAMELEONDataset',
    'SBUDataset',
    'ISTDDataset',
    'KvasirSEGDataset',
    'CVCClinicDBDataset',
    'ISIC2017Dataset',
    'LeafDiseaseDataset',
    'MassachusettsRoadsDataset',
]

CAMOUFLAGE_METAINFO = binary_metainfo('camouflaged', (255, 128, 0))
SHADOW_METAINFO = binary_metainfo('shadow', (128, 128, 255))
POLYP_METAINFO = binary_metainfo('polyp', (255, 64, 64))
LESION_METAINFO = binary_metainfo('lesion', (255, 0, 255))
DISEASE_METAINFO = binary_metainfo('disease', (255, 255, 0))
ROAD_METAINFO = binary_metainfo('road', (255, 255, 255))


@DATASETS.register_module()
class COD10KDataset(ConvertedBinaryDataset):
    """COD10K camouflaged objects (splits train: 3040, test: 2026 camouflaged images).

    Written by ``tools/dataset_converters/cod10k.py`` from COD10K-v3.
    """

    METAINFO = CAMOUFLAGE_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class CAMODataset(ConvertedBinaryDataset):
    """CAMO camouflaged objects (train: 1000, test: 250).

    Written by ``tools/dataset_converters/camo.py`` from CAMO-V.1.0-CVIU2019.
    """

    METAINFO = CAMOUFLAGE_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class CHAMELEONDataset(ConvertedBinaryDataset):
    """CHAMELEON camouflaged animals (test: 76), a test-only set.

    Written by ``tools/dataset_converters/chameleon.py``.
    """

    METAINFO = CAMOUFLAGE_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class SBUDataset(ConvertedBinaryDataset):
    """SBU-Shadow (train: 4089, test: 638).

    Written by ``tools/dataset_converters/sbu.py`` from SBU-shadow.
    """

    METAINFO = SHADOW_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class ISTDDataset(ConvertedBinaryDataset):
    """ISTD shadow detection (train: 1330, test: 540; PNG images).

    Written by ``tools/dataset_converters/istd.py`` from ISTD_Dataset (A: shadow
    image, B: shadow mask; the shadow-free C images are not used).
    """

    METAINFO = SHADOW_METAINFO
    IMG_SUFFIX = '.png'


@DATASETS.register_module()
class KvasirSEGDataset(ConvertedBinaryDataset):
    """Kvasir-SEG polyps, PraNet split (train: 900, test: 100).

    Written by ``tools/dataset_converters/kvasir_seg.py``.
    """

    METAINFO = POLYP_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class CVCClinicDBDataset(ConvertedBinaryDataset):
    """CVC-ClinicDB polyps, PraNet split (train: 550, test: 62; PNG images).

    Written by ``tools/dataset_converters/cvc_clinicdb.py`` (the release's TIFFs
    are re-encoded as PNG).
    """

    METAINFO = POLYP_METAINFO
    IMG_SUFFIX = '.png'


@DATASETS.register_module()
class ISIC2017Dataset(ConvertedBinaryDataset):
    """ISIC 2017 skin lesions, task 1 (train: 2000, val: 150, test: 600).

    Written by ``tools/dataset_converters/isic2017.py``.
    """

    METAINFO = LESION_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class LeafDiseaseDataset(ConvertedBinaryDataset):
    """Leaf disease segmentation (train: 498, test: 90, the release's valid split).

    Written by ``tools/dataset_converters/leaf_disease.py``.
    """

    METAINFO = DISEASE_METAINFO
    IMG_SUFFIX = '.jpg'


@DATASETS.register_module()
class MassachusettsRoadsDataset(ConvertedBinaryDataset):
    """Massachusetts Roads (train: 1108, val: 14, test: 49; 1500x1500 PNG images).

    Written by ``tools/dataset_converters/massachusetts_roads.py``.
    """

    METAINFO = ROAD_METAINFO
    IMG_SUFFIX = '.png'
