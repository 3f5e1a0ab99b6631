"""The segmented re-EQ equals AudioCraft's whole-signal formula."""

from __future__ import annotations

import functools

import pytest
import torch

from mbd.bands import split_bands
from mbd.eq import band_stds, re_eq


def whole_signal_re_eq(wav: torch.Tensor, ref: torch.Tensor, n_bands: int, strictness: float) -> torch.Tensor:
    """AudioCraft's formula on the whole signal at once (mbd's re_eq before it was segmented)."""
    bands, bands_ref = split_bands(wav, 24000, n_bands), split_bands(ref, 24000, n_bands)
    out = torch.zeros_like(ref)
    for band, band_ref in zip(bands, bands_ref):
        gain = (band_ref.std() / band.std()) ** strictness
        out += band * torch.where(torch.isfinite(gain), gain, torch.ones_like(gain))
    return out


def signals(length: int = 15001) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(2, 2, length, generator=g) + 0.5  # an offset exercises the merge of segment means
    ref = torch.randn(2, 2, length, generator=g) * torch.linspace(0, 3, length)
    return wav, ref


@functools.lru_cache
def whole_signal_want(n_bands: int) -> torch.Tensor:
    """`whole_signal_re_eq` of `signals()` at strictness 0.7, once per band count."""
    return whole_signal_re_eq(*signals(), n_bands, 0.7)


@pytest.mark.parametrize("n_bands, segment", [(32, 1000), (32, 7777), (8, 2**18), (1, 500)])
def test_re_eq_equals_whole_signal_formula(n_bands: int, segment: int) -> None:
    wav, ref = signals()
    want = whole_signal_want(n_bands)
    torch.testing.assert_close(re_eq(wav, ref, 24000, n_bands, 0.7, segment), want, atol=1e-5, rtol=0)


def test_band_stds_match_torch_std() -> None:
    wav, _ = signals()
    want = split_bands(wav, 24000, 32).flatten(1).std(dim=1).double()
    torch.testing.assert_close(band_stds(wav, 24000, 32, segment=4000), want, atol=0, rtol=1e-6)
