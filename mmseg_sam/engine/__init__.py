from .hooks import SAMCheckpointHook, TrainableParamsHook
from .optimizers import PEFTOptimWrapperConstructor

__all__ = ['SAMCheckpointHook', 'PEFTOptimWrapperConstructor', 'TrainableParamsHook']
