from .benchmarks import (
    CAMODataset,
    CHAMELEONDataset,
    COD10KDataset,
    CVCClinicDBDataset,
    ISIC2017Dataset,
    ISTDDataset,
    KvasirSEGDataset,
    LeafDiseaseDataset,
    MassachusettsRoadsDataset,
    SBUDataset,
)
from .binary_foreground import BinaryForegroundDataset, ConvertedBinaryDataset
from .binary_transforms import LoadBinaryAnnotations
from .checked_seg_dataset import CheckedSegDataset
from .coco_instances import COCOInstanceSegDataset, LoadCOCOInstances
from .instance_ids import LoadInstanceIdAnnotations
from .instances import GenerateInstances, image_rng, masks_to_boxes
from .packing import PackPromptedSegInputs
from .prompts import SamplePrompts
from .seeded import DrawKeyedDatasetMixin, DrawKeyedIndex, SeededDefaultSampler, SeededInfiniteSampler
from .synthetic import generate_synthetic_dataset
from .trans10k import Trans10KV1Dataset, Trans10KV2Dataset
from .transforms import CheckSegSample

__all__ = [
    'CheckSegSample',
    'generate_synthetic_dataset',
    'CheckedSegDataset',
    'BinaryForegroundDataset',
    'ConvertedBinaryDataset',
    'LoadBinaryAnnotations',
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
    'Trans10KV1Dataset',
    'Trans10KV2Dataset',
    'COCOInstanceSegDataset',
    'LoadCOCOInstances',
    'LoadInstanceIdAnnotations',
    'GenerateInstances',
    'SamplePrompts',
    'PackPromptedSegInputs',
    'DrawKeyedDatasetMixin',
    'DrawKeyedIndex',
    'SeededDefaultSampler',
    'SeededInfiniteSampler',
    'image_rng',
    'masks_to_boxes',
]
