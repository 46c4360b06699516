"""Auxiliary losses of PEFT layers (Conv-LoRA's load balancing): one explicit path to the loss dict.

A layer reports a loss with :func:`report_aux_loss` during its forward; whoever computes
the training loss opens :func:`collect_aux_losses` around the forward and adds what it
collected::

    with collect_aux_losses() as aux:
        feats = backbone(images)
    loss = task_loss(feats) + sum(aux.values())

Nothing is stored on the modules. A forward outside such a block reports nowhere: in
evaluation, and when gradient checkpointing recomputes a block during backward (the
block that collected has closed by then), so a recompute never reports a loss twice.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor

__all__ = ['collect_aux_losses', 'report_aux_loss']

_SINK: ContextVar[dict[str, Tensor] | None] = ContextVar('mmseg_sam_aux_losses', default=None)


@contextmanager
def collect_aux_losses() -> Iterator[dict[str, Tensor]]:
    """Collect the auxiliary losses reported by the forwards run inside the block.

    Yields:
        dict[str, Tensor]: filled while the block runs; losses of one name are summed
        (one per Conv-LoRA layer, for instance).
    """
    losses: dict[str, Tensor] = {}
    token = _SINK.set(losses)
    try:
        yield losses
    finally:
        _SINK.reset(token)


def report_aux_loss(name: str, value: Tensor) -> None:
    """Add ``value`` to the loss ``name`` of the enclosing :func:`collect_aux_losses`, if any."""
    sink = _SINK.get()
    if sink is not None:
        sink[name] = sink[name] + value if name in sink else value
