"""Pretrained weights: names -> files, the download cache, and offline use.

Names come from `checkpoints/manifest.toml` (installed as the package data `mbd.checkpoints`; the env
variable `MBD_MANIFEST` points at another manifest). Files live in `cache_dir()`. Downloads are streamed
to a temporary file next to their destination, checked (size, sha256) and only then renamed into place,
so the cache never holds a partial or unverified file. With `MBD_OFFLINE=1`, or when the server cannot be
reached, a missing file raises `OfflineError` saying where to put it and where to get it.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import os
import sys
import tempfile
import typing as tp
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_noticed: set[str] = set()


class DownloadError(RuntimeError):
    """A download failed; nothing was written to the cache."""


class OfflineError(DownloadError):
    """A file is missing and cannot be downloaded (offline mode or no connection)."""


@dataclass(frozen=True)
class ModelEntry:
    """One pretrained MBD model of the manifest.

    `file` is the upstream file at `url`; it is converted once to `cache_path` (our safetensors format).
    A `bundled` model instead ships inside the package (`file` next to the manifest, in our format) and
    needs no download: it has no `url`, and no `codec`/`n_q` when it is conditioned on mel spectrograms
    (`input = "mel"`).
    """

    name: str
    file: str
    sample_rate: int
    license: str
    license_url: str
    url: str | None = None
    codec: str | None = None
    n_q: int | None = None
    input: str = "tokens"
    bundled: bool = False
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not self.bundled and (self.url is None or self.codec is None or self.n_q is None):
            raise TypeError("a downloaded model needs 'url', 'codec' and 'n_q'")

    @property
    def cache_path(self) -> Path:
        """Where the model file lives: the packaged file when bundled, else `cache_dir() / "<name>.safetensors"`."""
        return _bundled_path(self.file) if self.bundled else cache_dir() / f"{self.name}.safetensors"

    @property
    def is_cached(self) -> bool:
        """Whether the model file is available locally (no download or conversion needed)."""
        return self.cache_path.is_file()


@dataclass(frozen=True)
class CodecEntry:
    """Codec weights of the manifest: a file at `url`, or a Hugging Face repo loaded by transformers."""

    name: str
    license: str
    license_url: str
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    hf_repo: str | None = None


def cache_dir() -> Path:
    """The weights cache: `$MBD_CACHE`, else `$XDG_CACHE_HOME/mbd`, else `~/.cache/mbd`."""
    if os.environ.get("MBD_CACHE"):
        return Path(os.environ["MBD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mbd"


def offline() -> bool:
    """Whether `MBD_OFFLINE` forbids downloads."""
    return os.environ.get("MBD_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _manifest() -> tuple[dict[str, tp.Any], str]:
    override = os.environ.get("MBD_MANIFEST")
    try:
        if override:
            text, where = Path(override).read_text(encoding="utf-8"), override
        else:
            resource = importlib.resources.files("mbd.checkpoints") / "manifest.toml"
            text, where = resource.read_text(encoding="utf-8"), str(resource)
    except ModuleNotFoundError:  # a source checkout that is not installed
        path = Path(__file__).resolve().parents[1] / "checkpoints" / "manifest.toml"
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"invalid manifest {where}: {err}") from err


def _bundled_path(file: str) -> Path:
    """A file shipped in the package `mbd.checkpoints` (or in the source tree's checkpoints/ folder)."""
    try:
        resource = importlib.resources.files("mbd.checkpoints") / file
        with importlib.resources.as_file(resource) as path:  # a real path for installed packages
            if Path(path).is_file():
                return Path(path)
    except ModuleNotFoundError:  # a source checkout that is not installed
        pass
    return Path(__file__).resolve().parents[1] / "checkpoints" / file


def _entries(cls: type, section: str) -> dict[str, tp.Any]:
    manifest, where = _manifest()
    entries = {}
    for name, table in manifest.get(section, {}).items():
        try:
            entries[name] = cls(name=name, **table)
        except TypeError as err:
            raise ValueError(f"bad [{section}.\"{name}\"] entry in {where}: {err}") from err
    return entries


def _entry(cls: type, section: str, name: str) -> tp.Any:
    entries = _entries(cls, section)
    if name not in entries:
        raise ValueError(f"unknown {section} '{name}'; known: {', '.join(entries) or 'none'}")
    return entries[name]


def list_models() -> list[ModelEntry]:
    """All MBD models of the manifest, in manifest order."""
    return list(_entries(ModelEntry, "model").values())


def model_entry(name: str) -> ModelEntry:
    """The manifest entry of MBD model `name` (ValueError listing the known names if unknown)."""
    return _entry(ModelEntry, "model", name)


def codec_entry(name: str) -> CodecEntry:
    """The manifest entry of codec weights `name` (ValueError listing the known names if unknown)."""
    return _entry(CodecEntry, "codec", name)


def _missing(dest: Path, url: str, reason: str) -> str:
    return f"{dest.name} is missing and {reason}. Download it from {url} and save it as {dest}"


def _fetch(url: str, out: tp.BinaryIO, dest: Path, size: int | None, progress: bool) -> str:
    """Stream `url` into `out`; return the sha256 hex digest of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": "mbd"})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"could not download {url} to {dest}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise OfflineError(_missing(dest, url, f"the server cannot be reached ({reason})")) from err
    with response:
        header = response.headers.get("Content-Length")
        expected = int(header) if header and header.isdigit() else None
        if size is not None and expected is not None and expected != size:
            raise DownloadError(f"could not download {url} to {dest}: the server offers {expected} bytes, "
                                f"the manifest expects {size}")
        sha, received = hashlib.sha256(), 0
        bar = _progress_bar(dest.name, expected or size, progress)
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                sha.update(chunk)
                received += len(chunk)
                bar(len(chunk))
        except (http.client.HTTPException, OSError) as err:
            raise DownloadError(f"could not download {url} to {dest}: the transfer broke off after "
                                f"{received} bytes ({err!r})") from err
        finally:
            bar(None)
    if expected is not None and received != expected:
        raise DownloadError(f"could not download {url} to {dest}: truncated transfer, "
                            f"got {received} of {expected} bytes")
    if size is not None and received != size:
        raise DownloadError(f"could not download {url} to {dest}: got {received} bytes, expected {size}")
    return sha.hexdigest()


def _progress_bar(name: str, total: int | None, enabled: bool) -> tp.Callable[[int | None], None]:
    """A callback taking a byte count, or None to close; tqdm on stderr if importable."""
    if not enabled:
        return lambda n: None
    try:
        from tqdm import tqdm
    except ImportError:
        done = [0, -1]

        def line(n: int | None) -> None:
            if n is None:
                print(file=sys.stderr)
                return
            done[0] += n
            percent = int(100 * done[0] / total) if total else done[0] >> 24
            if percent != done[1]:
                done[1] = percent
                of = f" / {total / 1e6:.1f}" if total else ""
                print(f"\r{name}: {done[0] / 1e6:.1f}{of} MB", end="", file=sys.stderr, flush=True)

        return line
    bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
    return lambda n: bar.close() if n is None else bar.update(n)


def _check_sha256(actual: str, sha256: str | None, sha256_prefix: str | None) -> str | None:
    """None if the digest matches, else what is wrong."""
    if sha256 is not None and actual != sha256.lower():
        return f"sha256 mismatch: expected {sha256.lower()}, got {actual}"
    if sha256_prefix is not None and not actual.startswith(sha256_prefix.lower()):
        return f"sha256 mismatch: expected a digest starting {sha256_prefix.lower()}, got {actual}"
    return None


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` atomically, checking its size and sha256 (or sha256 prefix) when given.

    Args:
        url: http(s) URL.
        dest: final path; its folder is created. Only a complete, verified file is ever renamed to it.
        sha256: expected hex digest, or None.
        sha256_prefix: expected start of the hex digest (EnCodec's file naming), or None.
        size: expected size in bytes, or None.
        progress: show a progress bar on stderr.

    Raises:
        OfflineError: `MBD_OFFLINE` is set or the server cannot be reached.
        DownloadError: HTTP error, broken or truncated transfer, wrong size or checksum.
    """
    dest = Path(dest)
    if offline():
        raise OfflineError(_missing(dest, url, "MBD_OFFLINE is set"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f"{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, dest, size, progress)
        problem = _check_sha256(digest, sha256, sha256_prefix)
        if problem:
            raise DownloadError(f"could not download {url} to {dest}: {problem}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _verify_local(path: Path, url: str, sha256: str | None, sha256_prefix: str | None) -> Path:
    """Check a file already in the cache (downloaded earlier or put there by hand)."""
    if sha256 is not None or sha256_prefix is not None:
        problem = _check_sha256(_file_sha256(path), sha256, sha256_prefix)
        if problem:
            raise DownloadError(f"{path} is not the file at {url} ({problem}); delete it and try again")
    return path


def resolve_codec_weights(name: str) -> Path:
    """The local weights file of codec `name` (downloaded and checked on first use).

    Args:
        name: a `[codec.*]` entry of the manifest with a `url`, e.g. `"encodec_24khz"`.
    """
    entry = codec_entry(name)
    if entry.url is None or entry.file is None:
        raise ValueError(f"codec '{name}' is fetched by transformers from '{entry.hf_repo}', not by file")
    dest = cache_dir() / entry.file
    if dest.is_file():
        return _verify_local(dest, entry.url, entry.sha256, entry.sha256_prefix)
    return download(entry.url, dest, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix, size=entry.size)


def _notice_licence(entry: ModelEntry) -> None:
    if entry.license.upper().startswith("CC-BY-NC") and entry.name not in _noticed:
        _noticed.add(entry.name)
        print(f"mbd: the '{entry.name}' weights are licensed {entry.license} (non-commercial use only): "
              f"{entry.license_url}", file=sys.stderr)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local MBD model file: an existing path as is, or a manifest name resolved through the cache.

    A name is downloaded once (checked, atomic), converted once to `cache_dir()/<name>.safetensors` with
    `mbd.checkpoint.convert`, and the upstream original is then deleted.

    Args:
        name_or_path: a file path, or a model name of `list_models()`.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    entries = _entries(ModelEntry, "model")
    if str(name_or_path) not in entries:
        raise ValueError(f"'{name_or_path}' is neither an existing file nor a known model; "
                         f"known models: {', '.join(entries)}")
    entry = entries[str(name_or_path)]
    _notice_licence(entry)
    dst = entry.cache_path
    if entry.bundled:  # shipped with the package: never downloaded
        if not dst.is_file():
            raise OfflineError(f"the bundled model '{entry.name}' is missing from the installation ({dst}); "
                               "reinstall mbd")
        problem = None if entry.sha256 is None else _check_sha256(_file_sha256(dst), entry.sha256, None)
        if problem:
            raise DownloadError(f"{dst}: the bundled model '{entry.name}' is damaged ({problem}); reinstall mbd")
        return dst
    if dst.is_file():
        return dst
    assert entry.url is not None  # checked by ModelEntry
    if entry.file.endswith(".safetensors"):  # already in our format
        return download(entry.url, dst, sha256=entry.sha256, size=entry.size)
    src = cache_dir() / entry.file
    if src.is_file():
        _verify_local(src, entry.url, entry.sha256, None)
    else:
        download(entry.url, src, sha256=entry.sha256, size=entry.size)
    from mbd.checkpoint import convert

    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f"{dst.name}.", suffix=".part.safetensors")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # a unique name that convert() creates
    try:
        convert(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    src.unlink(missing_ok=True)  # another process converting the same model may have removed it
    return dst
