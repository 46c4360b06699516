"""StopOnNonFiniteHook: a diverging run stops with an error; no checkpoint with NaN replaces a finite one."""

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub

from mmseg_sam.engine import StopOnNonFiniteHook
from mmseg_sam.engine.hooks import non_finite_tensors
from tests.conftest import load_tool
from tests.user_data import write_configs, write_user_data

train_tool = load_tool('tools/train.py', 'train_tool')


def test_non_finite_tensors_are_named():
    tree = {
        'a': torch.ones(2),
        'b': {'c': torch.tensor([1.0, float('nan')]), 'd': [torch.tensor(float('inf'))]},
    }
    tree['e'] = torch.tensor([3])  # integers are never non-finite
    assert list(non_finite_tensors(tree, 'state')) == ['state.b.c', 'state.b.d.0']


def _runner(grad_norm: float | None = None, loss_scaler: object | None = None) -> SimpleNamespace:
    hub = MessageHub.get_instance(f'non_finite_{id(object())}')
    if grad_norm is not None:
        hub.update_scalar('train/grad_norm', grad_norm)
    wrapper = SimpleNamespace(get_lr=lambda: {'lr': [0.1]}, loss_scaler=loss_scaler)
    logger = SimpleNamespace(warning=lambda text: None)
    model = torch.nn.Linear(2, 1)
    return SimpleNamespace(
        message_hub=hub, optim_wrapper=wrapper, iter=6, work_dir='work', logger=logger, model=model
    )


def test_patience_counts_consecutive_non_finite_iterations():
    hook = StopOnNonFiniteHook(patience=2)
    runner = _runner()
    nan = {'loss': torch.tensor(float('nan')), 'decode.loss_ce': torch.tensor(float('nan'))}
    hook.after_train_iter(runner, 0, outputs=nan)
    hook.after_train_iter(runner, 1, outputs={'loss': torch.tensor(0.5)})  # a finite one resets the count
    hook.after_train_iter(runner, 2, outputs=nan)
    with pytest.raises(
        FloatingPointError, match=r'training stopped at iteration 7: non-finite decode\.loss_ce, loss'
    ):
        hook.after_train_iter(runner, 3, outputs=nan)


def test_gradients_are_checked_unless_a_loss_scaler_skips_their_steps():
    outputs = {'loss': torch.tensor(0.5)}
    with pytest.raises(FloatingPointError, match=r'non-finite grad_norm \(grad_norm=inf\)'):
        StopOnNonFiniteHook().after_train_iter(_runner(grad_norm=float('inf')), 0, outputs=outputs)
    StopOnNonFiniteHook().after_train_iter(
        _runner(grad_norm=float('inf'), loss_scaler=object()), 0, outputs=outputs
    )


def test_non_finite_weights_stop_at_once_and_are_never_saved():
    runner = _runner()
    with torch.no_grad():
        runner.model.weight[0, 1] = float('nan')
    with pytest.raises(
        FloatingPointError, match=r'non-finite weights \(weights=1 trainable tensors \(weight\)\)'
    ):
        StopOnNonFiniteHook(patience=10).after_train_iter(runner, 0, outputs={'loss': torch.tensor(0.5)})
    checkpoint = {'meta': {'iter': 8}, 'state_dict': runner.model.state_dict(), 'optimizer': {'state': {}}}
    with pytest.raises(
        FloatingPointError, match=r'refused to write a checkpoint at iteration 8: 1 tensors .*weight'
    ):
        StopOnNonFiniteHook().before_save_checkpoint(runner, checkpoint)


@pytest.mark.parametrize('patience', [0, True, 1.5])
def test_bad_patience(patience):
    with pytest.raises(ValueError, match='patience must be a positive int'):
        StopOnNonFiniteHook(patience=patience)


def test_a_diverged_run_keeps_its_finite_checkpoint(tmp_path, sam_checkpoint):
    """2 finite iterations (checkpoint at 2), then the learning rate jumps by 1e30 and the run diverges.

    Patience 5 tolerates non-finite losses, not non-finite weights: the run stops by
    iteration 4, before CheckpointHook would delete iter_2.pth (max_keep_ckpts=1) to
    make room for a NaN iter_4.pth.
    """
    data = tmp_path / 'data'
    write_user_data(data, {'train': [(70, 90), (64, 64)], 'val': [(67, 93)]})
    cfg = tmp_path / 'jump.py'
    cfg.write_text(f"""_base_ = [{str(write_configs(tmp_path, data, sam_checkpoint))!r}]
param_scheduler = [dict(type='MultiStepLR', milestones=[2], gamma=1e30, end=6, by_epoch=False)]
""")
    work = tmp_path / 'work'
    options = [
        'train_cfg.max_iters=6',
        'train_cfg.val_interval=100',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'custom_hooks.5.patience=5',
    ]
    with pytest.raises(FloatingPointError, match=r'training stopped at iteration [34]: non-finite .*weights'):
        with contextlib.redirect_stdout(None):
            train_tool.main([str(cfg), '--work-dir', str(work), '--cfg-options', *options])
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    state = torch.load(work / 'iter_2.pth', weights_only=True)['state_dict']
    assert not list(non_finite_tensors(state))
    assert Path(work / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
