"""Refuse to write a tool's output over its input or over an existing file."""

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ['check_output_file']


def check_output_file(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False
) -> Path:
    """Check that a tool may write the file ``out``.

    Args:
        out: the file to write.
        inputs: files the tool reads (config, checkpoints); ``out`` may never be one
            of them, even with ``overwrite`` (the input would be lost).
        overwrite: allow replacing an existing file that is not an input.

    Returns:
        Path: ``out``.

    Raises:
        ValueError: ``out`` is an input, a folder, or an existing file without
            ``overwrite``.
    """
    path = Path(out)
    for source in inputs:
        if source is not None and Path(source).exists() and path.exists() and os.path.samefile(path, source):
            raise ValueError(f'the output {path} is the input {source}: writing it would destroy the input')
    if path.is_dir():
        raise ValueError(f'the output {path} is a folder: give a file name')
    if path.exists() and not overwrite:
        raise ValueError(f'the output {path} exists: pass --overwrite to replace it, or choose another name')
    return path
