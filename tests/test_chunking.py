"""Chunked decoding reproduces the unchunked result."""

from __future__ import annotations

import pytest
import torch

from mbd.chunking import chunk_spans, crossfade_window, decode_in_chunks
from mbd.diffusion import PowerSchedule, ode_sample, spaced_steps
from mbd.options import RuntimeOptions
from tests.conftest import HOP, ToyCodec, latents, oracle, tiny_mbd


def test_chunk_spans_cover_with_overlap() -> None:
    assert chunk_spans(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert chunk_spans(3, 8, 2) == [(0, 3)]
    spans = chunk_spans(101, 16, 4)
    assert spans[0][0] == 0 and spans[-1][1] == 101
    assert all(b[0] == a[1] - 4 for a, b in zip(spans, spans[1:]))
    with pytest.raises(ValueError):
        chunk_spans(10, 4, 4)


def test_crossfade_windows_are_complementary() -> None:
    w = crossfade_window(37)
    torch.testing.assert_close(w + w.flip(0), torch.ones(37))
    assert (w.diff() > 0).all() and 0 < w[0] < 0.01


@pytest.mark.parametrize("chunk, overlap", [(7, 2), (5, 0), (40, 3), (4, 3)])
def test_oracle_chunked_equals_unchunked(chunk: int, overlap: int) -> None:
    """A DDIM decode with the oracle eps of a known x0 recovers, chunk by chunk, exactly the x0 slices."""
    n_frames, hop, length = 23, 16, 23 * 16 - 5
    schedule = PowerSchedule()
    x0 = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(0)).clamp(-4, 4)
    lat = torch.arange(n_frames, dtype=torch.float32).expand(2, 3, n_frames)  # frame index as the latent
    calls: list[int] = []

    def decode(piece: torch.Tensor, samples: int) -> torch.Tensor:
        start = int(piece[0, 0, 0]) * hop
        target = x0[..., start : start + samples]
        calls.append(samples)
        x_T = torch.randn(target.shape, generator=torch.Generator().manual_seed(len(calls)))
        return ode_sample("ddim", oracle(target, schedule), x_T, schedule, spaced_steps(4))

    whole = decode(lat, length)
    chunked = decode_in_chunks(decode, lat, hop, length, chunk, overlap)
    assert len(calls) == 1 + len(chunk_spans(n_frames, chunk, overlap))
    torch.testing.assert_close(whole, x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)


class HopOnly(torch.nn.Module):
    hop_length = HOP


def test_pipeline_chunking_is_seeded_and_bounded() -> None:
    model = tiny_mbd()
    lat = latents(frames=40, batch=1)
    kwargs = dict(length=40 * HOP - 3, steps=[999, 500, 0])
    model.codec = HopOnly()  # generate only needs the codec's hop
    rate = model.sample_rate / HOP  # latent frames per second
    chunked = RuntimeOptions(fused=True, chunk_seconds=12 / rate, overlap_seconds=3 / rate)
    one = model.generate(lat, options=chunked, generator=torch.Generator().manual_seed(5), **kwargs)
    two = model.generate(lat, options=chunked, generator=torch.Generator().manual_seed(5), **kwargs)
    assert one.shape == (1, 1, 40 * HOP - 3)
    torch.testing.assert_close(one, two, atol=0, rtol=0)
    # One chunk covering everything is the unchunked decode with the same seed.
    fused = RuntimeOptions(fused=True)
    whole = model.generate(lat, options=fused, generator=torch.Generator().manual_seed(5), **kwargs)
    one_chunk = RuntimeOptions(fused=True, chunk_seconds=100 / rate)
    single = model.generate(lat, options=one_chunk, generator=torch.Generator().manual_seed(5), **kwargs)
    torch.testing.assert_close(single, whole, atol=0, rtol=0)
    assert (one - whole).abs().max() > 1e-3  # chunks draw their own noise


def test_tokens_to_wav_chunked_re_eqs_globally() -> None:
    from mbd.bands import split_bands

    model = tiny_mbd()
    reference = torch.randn(1, 1, 30 * HOP, generator=torch.Generator().manual_seed(2))
    model.codec = ToyCodec(reference, HOP)
    rate = model.sample_rate / HOP
    wav = model.tokens_to_wav(
        latents(frames=30, batch=1),
        n_bands=4,
        steps=[999, 0],
        options=RuntimeOptions(fused=True, chunk_seconds=10 / rate),
        generator=torch.Generator().manual_seed(0),
    )
    assert wav.shape == reference.shape

    # One gain per band over the whole signal: each band's std matches the reference's (up to band leakage).
    def band_std(x: torch.Tensor) -> torch.Tensor:
        return split_bands(x, model.sample_rate, 4).std(dim=(1, 2, 3))

    raw = model.generate(latents(frames=30, batch=1), steps=[999, 0], generator=torch.Generator().manual_seed(0))
    assert ((band_std(raw) - band_std(reference)).abs() / band_std(reference)).max() > 0.2
    torch.testing.assert_close(band_std(wav), band_std(reference), rtol=2e-2, atol=0)
