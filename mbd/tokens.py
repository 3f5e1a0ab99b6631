"""Token files: reading and writing codec codes `[B, K, T]`, with validation that names the file.

Formats:
- `.npy`: an integer array `[K, T]` or `[B, K, T]` (or Hugging Face `audio_codes` `[1, B, K, T]`);
- `.npz`: a Bark history prompt or generation (key `fine_prompt`, `[8, T]` = EnCodec 24 kHz at 6 kbps),
  else key `codes` or `tokens`, else its only array; optional scalar keys `sample_rate`, `bandwidth`;
- `.pt`: a tensor, or a dict with `codes` (and optional `sample_rate`, `bandwidth`);
- `.ecdc`: EnCodec's own compressed stream (`python -m encodec`), read and written by `mbd.ecdc`.

Codes are checked by `mbd.codec.validate_codes`, re-exported here.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mbd import ecdc
from mbd.arrays import ArrayTooLarge, load_npy, load_npz_member
from mbd.atomic import atomic_path
from mbd.checkpoint import pickle_error
from mbd.codec import EncodecCodec, n_q_to_bandwidth, validate_codes
from mbd.errors import TokenError
from mbd.hub import DownloadError

__all__ = ["TokenError", "TokenFile", "read_tokens", "validate_codes", "write_tokens"]

_ENCODEC_SR = EncodecCodec.sample_rate


@dataclass(frozen=True)
class TokenFile:
    """Codes read from a file.

    Attributes:
        codes: codes `[B, K, T]` int64 (not yet checked against a model: see `validate_codes`).
        source: what was read, e.g. `"speech.npz (key 'fine_prompt', Bark: EnCodec 24 kHz, 6 kbps)"`.
        sample_rate: the codec's sample rate in Hz if the file says so.
        bandwidth: the codec's bandwidth in kbps if the file says so.
    """

    codes: torch.Tensor
    source: str
    sample_rate: int | None = None
    bandwidth: float | None = None


def _scalar(value: object, kind: type, name: str, key: str) -> int | float | None:
    if value is None:
        return None
    try:
        return kind(np.asarray(value).item())
    except (TypeError, ValueError) as err:
        raise TokenError(f"{name}: '{key}' must be a number, got {value!r}") from err


def _read_npz(path: Path, name: str) -> TokenFile:
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.files)
        if "fine_prompt" in keys:
            return TokenFile(load_npz_member(npz, "fine_prompt", name),
                             f"{name} (key 'fine_prompt', Bark: EnCodec 24 kHz, 6 kbps)", _ENCODEC_SR, 6.0)
        meta = {key: load_npz_member(npz, key, name) for key in ("sample_rate", "bandwidth") if key in keys}
        arrays = [key for key in keys if key not in meta]
        chosen = next((key for key in ("codes", "tokens") if key in arrays), None)
        if chosen is None and len(arrays) == 1:
            chosen = arrays[0]
        if chosen is None:
            raise TokenError(f"{name}: no codes found; expected key 'fine_prompt', 'codes' or 'tokens' "
                             f"or a single array, got keys {keys}")
        return TokenFile(load_npz_member(npz, chosen, name), f"{name} (key '{chosen}')",
                         _scalar(meta.get("sample_rate"), int, name, "sample_rate"),
                         _scalar(meta.get("bandwidth"), float, name, "bandwidth"))


def _read_pt(path: Path, name: str) -> TokenFile:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, torch.Tensor):
        return TokenFile(data, name)
    if isinstance(data, dict) and "codes" in data:
        return TokenFile(data["codes"], f"{name} (key 'codes')",
                         _scalar(data.get("sample_rate"), int, name, "sample_rate"),
                         _scalar(data.get("bandwidth"), float, name, "bandwidth"))
    keys = list(data) if isinstance(data, dict) else type(data).__name__
    raise TokenError(f"{name}: expected a tensor or a dict with 'codes', got {keys}")


def _read_ecdc(path: Path, name: str, lm: nn.Module | None) -> TokenFile:
    with open(path, "rb") as fo:
        codes, header = ecdc.read_ecdc(fo, lm)
    bandwidth = n_q_to_bandwidth(header["nc"]) if header["nc"] in (2, 4, 8, 16, 32) else None
    return TokenFile(codes, f"{name} (EnCodec 24 kHz stream, {header['nc']} codebooks)", _ENCODEC_SR, bandwidth)


def read_tokens(path: str | os.PathLike, *, lm: nn.Module | None = None) -> TokenFile:
    """Read codes from a `.npy`, `.npz`, `.pt` or `.ecdc` file.

    The codes come back as int64 `[B, K, T]` with integer dtype, a valid shape, non-negative values and at
    least 2 frames; check them against a model with `validate_codes`.

    Args:
        path: the token file.
        lm: EnCodec's language model, for `.ecdc` files written with entropy coding; None loads it
            through `mbd.hub` when such a file needs it.

    Raises:
        TokenError: the file is missing, unreadable, corrupted, truncated or holds no usable codes.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt", ".ecdc"):
        raise TokenError(f"{name}: unknown token file type '{path.suffix}'; use .npy, .npz, .pt or .ecdc")
    if not path.is_file():
        raise TokenError(f"{name}: no such file")
    try:
        if suffix == ".npy":
            token_file = TokenFile(load_npy(path, name), name)
        elif suffix == ".npz":
            token_file = _read_npz(path, name)
        elif suffix == ".pt":
            token_file = _read_pt(path, name)
        else:
            token_file = _read_ecdc(path, name, lm)
    except (TokenError, DownloadError):  # DownloadError: the .ecdc language model could not be fetched
        raise
    except ArrayTooLarge as err:
        raise TokenError(str(err)) from None
    except pickle.UnpicklingError as err:
        refused, reason = pickle_error(err)
        if not refused:
            raise TokenError(f"{name}: cannot read {suffix} file: {reason}") from None
        raise TokenError(f"{name}: refused to load: {reason}; token files hold only tensors") from None
    except Exception as err:  # numpy, zipfile, zlib and pickle raise many kinds for corrupted files
        raise TokenError(f"{name}: cannot read {suffix} file: {err or type(err).__name__}") from err
    codes = validate_codes(token_file.codes, n_q=None, cardinality=None, name=name)
    return TokenFile(codes, token_file.source, token_file.sample_rate, token_file.bandwidth)


def write_tokens(
    path: str | os.PathLike,
    codes: torch.Tensor,
    *,
    overwrite: bool = False,
    audio_length: int | None = None,
    lm: nn.Module | None = None,
) -> Path:
    """Write codes to a `.npy` file (`[B, K, T]` int64) or an EnCodec 24 kHz `.ecdc` stream, atomically.

    Args:
        path: destination ending in `.npy` or `.ecdc`.
        codes: codes `[B, K, T]` (for `.ecdc`, B = 1 and values < 1024).
        overwrite: replace an existing file.
        audio_length: `.ecdc` only: the audio length in samples for the header (default about T * 320).
        lm: `.ecdc` only: EnCodec's language model for entropy coding; None writes plain 10-bit codes.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
        TokenError: an unknown extension or invalid codes.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".ecdc"):
        raise TokenError(f"{path}: can write .npy or .ecdc token files, not '{path.suffix}'")
    codes = validate_codes(codes, n_q=None, cardinality=None, name="codes").cpu()
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fo:
        if suffix == ".npy":
            np.save(fo, codes.numpy())
        else:
            ecdc.write_ecdc(fo, codes, audio_length=audio_length, lm=lm)
    return path
