from .hooks import TrainableParamsHook
from .optimizers import PEFTOptimWrapperConstructor

__all__ = ['PEFTOptimWrapperConstructor', 'TrainableParamsHook']
