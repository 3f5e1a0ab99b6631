"""mbd.atomic: files appear whole or not at all, with the mode `open` would give them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mbd import checkpoint
from mbd.atomic import atomic_path
from mbd.audio import write_audio
from mbd.tokens import write_tokens


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    os.umask(mask)
    with atomic_path(tmp_path / "new.bin", overwrite=False) as tmp:
        tmp.write_bytes(b"data")
    assert (tmp_path / "new.bin").read_bytes() == b"data"
    assert _mode(tmp_path / "new.bin") == mode
    with open(tmp_path / "plain.bin", "wb"):  # what a plain open gives under the same umask
        pass
    assert _mode(tmp_path / "plain.bin") == mode


def test_overwrite_keeps_the_mode(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    path = tmp_path / "old.bin"
    path.write_bytes(b"old")
    path.chmod(0o640)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(tmp_path / "new.bin", overwrite=False):
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_refuses_to_replace_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    ran = []
    with pytest.raises(FileExistsError, match="already exists"), atomic_path(path, overwrite=False):
        ran.append(True)
    assert not ran and path.read_bytes() == b"old"
    # A file that appears while the body writes is not replaced either.
    late = tmp_path / "late.bin"
    with pytest.raises(FileExistsError, match="already exists"), atomic_path(late, overwrite=False) as tmp:
        tmp.write_bytes(b"ours")
        late.write_bytes(b"theirs")
    assert late.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.bin", "out.bin"]


def test_writers_use_the_umask(tmp_path: Path, umask: None) -> None:
    os.umask(0o027)
    write_audio(tmp_path / "a.wav", torch.zeros(1, 100), 24000, overwrite=False)
    write_tokens(tmp_path / "t.npy", torch.zeros(1, 2, 5, dtype=torch.long))
    checkpoint.save(tmp_path / "m.safetensors", {"x": 1}, {"w": torch.zeros(2)})
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == {"a.wav": 0o640, "t.npy": 0o640, "m.safetensors": 0o640}
