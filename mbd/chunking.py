"""Chunked processing of long audio: bounded memory, time linear in length.

Two ways to cut a long signal:

- `decode_in_chunks` (the diffusion decode): the latent is cut on frame boundaries into chunks that overlap
  by a few frames. Each chunk is decoded on its own (its overlap frames give the model context across the
  cut), and neighbouring chunks are crossfaded over their overlap with complementary raised-cosine windows
  (w and 1 - w), so a signal that two chunks agree on is reproduced exactly. Re-EQ is applied afterwards to
  the whole output by `MultiBandDiffusion.tokens_to_wav`, never per chunk.
- `map_with_context` (the codec's encoder and decoder): each piece is computed with some context on both
  sides and only its centre is kept; the kept centres tile the signal, nothing is crossfaded. For a
  network with a finite receptive field that fits in the context this is exact; EnCodec's LSTM has an
  unbounded one, so it is exact only up to the state the context does not recover (small after 1 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import InputError


def chunk_spans(n_frames: int, chunk_frames: int, overlap_frames: int) -> list[tuple[int, int]]:
    """Frame ranges `[start, end)` of the chunks; consecutive ranges share `overlap_frames` frames.

    Args:
        n_frames: latent frames T.
        chunk_frames: frames per chunk, overlap included.
        overlap_frames: frames shared by neighbouring chunks (< chunk_frames).
    """
    if not 0 <= overlap_frames < chunk_frames:
        raise ValueError(f"need 0 <= overlap_frames < chunk_frames, got {overlap_frames}, {chunk_frames}")
    hop = chunk_frames - overlap_frames
    spans, start = [], 0
    while True:
        end = min(start + chunk_frames, n_frames)
        spans.append((start, end))
        if end >= n_frames:
            return spans
        start += hop


def crossfade_window(length: int, device: torch.device | None = None) -> torch.Tensor:
    """Rising raised-cosine fade `[length]` from ~0 to ~1; the falling fade is `1 - window`."""
    t = (torch.arange(length, dtype=torch.float64, device=device) + 0.5) / length
    return (0.5 - 0.5 * torch.cos(math.pi * t)).float()


def decode_in_chunks(
    decode: Callable[[torch.Tensor, int], torch.Tensor],
    latents: torch.Tensor,
    hop_length: int,
    length: int,
    chunk_frames: int,
    overlap_frames: int,
) -> torch.Tensor:
    """Decode `latents` chunk by chunk and crossfade the pieces.

    Chunk k covers frames `[s_k, e_k)` and samples `[s_k * hop, e_k * hop)` (the last one runs to `length`).

    Args:
        decode: `decode(latents [B, D, t], samples) -> audio [B, C, samples]`, called once per chunk in order.
        latents: codec latent `[B, D, T]`.
        hop_length: audio samples per latent frame.
        length: output samples (close to `T * hop_length`).
        chunk_frames: frames per chunk, overlap included.
        overlap_frames: frames shared (and crossfaded) by neighbouring chunks.

    Returns:
        audio `[B, C, length]`.
    """
    spans = chunk_spans(latents.shape[-1], chunk_frames, overlap_frames)
    out: torch.Tensor | None = None
    for k, (start, end) in enumerate(spans):
        first, last = start * hop_length, length if k == len(spans) - 1 else end * hop_length
        piece = decode(latents[..., start:end], last - first)  # [B, C, last - first]
        if out is None:
            out = piece.new_zeros(*piece.shape[:-1], length)
        if k > 0:
            # Overlap with the previous chunk: fade this piece in while the previous one fades out.
            fade = min(spans[k - 1][1] * hop_length, length) - first
            w = crossfade_window(fade, piece.device).to(piece.dtype)
            out[..., first : first + fade] *= 1 - w
            piece = torch.cat([piece[..., :fade] * w, piece[..., fade:]], dim=-1)
        out[..., first:last] += piece
    assert out is not None
    return out


def context_spans(n: int, chunk: int, context: int) -> list[tuple[int, int, int, int]]:
    """Pieces of at most `chunk` positions whose centres tile `[0, n)`.

    Each piece borrows up to `context` positions from its neighbours on each side, and at most a quarter of
    `chunk` (so that at least half of every piece is kept and the work stays under twice the unchunked).

    Args:
        n: positions in all.
        chunk: positions per piece, context included (>= 1).
        context: positions of context wanted on each side.

    Returns:
        `(lo, start, end, hi)` per piece: it is computed over `[lo, hi)` and `[start, end)` is kept.
    """
    if chunk < 1 or context < 0:
        raise ValueError(f"need chunk >= 1 and context >= 0, got {chunk}, {context}")
    context = min(context, chunk // 4)
    keep = chunk - 2 * context
    return [
        (max(0, start - context), start, min(n, start + keep), min(n, start + keep + context))
        for start in range(0, n, keep)
    ]


def map_with_context(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    chunk: int,
    context: int,
    step_in: int,
    step_out: int,
) -> torch.Tensor:
    """`fn(x)` computed piece by piece along the last dimension, each piece's centre kept.

    Positions are the units both sides share: position i is `x[..., i * step_in : (i + 1) * step_in]` and
    `fn(x)[..., i * step_out : (i + 1) * step_out]` (codec frames: `step_in = 1, step_out = hop` for a
    decoder, `step_in = hop, step_out = 1` for an encoder). `fn` only ever sees at most `chunk` positions.

    Args:
        fn: `[*, l] -> [*', m]`, where a piece of p whole positions gives `m = p * step_out` (the last piece
            may end mid-position; its output is kept to the end).
        x: input `[*, L]`, `ceil(L / step_in)` positions.
        chunk: positions per call of `fn`, context included.
        context: positions of context on each side of a piece (see `context_spans`).
        step_in, step_out: input and output samples per position.

    Returns:
        the pieces' centres, concatenated along the last dimension.
    """
    n = -(-x.shape[-1] // step_in)
    pieces = []
    for lo, start, end, hi in context_spans(n, chunk, context):
        out = fn(x[..., lo * step_in : hi * step_in])
        if hi < n and out.shape[-1] != (hi - lo) * step_out:
            raise ValueError(f"a piece of {hi - lo} positions gave {out.shape[-1]} outputs, not {(hi - lo) * step_out}")
        last = None if end == n else (end - lo) * step_out
        pieces.append(out[..., (start - lo) * step_out : last].clone())  # not a view: frees the context
    return torch.cat(pieces, dim=-1)


CODEC_CONTEXT_SECONDS = 1.0
"""Context on each side of a piece of a codec's encode or decode: EnCodec's LSTM state converges well
within it (a random-weight EnCodec 24 kHz decoder: 2e-5 relative error with 10 frames of context, 3e-7
with 38; tests/test_chunking.py)."""


def _frames(seconds: float, sample_rate: int, hop: int) -> int:
    if not 0 < seconds < float("inf"):
        raise InputError(f"chunk_seconds must be a positive number, got {seconds}")
    return max(1, round(seconds * sample_rate / hop))


def _codec_in_pieces(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    hop: int,
    sample_rate: int,
    chunk_seconds: float | None,
    step_in: int,
    step_out: int,
) -> torch.Tensor:
    """`fn(x)` in one call when `x` spans at most `chunk_seconds` of codec frames (or for None), else by
    `map_with_context` with `CODEC_CONTEXT_SECONDS` of context (`step_in`, `step_out`: samples per frame)."""
    if chunk_seconds is None:
        return fn(x)
    chunk = _frames(chunk_seconds, sample_rate, hop)
    if -(-x.shape[-1] // step_in) <= chunk:  # frames of x
        return fn(x)
    return map_with_context(fn, x, chunk, _frames(CODEC_CONTEXT_SECONDS, sample_rate, hop), step_in, step_out)


def decode_codes_in_pieces(
    decode: Callable[[torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    hop: int,
    sample_rate: int,
    chunk_seconds: float | None,
) -> torch.Tensor:
    """A codec's `decode(codes)`, in pieces of at most `chunk_seconds` (context included) when longer.

    Args:
        decode: codes `[B, K, t]` -> audio `[B, C, t * hop]`.
        codes: `[B, K, T]`.
        hop: audio samples per code frame.
        sample_rate: the codec's sample rate in Hz.
        chunk_seconds: longest piece, with `CODEC_CONTEXT_SECONDS` of context on each side; None decodes
            in one call.

    Returns:
        audio `[B, C, T * hop]`; equal to `decode(codes)` when it fits in one piece.
    """
    return _codec_in_pieces(decode, codes, hop, sample_rate, chunk_seconds, 1, hop)


def encode_in_pieces(
    encode: Callable[[torch.Tensor], torch.Tensor],
    wav: torch.Tensor,
    hop: int,
    sample_rate: int,
    chunk_seconds: float | None,
) -> torch.Tensor:
    """A codec's `encode(wav)`, in pieces of at most `chunk_seconds` (context included) when longer.

    Pieces start on frame boundaries, so a piece's frame j is the whole signal's frame `lo + j`.

    Args:
        encode: audio `[B, 1, l]` -> codes `[B, K, ceil(l / hop)]`.
        wav: `[B, 1, L]`.
        hop: audio samples per code frame.
        sample_rate: the codec's sample rate in Hz.
        chunk_seconds: longest piece, with `CODEC_CONTEXT_SECONDS` of context on each side; None encodes
            in one call.

    Returns:
        codes `[B, K, ceil(L / hop)]`; equal to `encode(wav)` when it fits in one piece.
    """
    return _codec_in_pieces(encode, wav, hop, sample_rate, chunk_seconds, hop, 1)
