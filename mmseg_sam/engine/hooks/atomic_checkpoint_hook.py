"""Checkpoint writes that never leave a half-written file in place of the last good one."""

import re
from pathlib import Path

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmseg.registry import HOOKS

from ..fileio.atomic_local_backend import atomic_write, remove_stale_temp_files

__all__ = ['AtomicCheckpointWritesHook']

_POINTER = 'last_checkpoint'
_BACKEND = 'local_atomic'


def _is_local(path: str | None) -> bool:
    return path is None or '://' not in str(path)  # s3://, petrel://, http:// ... are not


@HOOKS.register_module()
class AtomicCheckpointWritesHook(Hook):
    """Make the runner's CheckpointHook(s) write checkpoints atomically.

    MMEngine's local backend writes a checkpoint in place, so a crash, a SIGKILL or a
    full disk during the write leaves a truncated ``iter_N.pth``; with
    ``max_keep_ckpts`` the previous file may already be gone. This hook, before the
    run, gives every CheckpointHook that writes to a local folder and has no
    ``backend_args`` of its own the ``'local_atomic'`` backend
    (:class:`~mmseg_sam.engine.fileio.AtomicLocalBackend`: temp file in the same
    folder, fsync, ``os.replace``), so a checkpoint file is always a complete one.

    The ``last_checkpoint`` pointer that ``--resume`` follows is written by
    CheckpointHook itself with a plain ``open(..., 'w')``. After each save this hook
    rewrites it atomically and durably (fsync), and before a resume it checks it: a
    pointer left empty by a crash between truncation and write, or naming a file
    that does not exist, is repaired to the newest checkpoint named like the
    CheckpointHook's ``filename_tmpl`` (with a warning), or refused with an error
    if there is none. A pointer that is missing while such checkpoints exist (a
    kill after the first checkpoint's write and before the pointer's) is written
    to the newest of them, with a warning, instead of a silent start from scratch. Temp files left by killed processes are removed before the run.

    Args:
        warn_single_ckpt: warn when a CheckpointHook keeps only one checkpoint
            (``max_keep_ckpts=1``): MMEngine deletes the old file before writing
            the new one, so a failed write there leaves no checkpoint at all.
    """

    priority = 'LOWEST'  # after_train_iter runs after CheckpointHook's (VERY_LOW)

    def __init__(self, warn_single_ckpt: bool = True) -> None:
        self.warn_single_ckpt = warn_single_ckpt
        self._pointer_target: str | None = None

    def _checkpoint_hooks(self, runner) -> list[CheckpointHook]:
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def before_run(self, runner) -> None:
        for hook in self._checkpoint_hooks(runner):
            if hook.backend_args is None and getattr(hook, 'file_client_args', None) is None:
                if _is_local(hook.out_dir):
                    hook.backend_args = dict(backend=_BACKEND)
            elif (hook.backend_args or {}).get('backend') != _BACKEND:
                runner.logger.info(
                    f'AtomicCheckpointWritesHook: CheckpointHook has backend_args={hook.backend_args}; '
                    'its writes are left to that backend'
                )
            if self.warn_single_ckpt and hook.max_keep_ckpts == 1:
                runner.logger.warning(
                    'CheckpointHook(max_keep_ckpts=1) deletes the previous checkpoint before writing the next '
                    'one: if that write fails, no checkpoint is left. Keep at least 2.'
                )
        if is_main_process():
            for folder in self._checkpoint_folders(runner):
                for path in remove_stale_temp_files(folder):
                    runner.logger.info(f'removed {path}, left by an interrupted checkpoint write')
            if getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None:
                self._check_pointer(runner)
        barrier()  # every rank reads last_checkpoint when resuming: after the repair

    def _checkpoint_folders(self, runner) -> list[Path]:
        """Where the CheckpointHooks will write (called before the run, before they join out_dir)."""
        work_dir = Path(runner.work_dir)
        folders = {work_dir}
        for hook in self._checkpoint_hooks(runner):
            if hook.out_dir is not None and _is_local(hook.out_dir) and Path(hook.out_dir) != work_dir:
                folders.add(Path(hook.out_dir) / work_dir.name)  # as CheckpointHook.before_train joins them
        return sorted(folders)

    def _check_pointer(self, runner) -> None:
        pointer = Path(runner.work_dir) / _POINTER
        if not pointer.is_file():
            found = self._newest_checkpoint(runner)
            if found is None:
                return  # nothing to resume from: MMEngine starts from scratch
            # killed after a checkpoint was written and before CheckpointHook wrote the pointer:
            # MMEngine would start from scratch without a word
            runner.logger.warning(f'{pointer} is missing; resuming from the newest checkpoint, {found}')
            atomic_write(pointer, str(found).encode())
            return
        target = pointer.read_text().strip()
        if target and Path(target).is_file():
            return
        found = self._newest_checkpoint(runner)
        problem = f'{pointer} is empty' if not target else f'{pointer} names {target}, which does not exist'
        if found is None:
            raise FileNotFoundError(
                f'cannot resume: {problem}, and no checkpoint named like the CheckpointHook filename_tmpl is in '
                f'{[str(f) for f in self._checkpoint_folders(runner)]}; delete {pointer} to train from scratch'
            )
        runner.logger.warning(f'{problem}; resuming from the newest checkpoint, {found}')
        atomic_write(pointer, str(found).encode())

    def _newest_checkpoint(self, runner) -> Path | None:
        best: tuple[int, Path] | None = None
        for hook in self._checkpoint_hooks(runner):
            pattern = re.compile(re.escape(hook.filename_tmpl).replace(r'\{\}', r'(\d+)') + '$')
            for folder in self._checkpoint_folders(runner):
                if not folder.is_dir():
                    continue
                for entry in folder.iterdir():
                    match = pattern.match(entry.name)
                    if match and entry.is_file() and (best is None or int(match[1]) > best[0]):
                        best = (int(match[1]), entry)
        return None if best is None else best[1]

    def _sync_pointer(self, runner) -> None:
        """Rewrite ``last_checkpoint`` atomically and durably after CheckpointHook wrote it."""
        if not is_main_process():
            return
        targets = [h.last_ckpt for h in self._checkpoint_hooks(runner) if getattr(h, 'last_ckpt', None)]
        if not targets or targets[-1] == self._pointer_target:
            return
        pointer = Path(runner.work_dir) / _POINTER
        if pointer.is_file() and pointer.read_text() == str(targets[-1]):
            atomic_write(pointer, str(targets[-1]).encode())
        self._pointer_target = targets[-1]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._sync_pointer(runner)

    def after_train_epoch(self, runner) -> None:
        self._sync_pointer(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._sync_pointer(runner)
