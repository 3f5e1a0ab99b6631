"""Mel-spaced frequency bands (spec §d, "Band splitting").

MBD splits audio into bands three times: 4 bands to pick each model's training target, 8 bands inside
the EQ processor and 32 bands for the final re-EQ. All three use julius' windowed-sinc low-pass cascade
with cutoffs evenly spaced on the mel scale, and the bands of a signal sum back to that signal.
"""

from __future__ import annotations

import julius
import torch


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


def band_cutoffs(sample_rate: int, n_bands: int) -> list[float]:
    """The `n_bands - 1` interior cutoff frequencies in Hz, ascending."""
    return [float(c) for c in band_splitter(sample_rate, n_bands).cutoffs]
