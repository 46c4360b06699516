from .trainable_params_hook import TrainableParamsHook, summarize_parameters

__all__ = ['TrainableParamsHook', 'summarize_parameters']
