"""Fetching weight files safely with the libraries that own their caches.

`hf_file` wraps `huggingface_hub.hf_hub_download` (shared cache, per-blob lock, atomic rename, umask
permissions, `HF_ENDPOINT`, `HF_HUB_OFFLINE`); `url_file` wraps `torch.hub.download_url_to_file` (the
`encodec` package's own loader, with its sha256-prefix check). Around both, this module adds what they lack:

- partial files left by a killed process (SIGKILL, power loss) are deleted before the next fetch;
- a stall watchdog: less than 256 KiB in `HF_HUB_DOWNLOAD_TIMEOUT` seconds (default 10) aborts the fetch
  with one line (SIGALRM, main thread only; a byte trickling in every few seconds never trips a read timeout);
- SIGTERM while fetching raises `Interrupted`, a KeyboardInterrupt, so it is cleaned up like Ctrl-C;
- `damage`, a cheap structural check of a cached checkpoint, and `lock`, a file lock for fetch-and-check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
import typing as tp
import zipfile
from pathlib import Path

_CHUNK = 1 << 20
_STALL_CHUNK = 256 << 10  # the watchdog wants this many bytes per HF_HUB_DOWNLOAD_TIMEOUT seconds


class DownloadError(RuntimeError):
    """A download failed, or a file is damaged; no partial file is kept."""


class OfflineError(DownloadError):
    """A file is missing and cannot be downloaded (offline mode or no connection)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM arrived while fetching: handled like Ctrl-C (partial files removed, no traceback in the CLI)."""


class _Stalled(BaseException):
    """Raised by the watchdog's SIGALRM handler inside the stalled read (a BaseException: never swallowed)."""


