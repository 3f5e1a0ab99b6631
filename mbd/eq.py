"""Re-EQ: match the spectral envelope of the diffusion output to the codec's own decode (AudioCraft's
`MultiBandDiffusion.re_eq`, audiocraft/models/multibanddiffusion.py).

The band statistics and the rescaled output are computed segment by segment along time
(`split_bands_in_segments`), so the 32-band split of a long output never exists in memory at once: a
10-minute re-EQ adds ~0.5 GiB to the process's peak instead of ~8 GiB (benchmarks/README.md).
"""

from __future__ import annotations

import torch

from .bands import split_bands_in_segments
from .errors import InputError

SEGMENT = 2**18
"""Samples per segment (~11 s at 24 kHz): 32 bands of one segment are 32 MiB in float32."""


def band_stds(x: torch.Tensor, sample_rate: int, n_bands: int, segment: int = SEGMENT) -> torch.Tensor:
    """The unbiased std of each mel band of `x` over all its items, channels and samples.

    Equals `split_bands(x, sample_rate, n_bands).flatten(1).std(dim=1)` up to float rounding; the segments'
    means and variances are merged in float64 (Chan et al., 1979), so no segment size loses precision.

    Args:
        x: audio `[B, C, L]`.

    Returns:
        `[n_bands]`, float64 on the CPU.
    """
    count, mean, m2 = 0, torch.zeros(n_bands, dtype=torch.float64), torch.zeros(n_bands, dtype=torch.float64)
    for _, bands in split_bands_in_segments(x, sample_rate, n_bands, segment):
        var_s, mean_s = torch.var_mean(bands.reshape(n_bands, -1), dim=1, correction=0)  # [n_bands] each
        var_s, mean_s = var_s.to("cpu", torch.float64), mean_s.to("cpu", torch.float64)
        n_s = bands[0].numel()
        delta, total = mean_s - mean, count + n_s
        mean = mean + delta * (n_s / total)
        m2 = m2 + var_s * n_s + delta**2 * (count * n_s / total)
        count = total
    return (m2 / (count - 1)).sqrt()


def re_eq(
    wav: torch.Tensor,
    ref: torch.Tensor,
    sample_rate: int,
    n_bands: int = 32,
    strictness: float = 1.0,
    segment: int = SEGMENT,
) -> torch.Tensor:
    """Rescale each mel band of `wav` so its standard deviation matches the same band of `ref`.

    One gain per band for the whole batch: the std is the unbiased std over all batch items, channels
    and samples of the band, as in AudioCraft, so a batch is equalised jointly. Computes
    `sum_k split_bands(wav)[k] * (std(split_bands(ref)[k]) / std(split_bands(wav)[k])) ** strictness`
    (AudioCraft's formula) up to float rounding, in segments of `segment` samples.

    Args:
        wav: audio to equalise `[B, C, L]`.
        ref: reference audio `[B, C, L]` (the codec's decode).
        sample_rate: sample rate of both signals in Hz.
        n_bands: number of mel bands.
        strictness: 0 leaves `wav` unchanged, 1 matches the band energies exactly.
        segment: samples per segment; bounds the memory, not the result.

    Returns:
        `[B, C, L]`.
    """
    if wav.shape != ref.shape:
        raise InputError(f"re_eq needs signals of the same shape, got {tuple(wav.shape)} and {tuple(ref.shape)}")
    gain = (band_stds(ref, sample_rate, n_bands, segment) / band_stds(wav, sample_rate, n_bands, segment)) ** strictness
    # A silent band has no defined gain; leave it untouched rather than turning it into NaN.
    gain = torch.where(torch.isfinite(gain), gain, torch.ones_like(gain)).to(device=wav.device, dtype=wav.dtype)
    out = torch.empty_like(ref)
    for start, bands in split_bands_in_segments(wav, sample_rate, n_bands, segment):  # [n_bands, B, C, s]
        piece = torch.zeros_like(bands[0])
        for band, g in zip(bands, gain):
            piece += band * g
        out[..., start : start + piece.shape[-1]] = piece
    return out
