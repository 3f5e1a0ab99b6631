"""Chunked decoding reproduces the unchunked result; the codec's pieces stay within the chunk."""

from __future__ import annotations

import pytest
import torch

from mbd.chunking import (
    chunk_spans,
    context_spans,
    crossfade_window,
    decode_codes_in_pieces,
    decode_in_chunks,
    map_with_context,
)
from mbd.codec import EncodecCodec
from mbd.diffusion import PowerSchedule, ode_sample, spaced_steps
from mbd.options import RuntimeOptions
from tests.conftest import HOP, latents, oracle, tiny_mbd


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


class SlicingCodec(torch.nn.Module):
    """Tokens are latents `[B, D, T]` whose last row holds the frame index; decode returns the frames' slice
    of a fixed reference, so a decode in pieces can be checked against the whole. Records each call's frames."""

    def __init__(self, reference: torch.Tensor, hop: int) -> None:
        super().__init__()
        self.reference, self.hop_length, self.calls = reference, hop, []

    def latents(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(tokens.shape[-1])
        first, last = int(tokens[0, -1, 0]), int(tokens[0, -1, -1])
        return self.reference[..., first * self.hop_length : (last + 1) * self.hop_length]


def test_tokens_to_wav_chunked_re_eqs_globally() -> None:
    from mbd.bands import split_bands

    model = tiny_mbd()
    reference = torch.randn(1, 1, 30 * HOP, generator=torch.Generator().manual_seed(2))
    model.codec = SlicingCodec(reference, HOP)
    tokens = latents(frames=30, batch=1)
    tokens[:, -1] = torch.arange(30.0)
    rate = model.sample_rate / HOP
    wav = model.tokens_to_wav(
        tokens,
        n_bands=4,
        steps=[999, 0],
        options=RuntimeOptions(fused=True, chunk_seconds=10 / rate),
        generator=torch.Generator().manual_seed(0),
    )
    assert wav.shape == reference.shape
    # The reference was decoded in pieces of at most one chunk (10 frames), and they tile all 30 frames.
    assert max(model.codec.calls) <= 10 and len(model.codec.calls) > 3

    # One gain per band over the whole signal: each band's std matches the reference's (up to band leakage).
    def band_std(x: torch.Tensor) -> torch.Tensor:
        return split_bands(x, model.sample_rate, 4).std(dim=(1, 2, 3))

    raw = model.generate(tokens, steps=[999, 0], generator=torch.Generator().manual_seed(0))
    assert ((band_std(raw) - band_std(reference)).abs() / band_std(reference)).max() > 0.2
    torch.testing.assert_close(band_std(wav), band_std(reference), rtol=2e-2, atol=0)


def test_context_spans_tile_with_bounded_pieces() -> None:
    # chunk 8, context 2 (= 8 // 4): 4 kept per piece, 2 borrowed from each neighbour.
    assert context_spans(10, 8, 2) == [(0, 0, 4, 6), (2, 4, 8, 10), (6, 8, 10, 10)]
    assert context_spans(5, 8, 2) == [(0, 0, 4, 5), (2, 4, 5, 5)]
    assert context_spans(3, 1, 5) == [(0, 0, 1, 1), (1, 1, 2, 2), (2, 2, 3, 3)]  # no room for context
    spans = context_spans(1001, 75, 30)  # context capped at 75 // 4 = 18
    assert all(hi - lo <= 75 for lo, _, _, hi in spans)
    assert [s for _, s, _, _ in spans[1:]] == [e for _, _, e, _ in spans[:-1]]
    assert spans[0][1] == 0 and spans[-1][2] == 1001
    assert all(s - lo == 18 for lo, s, _, _ in spans[1:]) and all(hi - e == 18 for _, _, e, hi in spans[:-1])


@pytest.mark.parametrize("step_in, step_out", [(1, 3), (4, 1)])
def test_map_with_context_is_exact_within_the_receptive_field(step_in: int, step_out: int) -> None:
    """A network that sees 2 positions either side is reproduced exactly with 2 positions of context."""
    weight = torch.randn(1, 1, 5 * step_in, generator=torch.Generator().manual_seed(0))

    def fn(x: torch.Tensor) -> torch.Tensor:  # [B, 1, n * step_in] -> [B, 1, n * step_out]
        y = torch.nn.functional.conv1d(x, weight, padding=2 * step_in)[..., :: step_in]
        return y[..., : -(-x.shape[-1] // step_in)].repeat_interleave(step_out, dim=-1)

    x = torch.randn(2, 1, 53 * step_in - (step_in - 1), generator=torch.Generator().manual_seed(1))
    calls: list[int] = []

    def spy(piece: torch.Tensor) -> torch.Tensor:
        calls.append(piece.shape[-1])
        return fn(piece)

    torch.testing.assert_close(map_with_context(spy, x, 12, 2, step_in, step_out), fn(x), atol=1e-6, rtol=0)
    assert len(calls) == 7 and max(calls) <= 12 * step_in


def test_encodec_reference_decoded_in_pieces_is_close(encodec_codec: EncodecCodec) -> None:
    """EnCodec's decoder (convolutions and an LSTM) in 0.5 s pieces with their context ~ the whole decode."""
    codec = encodec_codec
    codes = torch.randint(0, 1024, (1, 4, 76), generator=torch.Generator().manual_seed(0))  # ~1 s
    calls: list[int] = []

    def decode(piece: torch.Tensor) -> torch.Tensor:
        calls.append(piece.shape[-1])
        return codec.decode(piece)

    whole = codec.decode(codes)
    pieces = decode_codes_in_pieces(decode, codes, 320, 24000, 0.5)
    assert pieces.shape == whole.shape and max(calls) <= 38 and len(calls) == 4  # 38 frames: 9 context each side
    error = (pieces - whole).norm() / whole.norm()
    assert error < 1e-3
    # Without context the cuts show: the context is what makes the pieces agree.
    bare = torch.cat([codec.decode(codes[..., s : s + 19]) for s in range(0, 76, 19)], dim=-1)
    assert (bare - whole).norm() / whole.norm() > 10 * error
    assert decode_codes_in_pieces(decode, codes, 320, 24000, 2.0) is not None and calls[-1] == 76  # fits: whole
