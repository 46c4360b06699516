from .sam_checkpoint_hook import SAMCheckpointHook
from .trainable_params_hook import TrainableParamsHook, summarize_parameters

__all__ = ['SAMCheckpointHook', 'TrainableParamsHook', 'summarize_parameters']
