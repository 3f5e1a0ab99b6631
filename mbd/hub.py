"""Pretrained weights: names -> files, through the caches of the libraries that fetch them.

Names come from `checkpoints/manifest.toml` (installed as the package data `mbd.checkpoints`; the env
variable `MBD_MANIFEST` points at another manifest).

- MBD models live on the Hugging Face Hub (`repo`, `file`, `revision`) and are fetched by
  `huggingface_hub.hf_hub_download` into the shared Hugging Face cache, where AudioCraft finds them too.
  The upstream file is loaded as is (no converted copy). `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`
  and `HF_HUB_DOWNLOAD_TIMEOUT` apply.
- EnCodec's weights (`url`, `sha256_prefix`) are fetched as the `encodec` package fetches them, by torch.hub
  into its own folder (`TORCH_HOME`), where `encodec` finds them too.
- `MBD_OFFLINE=1` is one switch for both (torch.hub has none), and the folder `cache_dir()` (`MBD_CACHE`)
  holds files placed there by hand, which win over both caches, and mbd's locks.

`mbd.fetch` makes both fetches safe to interrupt, stall, damage and run concurrently.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import sys
import typing as tp
import warnings
from dataclasses import dataclass
from pathlib import Path

from mbd.errors import InputError
from mbd.fetch import DownloadError, Interrupted, OfflineError, damage, hf_file, lock, sha256, url_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DownloadError", "Interrupted", "OfflineError", "CodecEntry", "ModelEntry", "cache_dir", "codec_dir",
           "codec_entry", "hf_cache_dir", "list_models", "model_entry", "offline", "resolve_codec_weights",
           "resolve_model"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_noticed: set[str] = set()


@dataclass(frozen=True)
class ModelEntry:
    """One pretrained MBD model of the manifest.

    `file` is the file of Hugging Face repo `repo` at `revision`. A `bundled` model instead ships inside the
    package (`file` next to the manifest, in our format): it has no `repo`, and no `codec`/`n_q` when it is
    conditioned on mel spectrograms (`input = "mel"`).
    """

    name: str
    file: str
    sample_rate: int
    license: str
    license_url: str
    repo: str | None = None
    revision: str = "main"
    codec: str | None = None
    n_q: int | None = None
    input: str = "tokens"
    bundled: bool = False
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not self.bundled and (self.repo is None or self.codec is None or self.n_q is None):
            raise TypeError("a downloaded model needs 'repo', 'codec' and 'n_q'")

    @property
    def url(self) -> str | None:
        """Where the file is downloaded from (`HF_ENDPOINT` applies); None for a bundled model."""
        return None if self.repo is None else f"{_endpoint()}/{self.repo}/resolve/{self.revision}/{self.file}"

    @property
    def local_path(self) -> Path | None:
        """The model file if it is on this machine (bundled, placed in `cache_dir()`, or in the HF cache)."""
        if self.bundled:
            return _bundled_path(self.file)
        for path in (cache_dir() / f"{self.name}.safetensors", cache_dir() / self.file):
            if path.is_file():
                return path
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo, self.file, cache_dir=hf_cache_dir(), revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    @property
    def is_cached(self) -> bool:
        """Whether the model file is available locally (no download needed)."""
        return self.local_path is not None


@dataclass(frozen=True)
class CodecEntry:
    """Codec weights of the manifest: a file at `url`, or a Hugging Face repo loaded by transformers."""

    name: str
    license: str
    license_url: str
    file: str | None = None
    url: str | None = None
    sha256_prefix: str | None = None
    hf_repo: str | None = None


def cache_dir() -> Path:
    """Files placed by hand and mbd's locks: `$MBD_CACHE`, else `$XDG_CACHE_HOME/mbd`, else `~/.cache/mbd`."""
    if os.environ.get("MBD_CACHE"):
        return Path(os.environ["MBD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mbd"


def offline() -> bool:
    """Whether `MBD_OFFLINE` (or Hugging Face's `HF_HUB_OFFLINE`) forbids downloads."""
    return any(os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
               for var in ("MBD_OFFLINE", "HF_HUB_OFFLINE"))


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, where MBD models go: `$HF_HUB_CACHE`, else huggingface_hub's default."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def codec_dir() -> Path:
    """Where EnCodec's weights go: torch.hub's checkpoint folder, as `encodec`'s own loader uses."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


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
        raise InputError(f"invalid manifest {where}: {err}") from err


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
            raise InputError(f"bad [{section}.\"{name}\"] entry in {where}: {err}") from err
    return entries


def _entry(cls: type, section: str, name: str) -> tp.Any:
    entries = _entries(cls, section)
    if name not in entries:
        raise InputError(f"unknown {section} '{name}'; known: {', '.join(entries) or 'none'}")
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


def _fetch_model(entry: ModelEntry) -> Path:
    """The entry's file in the Hugging Face cache: fetched if missing, checked, fetched again once if damaged.

    A new download must match the sha256 that the hub gives as its ETag (or the manifest's `sha256`); a
    cached file gets the cheap `damage` check only (hashing 4.6 GB on every run would cost seconds).
    """
    from huggingface_hub import try_to_load_from_cache

    assert entry.repo is not None  # checked by ModelEntry
    cached = try_to_load_from_cache(entry.repo, entry.file, cache_dir=hf_cache_dir(), revision=entry.revision)
    cached = Path(cached) if isinstance(cached, str) else None
    problem = damage(cached) if cached is not None else None
    if problem and offline():
        raise OfflineError(f"{cached} is damaged ({problem}) and offline mode is on; delete "
                           f"{cached.resolve()} and run again online")
    if problem:
        print(f"mbd: the cached {entry.file} is damaged ({problem}); downloading it again", file=sys.stderr)
    hint = f"Download {entry.url} and pass its path, or save it as {cache_dir() / entry.file}"
    for attempt in range(2):
        force = problem is not None
        path = hf_file(entry.repo, entry.file, entry.revision, cache=hf_cache_dir(), endpoint=_endpoint(),
                       force=force, local_only=offline(), missing_hint=hint)
        blob = path.resolve()
        if cached is not None and not force and blob == cached.resolve():
            return path  # the cached file, whole (a new revision on the hub would be a new blob: checked below)
        expected = entry.sha256 or (blob.name if _SHA256.fullmatch(blob.name) else None)  # LFS ETag = sha256
        problem = damage(path)
        if problem is None and entry.size is not None and blob.stat().st_size != entry.size:
            problem = f"{blob.stat().st_size} bytes, the manifest says {entry.size}"
        if problem is None and expected is not None and (actual := sha256(path)) != expected:
            problem = f"sha256 {actual}, the hub says {expected}"
        if problem is None:
            return path
        blob.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        if attempt == 0:
            print(f"mbd: the downloaded {entry.file} is damaged ({problem}); downloading it again", file=sys.stderr)
    raise DownloadError(f"{entry.url} arrived damaged twice ({problem}); nothing was kept")


class LicenceNotice(UserWarning):
    """The weights about to be used carry a non-commercial licence."""


def _notice_licence(entry: ModelEntry) -> None:
    if entry.license.upper().startswith("CC-BY-NC") and entry.name not in _noticed:
        _noticed.add(entry.name)
        warnings.warn(LicenceNotice(f"the '{entry.name}' weights are licensed {entry.license} "
                                    f"(non-commercial use only): {entry.license_url}"), stacklevel=2)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local MBD model file: an existing path as is, or a manifest name resolved through the caches.

    A name is looked up in `cache_dir()` (`<name>.safetensors` or the upstream file name, placed by hand), then
    in the Hugging Face cache, and fetched there once if missing. The upstream file is used as is.

    Args:
        name_or_path: a file path, or a model name of `list_models()`.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    entries = _entries(ModelEntry, "model")
    if str(name_or_path) not in entries:
        raise InputError(f"'{name_or_path}' is neither an existing file nor a known model; "
                         f"known models: {', '.join(entries)}")
    entry = entries[str(name_or_path)]
    _notice_licence(entry)
    if entry.bundled:  # shipped with the package: never downloaded
        dst = _bundled_path(entry.file)
        if not dst.is_file():
            raise OfflineError(f"the bundled model '{entry.name}' is missing from the installation ({dst}); "
                               "reinstall mbd")
        if entry.sha256 is not None and (actual := sha256(dst)) != entry.sha256:
            raise DownloadError(f"{dst}: the bundled model '{entry.name}' is damaged (sha256 {actual}, expected "
                                f"{entry.sha256}); reinstall mbd")
        return dst
    for local in (cache_dir() / f"{entry.name}.safetensors", cache_dir() / entry.file):
        if local.is_file():
            return local
    with lock(cache_dir() / ".locks" / f"{entry.name}.lock"):  # one fetch and check per model at a time
        return _fetch_model(entry)


def resolve_codec_weights(name: str) -> Path:
    """The local weights file of codec `name`, fetched on first use as `encodec`'s loader does (torch.hub).

    Looked up in `cache_dir()` (placed by hand), then in `codec_dir()`. The file's sha256 must start with
    `sha256_prefix` (EnCodec's naming); a damaged file in `codec_dir()` is fetched again.

    Args:
        name: a `[codec.*]` entry of the manifest with a `url`, e.g. `"encodec_24khz"`.
    """
    entry = codec_entry(name)
    if entry.url is None or entry.file is None:
        raise InputError(f"codec '{name}' is fetched by transformers from '{entry.hf_repo}', not by file")
    prefix = (entry.sha256_prefix or "").lower()
    hand = cache_dir() / entry.file
    if hand.is_file():
        if not sha256(hand).startswith(prefix):
            raise DownloadError(f"{hand} is not the file at {entry.url} (its sha256 does not start {prefix}); "
                                "delete it and try again")
        return hand
    dest = codec_dir() / entry.file
    with lock(cache_dir() / ".locks" / f"{entry.file}.lock"):
        if dest.is_file():
            if sha256(dest).startswith(prefix):
                return dest
            if offline():
                raise OfflineError(f"{dest} is damaged (its sha256 does not start {prefix}) and offline mode is "
                                   "on; delete it and run again online")
            print(f"mbd: the cached {dest.name} is damaged; downloading it again", file=sys.stderr)
            dest.unlink()
        if offline():
            raise OfflineError(f"{dest.name} is missing and offline mode is on (MBD_OFFLINE or HF_HUB_OFFLINE). "
                               f"Download it from {entry.url} and save it as {dest}")
        url_file(entry.url, dest, prefix or None)
    return dest
