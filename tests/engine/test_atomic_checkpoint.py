"""Checkpoint writes are atomic: an interrupted write never replaces the last good checkpoint."""

import logging
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn
from torch.utils.data import DataLoader

from mmseg_sam.engine.fileio import atomic_local_backend
from mmseg_sam.engine.fileio.atomic_local_backend import atomic_write, remove_stale_temp_files
from mmseg_sam.engine.hooks import AtomicCheckpointWritesHook
from tests.conftest import REPO


def _fail_after(monkeypatch, nbytes: int, calls_before: int = 0) -> list:
    """Make the ``calls_before + 1``-th atomic write of a checkpoint stop with an OSError after ``nbytes`` bytes.

    Small writes (the ``last_checkpoint`` pointer) pass and are not counted.
    """
    real = atomic_local_backend._write_all
    calls = []

    def write(fd, data):
        if len(data) < 1000:
            return real(fd, data)
        calls.append(len(data))
        if len(calls) <= calls_before:
            return real(fd, data)
        real(fd, memoryview(data)[:nbytes])
        raise OSError(28, 'No space left on device (simulated)')

    monkeypatch.setattr(atomic_local_backend, '_write_all', write)
    return calls


def _temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob('.*.tmp'))


def test_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / 'sub' / 'ckpt.pth'
    atomic_write(path, b'first')
    atomic_write(path, b'second')
    assert path.read_bytes() == b'second'
    assert _temp_files(path.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as an ordinary new file, not mkstemp's 0600


def test_a_write_failing_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'iter_2.pth'
    good = {'state_dict': {'w': torch.arange(1000.0)}}
    torch.save(good, path)
    _fail_after(monkeypatch, nbytes=500)
    with pytest.raises(OSError, match='No space left'):
        atomic_write(path, pickle.dumps({'state_dict': {'w': torch.zeros(1000)}}))
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['w'], good['state_dict']['w'])
    assert _temp_files(tmp_path) == []


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_the_target_intact(tmp_path):
    path = tmp_path / 'iter_4.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}}, path)
    module = REPO / 'mmseg_sam/engine/fileio/atomic_local_backend.py'
    script = textwrap.dedent(f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location('atomic_local_backend', {str(module)!r})
        m = importlib.util.module_from_spec(spec)  # without importing all of mmseg_sam: a fast start
        spec.loader.exec_module(m)
        real = m._write_all
        def slow(fd, data):
            real(fd, memoryview(data)[: len(data) // 2])
            time.sleep(600)  # killed here, half written
        m._write_all = slow
        m.atomic_write({str(path)!r}, b'x' * 1_000_000)
    """)
    proc = subprocess.Popen([sys.executable, '-c', script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not any(t.stat().st_size == 500_000 for t in _temp_files(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, 'the writer never got half-way'
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['w'], torch.ones(3))
    [temp] = _temp_files(tmp_path)
    assert f'.{proc.pid}.' in temp.name
    assert remove_stale_temp_files(tmp_path) == [temp]  # its writer is dead
    assert _temp_files(tmp_path) == []


def test_temp_files_of_running_writers_are_kept(tmp_path):
    mine = tmp_path / f'.iter_2.pth.{os.getpid()}.0123abcd.tmp'
    mine.write_bytes(b'being written')
    (tmp_path / 'unrelated.tmp').write_bytes(b'')
    assert remove_stale_temp_files(tmp_path) == []
    assert mine.exists()


# --- the hook, with a real Runner on a toy model --------------------------------------


class _Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        return {'loss': out.pow(2).mean()} if mode == 'loss' else out


def _runner(work_dir: Path, max_iters: int, resume: bool = False, **checkpoint) -> Runner:
    data = [torch.tensor([float(i), 1.0]) for i in range(8)]
    loader = DataLoader(data, batch_size=2, collate_fn=lambda batch: dict(inputs=batch))
    return Runner(
        model=_Toy(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1, **checkpoint)),
        custom_hooks=[dict(type='AtomicCheckpointWritesHook')],
        default_scope='mmseg',
        resume=resume,
        experiment_name=f'atomic_{time.monotonic_ns()}',
    )


def test_runner_checkpoints_go_through_the_atomic_backend(tmp_path, monkeypatch):
    work = tmp_path / 'work'
    calls = _fail_after(monkeypatch, nbytes=100, calls_before=2)  # iter_1, iter_2 fine; iter_3 fails
    runner = _runner(work, max_iters=4)
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    assert len(calls) == 3
    assert not (work / 'iter_3.pth').exists() and _temp_files(work) == []
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    state = _load_checkpoint(str(work / 'iter_2.pth'), map_location='cpu')
    assert state['meta']['iter'] == 2

    monkeypatch.undo()
    resumed = _runner(work, max_iters=4, resume=True)
    resumed.train()
    assert resumed.iter == 4 and (work / 'iter_4.pth').is_file()
    load_checkpoint(_Toy(), str(work / 'iter_4.pth'), map_location='cpu')


def _hook_runner(work: Path, *hooks: CheckpointHook, resume: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        hooks=list(hooks),
        work_dir=str(work),
        logger=logging.getLogger('test'),
        _resume=resume,
        _load_from=None,
    )


def test_hook_selects_the_atomic_backend_only_where_none_is_set(tmp_path, caplog):
    plain, custom = CheckpointHook(interval=1), CheckpointHook(interval=1, backend_args=dict(backend='local'))
    single = CheckpointHook(interval=1, max_keep_ckpts=1)
    with caplog.at_level(logging.WARNING, logger='test'):
        AtomicCheckpointWritesHook().before_run(_hook_runner(tmp_path, plain, custom, single))
    assert plain.backend_args == dict(backend='local_atomic') == single.backend_args
    assert custom.backend_args == dict(backend='local')
    assert 'max_keep_ckpts=1' in caplog.text and 'Keep at least 2' in caplog.text


@pytest.mark.parametrize('pointer', ['', 'names a missing file'])
def test_a_broken_last_checkpoint_pointer_is_repaired_before_resuming(tmp_path, pointer):
    for step in (2, 4, 10):
        torch.save({'meta': {'iter': step}}, tmp_path / f'iter_{step}.pth')
    (tmp_path / 'best_mIoU_iter_12.pth').write_bytes(b'')  # another naming: not a resume point
    content = str(tmp_path / 'iter_12.pth') if pointer else ''
    (tmp_path / 'last_checkpoint').write_text(content)
    iter_based = CheckpointHook(interval=1, by_epoch=False)  # iter_{}.pth
    AtomicCheckpointWritesHook().before_run(_hook_runner(tmp_path, iter_based))
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_10.pth')


def test_a_missing_pointer_next_to_checkpoints_resumes_from_the_newest(tmp_path, caplog):
    """A kill after iter_2.pth was written and before CheckpointHook wrote last_checkpoint: --resume resumes."""
    for step in (1, 2):
        torch.save({'meta': {'iter': step}}, tmp_path / f'iter_{step}.pth')
    with caplog.at_level(logging.WARNING, logger='test'):
        AtomicCheckpointWritesHook().before_run(
            _hook_runner(tmp_path, CheckpointHook(interval=1, by_epoch=False))
        )
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    assert 'last_checkpoint is missing; resuming from the newest checkpoint' in caplog.text


def test_a_missing_pointer_without_checkpoints_starts_from_scratch(tmp_path):
    AtomicCheckpointWritesHook().before_run(
        _hook_runner(tmp_path, CheckpointHook(interval=1, by_epoch=False))
    )
    assert not (tmp_path / 'last_checkpoint').exists()


def test_a_broken_pointer_without_checkpoints_is_an_error(tmp_path):
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(FileNotFoundError, match=r'last_checkpoint is empty, and no checkpoint .*delete'):
        AtomicCheckpointWritesHook().before_run(_hook_runner(tmp_path, CheckpointHook(interval=1)))
    (tmp_path / 'last_checkpoint').write_text('')
    AtomicCheckpointWritesHook().before_run(_hook_runner(tmp_path, CheckpointHook(interval=1), resume=False))
