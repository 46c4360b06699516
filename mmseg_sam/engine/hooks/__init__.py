from .atomic_checkpoint_hook import AtomicCheckpointWritesHook
from .logger_hook import MainProcessLoggerHook
from .model_dataset_check_hook import ModelDatasetCheckHook, check_head_fits_dataset
from .non_finite_hook import StopOnNonFiniteHook, non_finite_tensors
from .rng_state_hook import RNGStateHook, capture_rng_states, restore_rng_states
from .sam_checkpoint_hook import SAMCheckpointHook
from .trainable_params_hook import TrainableParamsHook, summarize_parameters

__all__ = [
    'AtomicCheckpointWritesHook',
    'MainProcessLoggerHook',
    'ModelDatasetCheckHook',
    'RNGStateHook',
    'SAMCheckpointHook',
    'StopOnNonFiniteHook',
    'TrainableParamsHook',
    'capture_rng_states',
    'check_head_fits_dataset',
    'non_finite_tensors',
    'restore_rng_states',
    'summarize_parameters',
]
