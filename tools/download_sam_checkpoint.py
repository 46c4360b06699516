"""Download the official Segment Anything checkpoints and verify their SHA-256.

Usage::

    python tools/download_sam_checkpoint.py vit_b [vit_l vit_h ...] \
        --out-dir checkpoints/ [--url-base URL] [--force]

A checkpoint can be named by its model name (``vit_b``) or by its file name
(``sam_vit_b_01ec64.pth``). ``--url-base`` replaces the official download
location, so a mirror or a local ``file://`` directory can be used instead.

The file is streamed to ``<dest>.part`` while its digest is computed and only
renamed to its final name once the digest matches, so an interrupted or corrupt
download never leaves a file under the final name.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

DEFAULT_URL_BASE = 'https://dl.fbaipublicfiles.com/segment_anything/'

#: Model name -> (file name, SHA-256 hex digest of the file).
SAM_CHECKPOINTS: dict[str, tuple[str, str]] = {
    'vit_b': (
        'sam_vit_b_01ec64.pth',
        'ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912',
    ),
    'vit_l': (
        'sam_vit_l_0b3195.pth',
        '3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622',
    ),
    'vit_h': (
        'sam_vit_h_4b8939.pth',
        'a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e',
    ),
}

_CHUNK_SIZE = 1 << 20  # 1 MiB


def sha256sum(path: str | Path, chunk_size: int = _CHUNK_SIZE) -> str:
    """Compute the SHA-256 digest of a file.

    Args:
        path: File to hash.
        chunk_size: Number of bytes read at a time.

    Returns:
        The lower-case hex digest (64 characters).
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve_name(name: str) -> tuple[str, str]:
    """Map a model name or checkpoint file name to ``(file name, sha256)``.

    Args:
        name: A key of :data:`SAM_CHECKPOINTS` (e.g. ``'vit_b'``) or one of the
            checkpoint file names (e.g. ``'sam_vit_b_01ec64.pth'``).

    Returns:
        The checkpoint's file name and SHA-256 digest.

    Raises:
        ValueError: If ``name`` is neither a known model name nor a known file
            name.
    """
    if name in SAM_CHECKPOINTS:
        return SAM_CHECKPOINTS[name]
    for filename, digest in SAM_CHECKPOINTS.values():
        if name == filename:
            return filename, digest
    valid = sorted(SAM_CHECKPOINTS) + sorted(f for f, _ in SAM_CHECKPOINTS.values())
    raise ValueError(f'Unknown SAM checkpoint {name!r}; expected one of: {", ".join(valid)}')


def _stream_to_file(url: str, part: Path, label: str) -> str:
    """Stream ``url`` into ``part``, reporting progress, and return its sha256.

    Progress (bytes so far / total) goes to stderr about every 5% when the
    server reports a length, otherwise about every 50 MiB.

    Args:
        url: Source URL (any scheme ``urllib`` can open, including ``file://``).
        part: Destination file; overwritten if present.
        label: Name shown in the progress messages.

    Returns:
        The SHA-256 hex digest of the bytes written.
    """
    digest = hashlib.sha256()
    with urllib.request.urlopen(url) as response, open(part, 'wb') as out:
        length = response.headers.get('Content-Length')
        total = int(length) if length and length.isdigit() else None
        step = max(total // 20, 1) if total else 50 * _CHUNK_SIZE
        next_report = step
        done = 0
        while True:
            chunk = response.read(_CHUNK_SIZE)
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if done >= next_report:
                if total:
                    print(
                        f'{label}: {done}/{total} bytes ({100 * done // total}%)',
                        file=sys.stderr,
                    )
                else:
                    print(f'{label}: {done} bytes', file=sys.stderr)
                while next_report <= done:
                    next_report += step
    return digest.hexdigest()


def download_sam_checkpoint(
    name: str,
    out_dir: str | Path,
    url_base: str = DEFAULT_URL_BASE,
    force: bool = False,
    expected_sha256: str | None = None,
) -> Path:
    """Download one SAM checkpoint into ``out_dir`` and verify its SHA-256.

    If the destination file already exists with the expected digest, nothing
    is downloaded.

    Args:
        name: Model name (``'vit_b'``, ``'vit_l'``, ``'vit_h'``) or checkpoint
            file name (e.g. ``'sam_vit_b_01ec64.pth'``).
        out_dir: Directory to write the checkpoint into; created if missing.
        url_base: URL prefix the file name is appended to. A missing trailing
            ``'/'`` is added.
        force: Replace an existing file whose digest does not match instead of
            raising.
        expected_sha256: Digest to verify against instead of the one in
            :data:`SAM_CHECKPOINTS` (case-insensitive).

    Returns:
        Path of the verified checkpoint.

    Raises:
        ValueError: If ``name`` is unknown, if ``expected_sha256`` is not a
            64-character hex string, if an existing file has the wrong digest
            and ``force`` is False, or if the downloaded file's digest does not
            match (the partial file is then deleted).
    """
    filename, digest = _resolve_name(name)
    if expected_sha256 is not None:
        digest = expected_sha256.lower()
        if len(digest) != 64 or any(c not in '0123456789abcdef' for c in digest):
            raise ValueError(f'expected_sha256 must be a 64-character hex string, got {expected_sha256!r}')
    out_dir = Path(out_dir)
    dest = out_dir / filename

    if dest.exists():
        actual = sha256sum(dest)
        if actual == digest:
            print(f'{dest} already exists with the expected sha256, skipping')
            return dest
        if not force:
            raise ValueError(
                f'{dest} already exists but its sha256 is {actual}, expected '
                f'{digest}; delete it or pass force=True (--force) to replace it'
            )
        print(f'{dest} has the wrong sha256, downloading it again', file=sys.stderr)

    out_dir.mkdir(parents=True, exist_ok=True)
    if not url_base.endswith('/'):
        url_base += '/'
    url = url_base + filename
    part = dest.with_name(dest.name + '.part')
    print(f'Downloading {url} to {dest}', file=sys.stderr)
    try:
        actual = _stream_to_file(url, part, filename)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if actual != digest:
        part.unlink(missing_ok=True)
        raise ValueError(
            f'sha256 mismatch for {filename} downloaded from {url}: expected {digest}, got {actual}'
        )
    os.replace(part, dest)
    print(f'Saved {dest} (sha256 {actual})')
    return dest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Download official Segment Anything checkpoints and verify their SHA-256.'
    )
    parser.add_argument(
        'names',
        nargs='+',
        metavar='NAME',
        help=f'checkpoint(s) to fetch: {", ".join(SAM_CHECKPOINTS)} (or their file names)',
    )
    parser.add_argument('--out-dir', default='checkpoints', help='destination directory')
    parser.add_argument(
        '--url-base',
        default=DEFAULT_URL_BASE,
        help=f'URL prefix to download from, e.g. a mirror or file:///some/dir/ (default: {DEFAULT_URL_BASE})',
    )
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace an existing file whose sha256 does not match',
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command-line interface.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 when every checkpoint is present and verified, 1 otherwise (after a
        one-line error message on stderr).
    """
    args = parse_args(argv)
    try:
        for name in args.names:  # reject unknown names before downloading any
            _resolve_name(name)
        for name in args.names:
            download_sam_checkpoint(name, args.out_dir, url_base=args.url_base, force=args.force)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
