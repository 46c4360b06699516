"""Stop a diverging run, and never write a checkpoint that holds NaN or infinity."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

__all__ = ['StopOnNonFiniteHook', 'non_finite_tensors']


def non_finite_tensors(tree: Any, prefix: str = '') -> Iterator[str]:
    """Names of the floating-point tensors in a nested dict / list that hold NaN or infinity."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            yield prefix or '<tensor>'
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from non_finite_tensors(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from non_finite_tensors(value, f'{prefix}.{i}' if prefix else str(i))


def _value(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


@HOOKS.register_module()
class StopOnNonFiniteHook(Hook):
    """Stop training on a non-finite loss or gradient; refuse to save a non-finite checkpoint.

    After every training iteration the hook reads the logged loss terms, the
    gradient norm when gradient clipping records it, and the trainable parameters.
    After ``patience`` consecutive iterations with a NaN or infinite loss or
    gradient, or at once when a trainable parameter is no longer finite, it raises
    ``FloatingPointError``, naming the iteration, the terms, their values and the
    learning rate, so the run ends with an error instead of training on (and
    logging NaN) to the end. It runs after the logger (the iteration is logged) and
    before ``CheckpointHook``, which deletes the oldest of ``max_keep_ckpts``
    checkpoints before it writes the next one.

    Under a loss-scaling AMP wrapper (fp16) an infinite gradient is how the loss
    scaler finds its scale: that step is skipped by the scaler, so gradients are
    not checked there (losses still are).

    Before every checkpoint is written, the model's state dict and the optimizer
    state are checked; a non-finite tensor stops the run instead of writing the
    file, so a diverged model never replaces the finite checkpoints that
    ``max_keep_ckpts`` keeps.

    Args:
        patience: consecutive iterations with a non-finite loss or gradient
            tolerated while the weights stay finite (1: stop at the first).
    """

    priority = 'LOW'  # after LoggerHook (BELOW_NORMAL), before CheckpointHook (VERY_LOW)

    def __init__(self, patience: int = 1) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f'patience must be a positive int, got {patience!r}')
        self.patience = patience
        self._bad_iterations = 0

    def after_train_iter(
        self, runner, batch_idx: int, data_batch: Any = None, outputs: dict | None = None
    ) -> None:
        bad = {
            name: _value(value)
            for name, value in (outputs or {}).items()
            if 'loss' in name and not math.isfinite(_value(value))
        }
        if self._checks_gradients(runner) and 'train/grad_norm' in runner.message_hub.log_scalars:
            grad_norm = runner.message_hub.get_scalar('train/grad_norm').current()  # logged by clip_grad
            if not math.isfinite(grad_norm):
                bad['grad_norm'] = grad_norm
        weights = self._non_finite_weights(runner)
        if not bad and not weights:
            self._bad_iterations = 0
            return
        self._bad_iterations += 1
        if weights:  # nothing to wait for: every later step and checkpoint would carry them
            shown = ', '.join(weights[:4]) + (f', ... (+{len(weights) - 4} more)' if len(weights) > 4 else '')
            bad['weights'] = f'{len(weights)} trainable tensors ({shown})'
        elif self._bad_iterations < self.patience:
            runner.logger.warning(f'non-finite values at iteration {runner.iter + 1}: {bad}')
            return
        lrs = {group: values[0] for group, values in runner.optim_wrapper.get_lr().items()}
        raise FloatingPointError(
            f'training stopped at iteration {runner.iter + 1}: non-finite {", ".join(sorted(bad))} '
            f'({", ".join(f"{k}={v}" for k, v in sorted(bad.items()))}) for {self._bad_iterations} consecutive '
            f'iteration(s) (patience={self.patience}); learning rate {lrs}. The run diverged: lower the learning '
            f'rate, check the data, or keep gradient clipping on. Checkpoints written before this iteration in '
            f'{runner.work_dir} are finite; none is written from here on.'
        )

    @staticmethod
    def _non_finite_weights(runner) -> list[str]:
        """Trainable parameters holding NaN or infinity (one device sync when all are finite)."""
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not params or bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            return []
        return [name for name, p in params if not bool(torch.isfinite(p).all())]

    @staticmethod
    def _checks_gradients(runner) -> bool:
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if hasattr(wrapper, 'optim_wrappers') else [wrapper]
        return not any(getattr(w, 'loss_scaler', None) is not None for w in wrappers)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = list(non_finite_tensors(checkpoint.get('state_dict', {}), 'state_dict'))
        bad += list(non_finite_tensors(checkpoint.get('optimizer', {}), 'optimizer'))
        if bad:
            shown = ', '.join(bad[:8]) + (f', ... (+{len(bad) - 8} more)' if len(bad) > 8 else '')
            raise FloatingPointError(
                f'refused to write a checkpoint at iteration {checkpoint.get("meta", {}).get("iter", runner.iter)}: '
                f'{len(bad)} tensors hold NaN or '
                f'infinity ({shown}); the finite checkpoints in {runner.work_dir} are kept. The run diverged: '
                'lower the learning rate or check the data.'
            )
