"""Mel-spaced frequency bands (julius' `SplitBands`, which AudioCraft uses for all three splits).

MBD splits audio into bands three times: 4 bands to pick each model's training target, 8 bands inside
the EQ processor and 32 bands for the final re-EQ. All three use julius' windowed-sinc low-pass cascade
with cutoffs evenly spaced on the mel scale, and the bands of a signal sum back to that signal.
"""

from __future__ import annotations

from collections.abc import Iterator

import julius
import torch
import torch.nn.functional as F
from julius.fftconv import fft_conv1d


def band_splitter(sample_rate: int, n_bands: int) -> julius.SplitBands:
    """A module splitting `[*, L]` audio into `n_bands` mel-spaced bands `[n_bands, *, L]`.

    Its low-pass bank is a persistent buffer (`lowpass.filters`, `[n_bands - 1, 1, 2 * half_size + 1]`),
    so a processor that owns one saves and restores the exact filters it was trained with.
    """
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    return julius.SplitBands(sample_rate, n_bands=n_bands)


def split_bands(x: torch.Tensor, sample_rate: int, n_bands: int) -> torch.Tensor:
    """Split `x` into mel-spaced bands.

    Args:
        x: audio `[*, L]`.
        sample_rate: sample rate of `x` in Hz.
        n_bands: number of bands.

    Returns:
        `[n_bands, *, L]`; the sum over the first dimension equals `x` up to rounding.
    """
    return band_splitter(sample_rate, n_bands).to(device=x.device, dtype=x.dtype)(x)


def split_bands_in_segments(
    x: torch.Tensor, sample_rate: int, n_bands: int, segment: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """`split_bands(x)` piece by piece along time, for signals too long to split in one go.

    Each piece is filtered with `half_size` samples of context on both sides, taken from the signal
    edge-padded exactly as julius pads it (only the pieces at the edges are padded, so no padded copy of the
    whole signal is made), so the pieces equal the matching slices of `split_bands(x)` up to float rounding.
    Memory is O(n_bands * segment) besides `x` instead of O(n_bands * L).

    Args:
        x: audio `[*, L]`.
        sample_rate: sample rate of `x` in Hz.
        n_bands: number of bands.
        segment: samples per piece (the last piece may be shorter).

    Yields:
        `(start, bands)`: bands `[n_bands, *, s]` of samples `[start, start + s)`.
    """
    if segment < 1:
        raise ValueError(f"segment must be >= 1, got {segment}")
    lowpass = band_splitter(sample_rate, n_bands).to(device=x.device, dtype=x.dtype).lowpass
    *lead, length = x.shape
    flat = x.reshape(-1, 1, length)  # [N, 1, L]
    half = 0 if lowpass is None else lowpass.half_size
    for start in range(0, length, segment):
        end = min(start + segment, length)
        piece = flat[..., start:end]  # [N, 1, s]
        if lowpass is None:
            yield start, piece.reshape(1, *lead, end - start)
            continue
        # The slice of the signal edge-padded by `half` on both sides, without padding all of it at once.
        lo, hi = start - half, end + half
        context = flat[..., max(lo, 0) : min(hi, length)]
        if lo < 0 or hi > length:
            context = F.pad(context, (max(-lo, 0), max(hi - length, 0)), mode="replicate")  # [N, 1, s + 2 * half]
        conv = fft_conv1d if lowpass.fft else F.conv1d
        lows = conv(context, lowpass.filters).transpose(0, 1)  # [n_bands - 1, N, s]
        # As julius.SplitBands: band 0 is the lowest low-pass, then differences, then the remainder.
        bands = torch.cat([lows[:1], lows[1:] - lows[:-1], piece.transpose(0, 1) - lows[-1:]])  # [n_bands, N, s]
        yield start, bands.reshape(n_bands, *lead, end - start)
