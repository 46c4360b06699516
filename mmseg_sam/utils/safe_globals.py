"""Let torch.load(weights_only=True) read the checkpoints MMEngine writes.

torch >= 2.6 loads with ``weights_only=True`` by default, and MMEngine 0.10.7 calls
``torch.load`` without the argument, so resuming, ``load_from`` and ``tools/test.py``
fail on MMEngine's own checkpoints (its message hub pickles ``HistoryBuffer`` objects
holding numpy arrays and scalars). Instead of turning ``weights_only`` off, which
would let a crafted checkpoint run code, exactly the classes MMEngine stores are
allow-listed.

One more entry is needed: a ``HistoryBuffer`` pickles references to its statistics
methods as ``getattr(HistoryBuffer, 'min')``. The real ``getattr`` would let a crafted
checkpoint reach arbitrary attributes (and from there code), so ``builtins.getattr``
is mapped to :func:`history_buffer_getattr`, which resolves only those methods.
"""

import pickle

import numpy as np
import torch

__all__ = ['MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoint_globals']


def _numpy_globals() -> list:
    """numpy's array/scalar reconstructors and the dtype classes of numeric types."""
    try:  # numpy >= 2 keeps them in numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = {
        type(np.dtype(t))
        for t in (
            np.bool_,
            np.int8,
            np.int16,
            np.int32,
            np.int64,
            np.uint8,
            np.uint16,
            np.uint32,
            np.uint64,
            np.float16,
            np.float32,
            np.float64,
        )
    }
    return [_reconstruct, scalar, np.ndarray, np.dtype, *sorted(dtype_classes, key=str)]


# HistoryBuffer._set_default_statistics registers these; custom ones come from
# HistoryBuffer.register_statistics and are read from the class at load time.
_DEFAULT_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def history_buffer_getattr(obj: object, name: str) -> object:
    """Stand-in for ``builtins.getattr`` while unpickling: HistoryBuffer statistics only.

    Raises:
        pickle.UnpicklingError: for any other object or attribute.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = _DEFAULT_STATISTICS | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics methods '
        f'({sorted(allowed)}) may be looked up while loading'
    )


def _mmengine_globals() -> list:
    from mmengine.logging.history_buffer import HistoryBuffer

    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr')]


MMENGINE_CHECKPOINT_GLOBALS: list = []


def allow_mmengine_checkpoint_globals() -> list:
    """Add the classes in MMEngine checkpoints to torch's weights_only allow-list.

    Idempotent. A no-op on torch versions without ``add_safe_globals``.

    Returns:
        list: the allow-listed objects.
    """
    if not MMENGINE_CHECKPOINT_GLOBALS:
        MMENGINE_CHECKPOINT_GLOBALS.extend(_numpy_globals() + _mmengine_globals())
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(MMENGINE_CHECKPOINT_GLOBALS)
    return MMENGINE_CHECKPOINT_GLOBALS
