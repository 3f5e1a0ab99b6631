"""Sample-rate conversion for any rate from 1 kHz to 384 kHz, in time and memory linear in the audio.

Rates whose ratio reduces to a small fraction (16, 22.05, 44.1, 48 kHz ... to 24 kHz) go through
`julius.resample_frac`, as AudioCraft's `convert_audio` does, so the output matches AudioCraft's. julius
builds one filter per output phase, so an odd ratio such as 44101/24000 would need 24000 filters and
gigabytes; those go through libsoxr (`soxr.resample`, its "HQ" setting), whose polyphase design stays
small for any ratio. Either way the output has `L * new_sr // old_sr` samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import julius
import numpy as np
import soxr
import torch

from .errors import AudioError, InputError

MIN_RATE = 1_000
MAX_RATE = 384_000
MAX_JULIUS_PHASES = 1_000
"""The largest reduced numerator or denominator of `new_sr / old_sr` handed to julius."""


class SampleRateError(InputError):
    """A sample rate outside [MIN_RATE, MAX_RATE] or not an integer."""


def check_rate(sample_rate: float) -> int:
    """The rate as an int, if it is a whole number of Hz in [MIN_RATE, MAX_RATE]."""
    if not float(sample_rate).is_integer() or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise SampleRateError(
            f"sample rate {sample_rate} Hz is not supported (need a whole number from {MIN_RATE} to {MAX_RATE} Hz)"
        )
    return int(sample_rate)


def resample(
    wav: torch.Tensor, old_sr: int, new_sr: int, *, output_length: int | None = None, full: bool = False
) -> torch.Tensor:
    """Resample `wav` `[..., L]` from `old_sr` to `new_sr` Hz, giving `[..., L * new_sr // old_sr]`.

    Args:
        output_length: the output's length instead (as julius' `output_length`; the soxr path pads or cuts).
        full: give `ceil(L * new_sr / old_sr)` samples, every input sample's worth (julius' `full`), e.g.
            for a round trip that resamples back with `output_length=L`.

    Raises:
        SampleRateError: either rate is outside [MIN_RATE, MAX_RATE].
    """
    old_sr, new_sr = check_rate(old_sr), check_rate(new_sr)
    if old_sr == new_sr:
        return wav
    if output_length is not None:
        length = output_length
    else:
        length = -(-wav.shape[-1] * new_sr // old_sr) if full else wav.shape[-1] * new_sr // old_sr
    gcd = math.gcd(old_sr, new_sr)
    if max(old_sr, new_sr) // gcd <= MAX_JULIUS_PHASES:
        return julius.resample_frac(wav, old_sr, new_sr, output_length=length)
    rows = wav.detach().reshape(-1, wav.shape[-1]).to("cpu", torch.float32).numpy()  # [N, L]
    out = soxr.resample(np.ascontiguousarray(rows.T), old_sr, new_sr, quality="HQ")  # [L', N]
    out = out.reshape(out.shape[0], -1)
    out = np.pad(out[:length], ((0, max(0, length - out.shape[0])), (0, 0)))
    return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*wav.shape[:-1], length).to(wav)


def at_rate(
    wav: torch.Tensor,
    sample_rate: int,
    model_rate: int,
    min_samples: int,
    process: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """`process` (audio `[B, C, L']` at `model_rate` to audio of that shape) applied to `wav` `[B, C, L]` at
    `sample_rate`: resampled in (every input sample kept), checked to be at least `min_samples` long, and
    the result resampled back to `[B, C, L]`. An input already at `model_rate` is not resampled."""
    length = wav.shape[-1]
    if sample_rate != model_rate:  # full: keep every input sample for the way back
        wav = resample(wav, sample_rate, model_rate, full=True)
    if wav.shape[-1] < min_samples:
        raise AudioError(f"audio too short: {wav.shape[-1]} samples at {model_rate} Hz, need at least {min_samples}")
    out = process(wav)
    if sample_rate != model_rate:
        out = resample(out, model_rate, sample_rate, output_length=length)
    return out
