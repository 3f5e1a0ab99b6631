"""Re-EQ: match the spectral envelope of the diffusion output to the codec's own decode (spec §a)."""

from __future__ import annotations

import torch

from .bands import split_bands


def re_eq(
    wav: torch.Tensor, ref: torch.Tensor, sample_rate: int, n_bands: int = 32, strictness: float = 1.0
) -> torch.Tensor:
    """Rescale each mel band of `wav` so its standard deviation matches the same band of `ref`.

    One gain per band for the whole batch: the std is torch's unbiased std over all batch items, channels
    and samples of the band, as in AudioCraft, so a batch is equalised jointly.

    Args:
        wav: audio to equalise `[B, C, L]`.
        ref: reference audio `[B, C, L]` (the codec's decode).
        sample_rate: sample rate of both signals in Hz.
        n_bands: number of mel bands.
        strictness: 0 leaves `wav` unchanged, 1 matches the band energies exactly.

    Returns:
        `[B, C, L]`.
    """
    if wav.shape != ref.shape:
        raise ValueError(f"re_eq needs signals of the same shape, got {tuple(wav.shape)} and {tuple(ref.shape)}")
    bands = split_bands(wav, sample_rate, n_bands)  # [n_bands, B, C, L]
    bands_ref = split_bands(ref, sample_rate, n_bands)
    out = torch.zeros_like(ref)
    for band, band_ref in zip(bands, bands_ref):
        gain = (band_ref.std() / band.std()) ** strictness
        # A silent band has no defined gain; leave it untouched rather than turning it into NaN.
        out += band * torch.where(torch.isfinite(gain), gain, torch.ones_like(gain))
    return out
