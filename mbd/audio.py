"""Audio files for the command line: read as mono at the codec's rate, write WAV/FLAC atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import julius
import numpy as np
import soundfile
import torch

_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class AudioError(ValueError):
    """An audio file cannot be read or written; the message names the file."""


def read_audio(path: str | os.PathLike, target_sr: int) -> tuple[torch.Tensor, list[str]]:
    """Read an audio file as mono float32 at `target_sr`.

    Args:
        path: any file libsndfile reads (WAV, FLAC, OGG, ...).
        target_sr: sample rate to return, in Hz; other rates are resampled with `julius.resample_frac`.

    Returns:
        The audio `[1, L]` and notes on what was done to it (downmixing, resampling).

    Raises:
        AudioError: the file is missing, unreadable, empty or holds non-finite samples.
    """
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [L, C]
    except (OSError, RuntimeError, ValueError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioError(f"{path}: cannot read audio: {err}") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    notes = []
    wav = torch.from_numpy(data.T.copy())  # [C, L]
    if wav.shape[0] > 1:
        notes.append(f"downmixed {wav.shape[0]} channels to mono")
        wav = wav.mean(dim=0, keepdim=True)  # [1, L]
    if sample_rate != target_sr:
        notes.append(f"resampled {sample_rate} Hz -> {target_sr} Hz")
        wav = julius.resample_frac(wav, sample_rate, target_sr)
    return wav, notes


def write_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, *, overwrite: bool) -> list[str]:
    """Write audio as 16-bit WAV or FLAC (chosen by the extension), atomically.

    The file is written next to `path` under a temporary name and then renamed, so `path` is never left
    half-written.

    Args:
        path: destination ending in `.wav` or `.flac`.
        wav: audio `[C, L]` (C = 1 for MBD output), nominally in [-1, 1].
        sample_rate: in Hz.
        overwrite: replace an existing file.

    Returns:
        Notes on what was done (samples clipped to [-1, 1]).

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
        AudioError: unknown extension or a badly shaped `wav`.
    """
    path = Path(path)
    audio_format = _FORMATS.get(path.suffix.lower())
    if audio_format is None:
        raise AudioError(f"{path}: can write {' or '.join(_FORMATS)} files, not '{path.suffix}'")
    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise AudioError(f"{path}: audio to write must be [C, L] with L > 0, got shape {list(wav.shape)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--force) to replace it")
    if not path.parent.is_dir():
        raise AudioError(f"{path}: the folder {path.parent} does not exist")
    notes = []
    data = wav.detach().to("cpu", torch.float32)
    clipped = int((data.abs() > 1).sum())
    if clipped:
        notes.append(f"clipped {clipped} samples outside [-1, 1]")
        data = data.clamp(-1, 1)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fo:
            soundfile.write(fo, data.T.numpy(), sample_rate, format=audio_format, subtype="PCM_16")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return notes
