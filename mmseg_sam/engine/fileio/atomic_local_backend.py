"""A local file backend whose writes are atomic: a file is either the old or the new one, never half."""

import contextlib
import os
import re
import secrets
from pathlib import Path

from mmengine.fileio import LocalBackend, register_backend

__all__ = ['AtomicLocalBackend', 'atomic_write', 'remove_stale_temp_files']

_TEMP_RE = re.compile(r'^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$')


def _temp_path(path: Path) -> Path:
    """A unique temp file next to ``path``; its name says which process wrote it."""
    return path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to the file descriptor ``fd``."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Replace ``path`` by ``data`` atomically.

    The data go to a temp file in the same folder (same file system), which is
    flushed and fsync'ed, then renamed over ``path`` with ``os.replace`` (atomic on
    POSIX and Windows), then the folder is fsync'ed. A crash or an error at any point
    leaves ``path`` as it was; an error removes the temp file. The file gets the
    permissions of a newly created file (``0o666`` less the umask).

    Args:
        path: the target file; missing parent folders are created.
        data: the bytes to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files of :func:`atomic_write` left in ``folder`` by processes that no longer run.

    A process killed while writing (SIGKILL, power loss) leaves its temp file; the
    target file is intact. Temp files of running processes are kept.

    Returns:
        list[Path]: the removed files.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match is None or not entry.is_file() or _is_running(int(match['pid'])):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
    return removed


def _is_running(pid: int) -> bool:
    if pid == os.getpid() or os.name == 'nt':  # on Windows, os.kill(pid, 0) would stop the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but not ours, or no way to tell: keep its file
        return True
    return True


@register_backend('local_atomic')
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local backend with atomic ``put`` / ``put_text`` (see :func:`atomic_write`).

    Select it with ``backend_args=dict(backend='local_atomic')``, e.g. in a
    CheckpointHook; :class:`~mmseg_sam.engine.hooks.AtomicCheckpointWritesHook`
    does that for every local CheckpointHook. Reading, listing and removing are
    LocalBackend's.
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))
