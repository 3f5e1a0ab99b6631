"""Band splitting: bands sum to the input, cutoffs and filters match AudioCraft's, segments match the whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mbd.bands import band_splitter, split_bands, split_bands_in_segments
from tests.conftest import GOLDEN


@pytest.mark.parametrize("n_bands, segment", [(1, 100), (8, 13), (8, 999), (32, 2000), (32, 10**6)])
def test_segments_equal_whole_split(n_bands: int, segment: int) -> None:
    x = torch.randn(2, 1, 3001, generator=torch.Generator().manual_seed(0))
    pieces = list(split_bands_in_segments(x, 24000, n_bands, segment))
    assert [start for start, _ in pieces] == list(range(0, 3001, segment))
    got = torch.cat([bands for _, bands in pieces], dim=-1)
    torch.testing.assert_close(got, split_bands(x, 24000, n_bands), atol=1e-5, rtol=0)


def test_segment_must_be_positive() -> None:
    with pytest.raises(ValueError, match="segment"):
        next(split_bands_in_segments(torch.zeros(1, 10), 24000, 4, 0))


@pytest.mark.parametrize("sample_rate", [24000, 32000])
@pytest.mark.parametrize("n_bands", [1, 4, 8, 32])
@pytest.mark.parametrize("shape", [(4001,), (2, 1, 3000), (3, 2, 2500)], ids=["1d", "mono-batch", "stereo-batch"])
def test_bands_sum_to_the_input(sample_rate: int, n_bands: int, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(n_bands)
    x = torch.randn(shape, generator=g) * torch.linspace(0.1, 2.0, shape[-1]) + 0.3
    bands = split_bands(x, sample_rate, n_bands)
    assert bands.shape == (n_bands, *shape)
    torch.testing.assert_close(bands.sum(0), x, atol=1e-5, rtol=0)
    x64 = x.double()
    torch.testing.assert_close(split_bands(x64, sample_rate, n_bands).sum(0), x64, atol=1e-12, rtol=0)
    if n_bands > 1:  # not trivially one band equal to the input
        assert (bands[0] - x).abs().max() > 0.1


def _htk_mel_cutoffs(sample_rate: int, n_bands: int) -> np.ndarray:
    """Cutoffs evenly spaced on the HTK mel scale, mel = 2595 log10(1 + f / 700), from 0 to Nyquist."""
    mels = np.linspace(0.0, 2595 * np.log10(1 + sample_rate / 2 / 700), n_bands + 1)[1:-1]
    return 700 * (10 ** (mels / 2595) - 1)


@pytest.mark.parametrize("sample_rate", [24000, 32000])
@pytest.mark.parametrize("n_bands", [4, 8, 32])
def test_cutoffs_and_filters_match_audiocraft(sample_rate: int, n_bands: int) -> None:
    """Against a hand derivation and the cutoffs and filter sizes recorded from AudioCraft's julius (tests/data)."""
    released = json.loads((GOLDEN / "released_config_shapes.json").read_text())
    splitter = band_splitter(sample_rate, n_bands)
    cutoffs = [float(c) * sample_rate for c in splitter.lowpass.cutoffs]
    np.testing.assert_allclose(cutoffs, _htk_mel_cutoffs(sample_rate, n_bands), rtol=1e-5)
    np.testing.assert_allclose(cutoffs, released[f"cutoffs_hz_sr{sample_rate}"][str(n_bands)], rtol=1e-5)
    half_size = splitter.lowpass.half_size
    assert half_size == released[f"lowpass_half_size_sr{sample_rate}"][str(n_bands)]


@pytest.mark.parametrize("freq, band", [(300.0, 0), (1000.0, 1), (4000.0, 2), (9000.0, 3)])
def test_a_tone_lands_in_its_band(freq: float, band: int) -> None:
    """4 bands at 24 kHz split at about 745, 2282 and 5454 Hz: a steady tone's energy stays in its band."""
    t = torch.arange(24000) / 24000
    x = torch.sin(2 * torch.pi * freq * t)
    energy = split_bands(x, 24000, 4)[:, 2000:-2000].pow(2).sum(-1)  # away from the edges
    assert energy[band] > 0.99 * energy.sum()
