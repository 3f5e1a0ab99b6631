"""Atomic file writes: write under a temporary name in the destination's folder, then rename.

A reader never sees a half-written file, and a failed write leaves the previous file (if any) untouched and
no temporary file behind. New files get the mode the process umask implies (`0o666 & ~umask`, as `open`
would give), and a replaced file keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # the umask can only be read by setting it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on a clean exit, move the file written there onto `path`.

    The body writes the temporary file by name (`safetensors.torch.save_file(t, tmp)`,
    `fig.savefig(tmp)`, `open(tmp, "wb")`); the temporary file exists (empty) on entry.

    Args:
        path: the destination.
        overwrite: replace an existing `path`; False raises `FileExistsError`, before the body runs when
            `path` already exists, and without replacing it when it appeared during the write.
        suffix: ending of the temporary name, for writers that choose the format by extension.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)  # mkstemp creates the file 0600
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_if_absent(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _move_if_absent(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` unless `path` exists (a hard link fails atomically if it does)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it") from None
        os.replace(tmp, path)
    else:
        tmp.unlink()

