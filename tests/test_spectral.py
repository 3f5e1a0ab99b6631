"""mbd.spectral: STFT analysis and synthesis, the exact band split and the mel-envelope normalisation."""

from __future__ import annotations

import pytest
import torch

from mbd.mel import MelConfig, MelSpectrogram
from mbd.spectral import SpectralBands, SpectralConfig

SR = 24000


def bands(n_bands: int = 4) -> SpectralBands:
    return SpectralBands(SpectralConfig(n_bands=n_bands), MelSpectrogram(MelConfig()).mel.mel_scale.fb)


def test_stft_round_trip_of_band_limited_audio() -> None:
    t = torch.arange(8192) / SR
    freqs = torch.tensor([[110.0, 1000.0, 7300.0], [440.0, 3000.0, 10_000.0]])  # nothing near Nyquist
    wav = torch.sin(2 * torch.pi * freqs[:, :, None] * t).sum(dim=1, keepdim=True) / 3  # [2, 1, 8192]
    sb = bands()
    spec = sb.stft(wav)
    assert spec.shape == (2, 512, 8192 // 256 + 1) and spec.is_complex()
    inner = slice(512, -512)  # the reflect-padded edges are not band-limited
    torch.testing.assert_close(sb.istft(spec, 8192)[..., inner], wav[..., inner], atol=1e-3, rtol=0)


@pytest.mark.parametrize("n_bands", [1, 4, 8])
def test_normalise_is_inverted_exactly_and_bands_are_contiguous_bin_ranges(n_bands: int) -> None:
    sb = bands(n_bands)
    sb.sigma.copy_(torch.rand(n_bands) + 0.5)
    spec = torch.randn(2, 512, 7, dtype=torch.complex64)
    env = torch.rand(2, 512, 7) + 0.1
    x = sb.normalise(spec, env)
    assert x.shape == (2, n_bands, 2 * 512 // n_bands, 7)
    w = 512 // n_bands
    last = spec[:, -w:] / env[:, -w:] / sb.sigma[-1]
    torch.testing.assert_close(x[:, -1], torch.cat([last.real, last.imag], dim=1))  # band n-1 = the top bins
    torch.testing.assert_close(sb.denormalise(x, env), spec)


def test_envelope_of_white_noise_is_its_mean_magnitude() -> None:
    # For a flat spectrum each mel band's magnitude divided by its filter's area is the per-bin magnitude.
    features = MelSpectrogram(MelConfig())
    wav = torch.randn(1, 1, SR * 4, generator=torch.Generator().manual_seed(0))
    sb = bands()
    mean_mag = sb.stft(wav).abs().mean(dim=-1)  # [1, 512]
    env = sb.envelope(features(wav)).mean(dim=-1)  # [1, 512]
    ratio = (env / mean_mag)[:, 20:]  # the lowest filters are narrower than a bin
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.05)
    assert ratio.std().item() < 0.1


def test_envelope_floor_and_fit() -> None:
    sb = bands()
    silent = torch.full((1, 100, 5), -11.5)
    assert (sb.envelope(silent) >= sb.config.floor).all()
    spec = torch.randn(3, 512, 9, dtype=torch.complex64) * 3  # real and imaginary parts of std 3 / sqrt(2)
    sb.fit(spec, torch.ones(3, 512, 9))
    torch.testing.assert_close(sb.sigma, torch.full((4,), 3 / 2**0.5), rtol=0.1, atol=0)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="equal bands"):
        SpectralConfig(n_bands=3)
    with pytest.raises(ValueError, match="floor"):
        SpectralConfig(floor=0.0)
