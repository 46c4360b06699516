from .atomic_local_backend import AtomicLocalBackend, atomic_write, remove_stale_temp_files
from .weights_only_loader import load_local_checkpoint, register_weights_only_loader

register_weights_only_loader()

__all__ = [
    'AtomicLocalBackend',
    'atomic_write',
    'load_local_checkpoint',
    'register_weights_only_loader',
    'remove_stale_temp_files',
]
