"""Tests for tools/download_sam_checkpoint.py, served from a local file:// mirror."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import pytest

from tests.conftest import load_tool

_FILENAME = 'sam_vit_b_01ec64.pth'
_PAYLOAD = b'not really a checkpoint\n' * 1000


dl = load_tool('tools/download_sam_checkpoint.py', 'download_sam_checkpoint')


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[str, str]:
    """A local mirror holding a fake vit_b checkpoint: (url_base, sha256)."""
    directory = tmp_path / 'mirror'
    directory.mkdir()
    (directory / _FILENAME).write_bytes(_PAYLOAD)
    return directory.as_uri() + '/', hashlib.sha256(_PAYLOAD).hexdigest()


def test_table_digests_are_sha256_hex() -> None:
    assert set(dl.SAM_CHECKPOINTS) == {'vit_b', 'vit_l', 'vit_h'}
    for name, (filename, digest) in dl.SAM_CHECKPOINTS.items():
        assert filename.startswith(f'sam_{name}_') and filename.endswith('.pth')
        assert re.fullmatch(r'[0-9a-f]{64}', digest)


def test_sha256sum(tmp_path: Path) -> None:
    path = tmp_path / 'f.bin'
    path.write_bytes(b'abc')
    assert dl.sha256sum(path) == hashlib.sha256(b'abc').hexdigest()


def test_download_from_mirror(tmp_path: Path, mirror: tuple[str, str]) -> None:
    url_base, digest = mirror
    out = tmp_path / 'out' / 'nested'
    path = dl.download_sam_checkpoint('vit_b', out, url_base=url_base, expected_sha256=digest.upper())
    assert path == out / _FILENAME
    assert path.read_bytes() == _PAYLOAD
    assert sorted(p.name for p in out.iterdir()) == [_FILENAME]


def test_download_by_file_name_and_url_base_without_slash(tmp_path: Path, mirror: tuple[str, str]) -> None:
    url_base, digest = mirror
    path = dl.download_sam_checkpoint(
        _FILENAME,
        tmp_path / 'out',
        url_base=url_base.rstrip('/'),
        expected_sha256=digest,
    )
    assert path.read_bytes() == _PAYLOAD


def test_digest_mismatch_leaves_nothing(tmp_path: Path, mirror: tuple[str, str]) -> None:
    url_base, digest = mirror
    out = tmp_path / 'out'
    wrong = '0' * 64
    with pytest.raises(ValueError, match=f'sha256.*{_FILENAME}.*{wrong}.*{digest}'):
        dl.download_sam_checkpoint('vit_b', out, url_base=url_base, expected_sha256=wrong)
    assert list(out.iterdir()) == []


def test_table_digest_is_used_by_default(tmp_path: Path, mirror: tuple[str, str]) -> None:
    url_base, _ = mirror
    with pytest.raises(ValueError, match=dl.SAM_CHECKPOINTS['vit_b'][1]):
        dl.download_sam_checkpoint('vit_b', tmp_path / 'out', url_base=url_base)


def test_existing_good_file_is_skipped(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    out.mkdir()
    dest = out / _FILENAME
    dest.write_bytes(_PAYLOAD)
    os.utime(dest, (1_000_000, 1_000_000))
    # A url_base that cannot be opened proves that nothing is fetched.
    missing = (tmp_path / 'no_such_mirror').as_uri() + '/'
    path = dl.download_sam_checkpoint(
        'vit_b',
        out,
        url_base=missing,
        expected_sha256=hashlib.sha256(_PAYLOAD).hexdigest(),
    )
    assert path == dest
    assert dest.stat().st_mtime == 1_000_000
    assert dest.read_bytes() == _PAYLOAD


def test_existing_bad_file_raises_unless_force(tmp_path: Path, mirror: tuple[str, str]) -> None:
    url_base, digest = mirror
    out = tmp_path / 'out'
    out.mkdir()
    dest = out / _FILENAME
    dest.write_bytes(b'corrupt')
    with pytest.raises(ValueError, match='already exists.*force'):
        dl.download_sam_checkpoint('vit_b', out, url_base=url_base, expected_sha256=digest)
    assert dest.read_bytes() == b'corrupt'
    dl.download_sam_checkpoint('vit_b', out, url_base=url_base, expected_sha256=digest, force=True)
    assert dest.read_bytes() == _PAYLOAD


def test_unreachable_url_raises(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    missing = (tmp_path / 'no_such_mirror').as_uri() + '/'
    with pytest.raises(OSError):
        dl.download_sam_checkpoint('vit_b', out, url_base=missing)
    assert list(out.iterdir()) == []


class _BrokenResponse(io.BytesIO):
    """A response that delivers one chunk, then fails like a dropped link."""

    headers = {'Content-Length': str(10 * len(_PAYLOAD))}

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() == 0:
            return super().read(size)
        raise ConnectionResetError('connection reset by peer')


def test_interrupted_download_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl.urllib.request, 'urlopen', lambda url: _BrokenResponse(_PAYLOAD))
    out = tmp_path / 'out'
    with pytest.raises(ConnectionResetError, match='reset'):
        dl.download_sam_checkpoint('vit_b', out, url_base='https://example.invalid/')
    assert list(out.iterdir()) == []


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'vit_x'.*vit_b.*vit_h.*vit_l"):
        dl.download_sam_checkpoint('vit_x', tmp_path)


def test_bad_expected_sha256(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='64-character hex.*xyz'):
        dl.download_sam_checkpoint('vit_b', tmp_path, expected_sha256='xyz')


def test_main_success_and_failure(
    tmp_path: Path,
    mirror: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url_base, digest = mirror
    monkeypatch.setitem(dl.SAM_CHECKPOINTS, 'vit_b', (_FILENAME, digest))
    out = tmp_path / 'out'
    argv = ['vit_b', '--out-dir', str(out), '--url-base', url_base]
    assert dl.main(argv) == 0
    assert (out / _FILENAME).read_bytes() == _PAYLOAD
    capsys.readouterr()

    assert dl.main(['vit_b', 'vit_x', '--out-dir', str(tmp_path / 'o2')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error:') and 'vit_x' in err
    assert not (tmp_path / 'o2').exists()  # names are checked before downloading

    monkeypatch.setitem(dl.SAM_CHECKPOINTS, 'vit_b', (_FILENAME, '1' * 64))
    assert dl.main(['vit_b', '--out-dir', str(tmp_path / 'o3'), '--url-base', url_base]) == 1
    assert 'sha256 mismatch' in capsys.readouterr().err
