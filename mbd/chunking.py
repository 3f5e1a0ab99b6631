"""Chunked decoding of long audio: bounded memory, time linear in length.

The latent is cut on frame boundaries into chunks that overlap by a few frames. Each chunk is decoded on
its own (its overlap frames give the model context across the cut), and neighbouring chunks are
crossfaded over their overlap with complementary raised-cosine windows (w and 1 - w), so a signal that
two chunks agree on is reproduced exactly. Re-EQ is applied afterwards to the whole output by
`MultiBandDiffusion.tokens_to_wav`, never per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


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
