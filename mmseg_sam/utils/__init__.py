from .checkpoint import (
    detect_format,
    hf_to_sam_state_dict,
    load_sam_component,
    load_state_dict_file,
    load_strict,
    to_sam_state_dict,
)
from .safe_globals import allow_mmengine_checkpoint_globals

__all__ = [
    'allow_mmengine_checkpoint_globals',
    'detect_format',
    'hf_to_sam_state_dict',
    'load_sam_component',
    'load_state_dict_file',
    'load_strict',
    'to_sam_state_dict',
]
