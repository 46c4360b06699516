"""Load local checkpoints through MMEngine with ``weights_only=True`` and errors that name the file."""

import os
import os.path as osp
import pickle
from typing import Any

import torch
from mmengine.runner import CheckpointLoader

from ...utils.safe_globals import allow_mmengine_checkpoint_globals

__all__ = ['load_local_checkpoint', 'register_weights_only_loader']

_ESCAPE_HATCH = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


def _refused_globals(filename: str) -> list[str]:
    find = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    if find is None:
        return []
    try:
        return list(find(filename))
    except Exception:  # the file is unreadable beyond its pickle: the torch message says why
        return []


def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """Read a local checkpoint without running pickled code (MMEngine's local loader, made safe).

    ``torch.load`` is called with ``weights_only=True`` (unless the user set torch's
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), so on every torch that can allow-list
    classes (>= 2.4), not only on >= 2.6 where it is the default. What MMEngine
    checkpoints hold is allow-listed by :func:`allow_mmengine_checkpoint_globals`.

    Args:
        filename: path of the checkpoint.
        map_location: as for ``torch.load``.

    Returns:
        The unpickled checkpoint.

    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the file asks for classes or functions outside the
            allow-list (it could run code); names the file and them.
        ValueError: the file is not a readable torch checkpoint (truncated, corrupt);
            names the file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    kwargs = {} if os.environ.get(_ESCAPE_HATCH, '0') not in ('', '0') else {'weights_only': True}
    try:
        return torch.load(filename, map_location=map_location, **kwargs)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(filename)
        if not refused:  # a damaged pickle rather than a refused class
            raise pickle.UnpicklingError(f'cannot unpickle checkpoint {filename}: {err}') from err
        raise pickle.UnpicklingError(
            f'refused to load checkpoint {filename}: it holds objects ({", ".join(refused)}) that '
            'torch.load(weights_only=True) does not allow, and unpickling them could run arbitrary code. '
            'mmseg_sam allows exactly what MMEngine checkpoints hold. Load only files you trust; for one '
            f'you trust, allow its classes with torch.serialization.add_safe_globals before loading.\n'
            f'torch said: {err}'
        ) from err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise ValueError(
            f'cannot read checkpoint {filename} (truncated, corrupt or not a torch checkpoint): '
            f'{type(err).__name__}: {err}'
        ) from err


def register_weights_only_loader() -> bool:
    """Make MMEngine (``load_from``, ``--resume``, ``tools/test.py``) read local files with it.

    A no-op on torch without ``torch.serialization.add_safe_globals`` (< 2.4), where
    MMEngine's own loader stays.

    Returns:
        bool: whether the loader was registered.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return False
    allow_mmengine_checkpoint_globals()
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
    return True
