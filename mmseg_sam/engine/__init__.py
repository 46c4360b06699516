from .dist import SAMDistributedDataParallel, setup_distributed, teardown_distributed
from .fileio import AtomicLocalBackend
from .hooks import (
    AtomicCheckpointWritesHook,
    ModelDatasetCheckHook,
    RNGStateHook,
    SAMCheckpointHook,
    StopOnNonFiniteHook,
    TrainableParamsHook,
)
from .optimizers import PEFTOptimWrapperConstructor, PortableAmpOptimWrapper

__all__ = [
    'AtomicCheckpointWritesHook',
    'AtomicLocalBackend',
    'ModelDatasetCheckHook',
    'PEFTOptimWrapperConstructor',
    'PortableAmpOptimWrapper',
    'RNGStateHook',
    'SAMDistributedDataParallel',
    'SAMCheckpointHook',
    'StopOnNonFiniteHook',
    'TrainableParamsHook',
    'setup_distributed',
    'teardown_distributed',
]
