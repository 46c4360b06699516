from .hooks import TrainableParamsHook

__all__ = ['TrainableParamsHook']
