"""Sample-rate conversion: AudioCraft's julius path for common rates, libsoxr for odd ratios, bounded rates."""

from __future__ import annotations

import math

import julius
import pytest
import torch

from mbd.resample import SampleRateError, check_rate, resample


def _sine(freq: float, sr: int, seconds: float) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return torch.sin(2 * math.pi * freq * t).float()


@pytest.mark.parametrize("old_sr", [16000, 44100, 48000, 8000])
def test_common_rates_match_julius(old_sr: int) -> None:
    wav = torch.randn(2, 1, old_sr // 10, generator=torch.Generator().manual_seed(0))
    want = julius.resample_frac(wav, old_sr, 24000)
    got = resample(wav, old_sr, 24000)
    assert got.shape == (2, 1, old_sr // 10 * 24000 // old_sr)
    assert torch.equal(got[..., : want.shape[-1]], want[..., : got.shape[-1]])


@pytest.mark.parametrize("old_sr", [44101, 7919, 383_999])
def test_odd_ratios_are_band_limited_sines(old_sr: int) -> None:
    """A 1 kHz sine at an odd rate becomes the same sine at 24 kHz (away from the edges)."""
    wav = _sine(1000.0, old_sr, 0.3)[None]
    got = resample(wav, old_sr, 24000)
    assert got.shape == (1, wav.shape[-1] * 24000 // old_sr)
    want = _sine(1000.0, 24000, 0.3)[: got.shape[-1]]
    assert (got[0, 500:-500] - want[500:-500]).abs().max() < 1e-3


def test_identity_and_leading_dims() -> None:
    wav = torch.randn(3, 2, 999)
    assert resample(wav, 24000, 24000) is wav
    assert resample(wav, 44101, 24000).shape == (3, 2, 999 * 24000 // 44101)


@pytest.mark.parametrize("rate", [999, 384_001, 2_147_483_647, 0, -24000, 22050.5, float("nan")])
def test_rates_out_of_range_are_refused(rate: float) -> None:
    with pytest.raises(SampleRateError, match="not supported"):
        check_rate(rate)
    with pytest.raises(SampleRateError):
        resample(torch.zeros(1, 100), rate, 24000)


@pytest.mark.parametrize("old_sr", [16000, 44101])  # julius and soxr
def test_round_trip_lengths(old_sr: int) -> None:
    """`full` keeps every input sample's worth, `output_length` returns to the input's length (regenerate)."""
    wav = torch.randn(2, 1, 1001)
    up = resample(wav, old_sr, 24000, full=True)
    assert up.shape[-1] == -(-1001 * 24000 // old_sr)
    assert resample(up, 24000, old_sr, output_length=1001).shape == (2, 1, 1001)