def sha256(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def damage(path: Path) -> str | None:
    """None if a checkpoint looks whole (a zip's central directory, a safetensors header), else what is wrong.

    Cheap (no full read): it catches truncated and overwritten files, not a flipped bit inside a tensor.
    """
    size = path.stat().st_size
    if size == 0:
        return "it is empty"
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK":  # torch's zip format: the central directory sits at the end
        try:
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    return "it is a zip file without a torch pickle"
        except (zipfile.BadZipFile, OSError) as err:
            return f"it is not a readable zip file ({err})"
    elif head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") > size:  # safetensors
        return "its safetensors header runs past the end of the file"
    return None


def _file_mode() -> int:
    """0o666 less the process umask (filelock sets a lock file's mode exactly, ignoring the umask)."""
    try:
        with open("/proc/self/status") as status:  # Linux: read without changing it (thread-safe)
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def lock(path: Path) -> tp.Iterator[None]:
    """An inter-process file lock at `path` (its folder is created; the lock file gets the umask's mode)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path, mode=_file_mode()):
        yield


def _remove_stale_partials(folder: Path, pattern: str, lock_for: tp.Callable[[Path], Path]) -> None:
    """Delete the partial files a killed process left behind: those whose download lock nobody holds."""
    from filelock import FileLock, Timeout

    for part in folder.glob(pattern) if folder.is_dir() else ():
        try:
            with FileLock(lock_for(part), timeout=0, mode=_file_mode()):
                part.unlink(missing_ok=True)
        except (Timeout, OSError):  # being written right now, or already gone
            pass


@contextlib.contextmanager
def _guard(what: str) -> tp.Iterator[tp.Callable[[], None]]:
    """While fetching `what`: SIGTERM raises `Interrupted`, and a SIGALRM watchdog raises `DownloadError`
    once the yielded `poke()` has been called (the transfer began) unless it is called again at least every
    `HF_HUB_DOWNLOAD_TIMEOUT` seconds. Before the transfer, the libraries' own connect and read timeouts apply."""
    from huggingface_hub import constants

    window = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    if threading.current_thread() is not threading.main_thread():  # signal handlers only work there
        yield lambda: None
        return

    def terminated(signum: int, frame: object) -> None:
        raise Interrupted(f"fetching {what} stopped by SIGTERM; partial files were removed")

    def stalled(signum: int, frame: object) -> None:
        raise _Stalled

    use_alarm = signal.getsignal(signal.SIGALRM) == signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    own_term = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # never replace an application's handler
    if own_term:
        signal.signal(signal.SIGTERM, terminated)
    if use_alarm:
        signal.signal(signal.SIGALRM, stalled)

    def poke() -> None:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, window)

    try:
        yield poke
    except _Stalled:
        raise DownloadError(f"fetching {what} stalled: less than {_STALL_CHUNK >> 10} KiB arrived in {window:g} s "
                            "(HF_HUB_DOWNLOAD_TIMEOUT); nothing was kept, run again to retry") from None
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        if own_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _bar_class(poke: tp.Callable[[], None]) -> type:
    """Hugging Face's progress bar (stderr, off when not a terminal), poking the watchdog on every chunk."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
            poke()  # the body transfer begins
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            poke()
            return super().update(n)

    return Bar


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> tp.Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def hf_file(repo: str, file: str, revision: str, *, cache: Path, endpoint: str, force: bool,
            local_only: bool, missing_hint: str) -> Path:
    """`hf_hub_download` of `file` in model repo `repo`: its path in the cache `cache` (a snapshot symlink).

    Args:
        repo, file, revision: what to fetch.
        cache: the Hugging Face hub cache folder.
        endpoint: the hub's base URL.
        force: download even if cached (replaces a damaged blob).
        local_only: never touch the network.
        missing_hint: appended to the `OfflineError` message (where else the file may come from).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_dir = f"models--{repo.replace('/', '--')}"  # hf's cache layout; its lock per blob is <etag>.lock
    _remove_stale_partials(cache / repo_dir / "blobs", "*.incomplete",
                           lambda part: cache / ".locks" / repo_dir / f"{part.name.split('.')[0]}.lock")
    saved_chunk = constants.DOWNLOAD_CHUNK_SIZE
    try:
        with _guard(file) as poke:
            constants.DOWNLOAD_CHUNK_SIZE = _STALL_CHUNK  # progress (and the watchdog) per 256 KiB, not 10 MiB
            return Path(hf_hub_download(repo, file, revision=revision, cache_dir=cache, endpoint=endpoint,
                                        force_download=force, local_files_only=local_only,
                                        tqdm_class=_bar_class(poke)))
    except LocalEntryNotFoundError as err:
        cause = err.__cause__  # the failed HEAD request, when there was one
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            raise DownloadError(f"could not download {file} from {endpoint}/{repo}: HTTP "
                                f"{cause.response.status_code}") from err
        reason = "offline mode is on (MBD_OFFLINE or HF_HUB_OFFLINE)" if local_only else "the hub cannot be reached"
        raise OfflineError(f"{file} of {repo} is not in the Hugging Face cache ({cache}) and {reason}. "
                           f"{missing_hint}") from err
    except Exception as err:  # hub HTTP errors, its HTTP client's (after retries), OSError, a failed forced fetch
        if not isinstance(err, (HfHubHTTPError, OSError, ValueError)) and not type(err).__module__.startswith("httpx"):
            raise
        err = err.__cause__ if isinstance(err, ValueError) and err.__cause__ else err
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DownloadError(f"could not download {file} from {endpoint}/{repo}: {first}") from err
    finally:
        constants.DOWNLOAD_CHUNK_SIZE = saved_chunk


def url_file(url: str, dest: Path, hash_prefix: str | None) -> None:
    """`torch.hub.download_url_to_file(url, dest)` as `encodec` calls it, with its sha256-prefix check.

    The caller holds `lock` for `dest`, so any `dest.*.partial` file (torch.hub's naming) is stale.
    """
    import torch.hub
    from huggingface_hub import constants

    dest.parent.mkdir(parents=True, exist_ok=True)
    for part in dest.parent.glob(f"{dest.name}.*.partial"):
        part.unlink(missing_ok=True)
    timeout = socket.getdefaulttimeout()
    try:
        with _guard(dest.name) as poke, _patched(torch.hub, "tqdm", _bar_class(poke)):
            socket.setdefaulttimeout(float(constants.HF_HUB_DOWNLOAD_TIMEOUT))  # torch.hub's urlopen sets none
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix, progress=True)
    except DownloadError:
        raise
    except (OSError, RuntimeError) as err:  # RuntimeError: torch.hub's hash check
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DownloadError(f"could not download {url} to {dest}: {first}") from err
    finally:
        socket.setdefaulttimeout(timeout)
