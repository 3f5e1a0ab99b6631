"""Audio files: the one reader (mono at a given rate, whole or a window) and an atomic WAV/FLAC writer."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile
import torch

from .atomic import atomic_path
from .errors import AudioError
from .resample import SampleRateError, check_rate, resample

__all__ = ["AUDIO_SUFFIXES", "AudioError", "read_audio", "write_audio"]

# Extensions of the audio files looked for in folders (libsndfile reads them all).
AUDIO_SUFFIXES = (
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
    ".w64", ".rf64", ".voc", ".sd2", ".nist",
)
_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
_MARGIN = 64  # samples of resampling context read on each side of a window


def read_audio(
    path: str | os.PathLike, target_sr: int, *, start: int = 0, length: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Read an audio file, or a window of it, as mono float32 at `target_sr`.

    Args:
        path: any file libsndfile reads (WAV, FLAC, OGG, ...).
        target_sr: sample rate to return, in Hz; other rates (1 to 384 kHz) are resampled (`mbd.resample`).
        start: first sample of the window, at `target_sr`.
        length: samples in the window, at `target_sr`, zero-padded past the end of the file; None reads the
            whole file (which must then hold samples).

    Returns:
        The audio `[1, L]` (`L = length` for a window) and notes on what was done to it (downmixing,
        resampling).

    Raises:
        AudioError: the file is missing, unreadable, empty, at an unsupported sample rate or holds non-finite
            samples.
    """
    try:
        with soundfile.SoundFile(str(path)) as f:
            sample_rate = f.samplerate
            if sample_rate != target_sr:
                check_rate(sample_rate)
            if length is None:
                data = f.read(dtype="float32", always_2d=True)  # [L, C]
            else:
                ratio = sample_rate / target_sr
                margin = 0 if sample_rate == target_sr else _MARGIN
                src_start = max(0, int(math.floor(start * ratio)) - margin)
                f.seek(src_start)
                data = f.read(int(math.ceil(length * ratio)) + 2 * margin, dtype="float32", always_2d=True)
    except SampleRateError as err:
        raise AudioError(f"{path}: {err}") from None
    except (OSError, RuntimeError, ValueError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioError(f"{path}: cannot read audio: {err}") from err
    if length is None and data.shape[0] == 0:
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
        wav = resample(wav, sample_rate, target_sr)
        if length is not None:
            wav = wav[:, start - round(src_start / ratio) :]  # drop the context before `start`
    if length is not None:
        wav = torch.nn.functional.pad(wav[:, :length], (0, max(0, length - wav.shape[-1])))
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
        AudioError: unknown extension, a badly shaped `wav`, or NaN/inf samples (nothing is written).
    """
    path = Path(path)
    audio_format = _FORMATS.get(path.suffix.lower())
    if audio_format is None:
        raise AudioError(f"{path}: can write {' or '.join(_FORMATS)} files, not '{path.suffix}'")
    if wav.dim() != 2 or wav.shape[-1] == 0:
        raise AudioError(f"{path}: audio to write must be [C, L] with L > 0, got shape {list(wav.shape)}")
    if not path.parent.is_dir():
        raise AudioError(f"{path}: the folder {path.parent} does not exist")
    notes = []
    data = wav.detach().to("cpu", torch.float32)
    if not torch.isfinite(data).all():
        bad = int((~torch.isfinite(data)).sum())
        raise AudioError(f"{path}: not written: the audio holds {bad} NaN or infinite samples")
    clipped = int((data.abs() > 1).sum())
    if clipped:
        notes.append(f"clipped {clipped} samples outside [-1, 1]")
        data = data.clamp(-1, 1)
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fo:
        soundfile.write(fo, data.T.numpy(), sample_rate, format=audio_format, subtype="PCM_16")
    return notes
