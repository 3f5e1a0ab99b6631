"""What a Multi-Band Diffusion model is conditioned on: a codec's latents (token models) or log-mel features.

A conditioning turns an input (codec tokens, a log-mel, or audio to regenerate) into a `Request`: the U-Net's
condition, the output length and the step that finishes the sampled audio (the re-EQ). The pipeline samples
the bands the same way for both; only the conditioning knows which input it takes and how the output is
equalised:

- `CodecLatents`: tokens -> the codec's latents; the output is re-EQ'd against the codec's own decode
  (San Roman et al., 2023, and AudioCraft's audiocraft/models/multibanddiffusion.py `tokens_to_wav`).
  `regenerate` encodes the audio with the codec and, as in AudioCraft, does not re-EQ.
- `MelFeatures`: a log-mel (`mbd.mel`) -> its normalised form; the output is re-EQ'd against the mel itself
  (`MelSpectrogram.equalize`). `regenerate` vocodes each channel's log-mel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .chunking import decode_codes_in_pieces
from .config import CodecConfig, MBDConfig
from .eq import re_eq
from .mel import MelConfig, MelSpectrogram


@dataclass(frozen=True)
class Request:
    """One decode, ready to sample.

    Args:
        condition: the U-Net's conditioning `[B, D, T]`.
        length: output samples.
        finish: the sampled audio `[B, C, length]` to the result (re-EQ, and for regenerate the input's shape).
    """

    condition: torch.Tensor
    length: int
    finish: Callable[[torch.Tensor], torch.Tensor]


def _unchanged(wav: torch.Tensor) -> torch.Tensor:
    return wav


class Conditioning(nn.Module):
    """The interface: hop length, inputs to `Request`s, and the codec (None where there is none).

    Tokens and audio reach these methods on the model's device; a log-mel is checked, then moved there.
    """

    codec: nn.Module | None
    features: MelSpectrogram | None

    @property
    def hop_length(self) -> int:
        """Audio samples per condition frame."""
        raise NotImplementedError

    @property
    def min_samples(self) -> int:
        """The shortest audio `from_audio` takes: 2 condition frames."""
        return 2 * self.hop_length

    def from_tokens(
        self, tokens: torch.Tensor, n_bands: int, per_clip_eq: bool, chunk_seconds: float | None = None
    ) -> Request:
        """Codes `[B, K, T]` to a request whose output is re-EQ'd with `n_bands` bands (see `eq.re_eq`);
        with `chunk_seconds`, the reference the output is re-EQ'd against is decoded in pieces that long."""
        raise RuntimeError("this is a mel model: it has no codec; use `vocode(mel)` or `regenerate(wav, sr)`")

    def from_mel(self, mel: torch.Tensor, strictness: float) -> Request:
        """A log-mel `[n_mels, T]` or `[B, n_mels, T]` to a request whose output is re-EQ'd against it."""
        raise RuntimeError("this model is conditioned on codec tokens, not on mel spectrograms: use a mel "
                           "model (e.g. 'mel24k') for vocode()")

    def from_audio(self, wav: torch.Tensor) -> Request:
        """Audio `[B, C, L]` at the model's rate to a request that regenerates it as `[B, C, L]`."""
        raise NotImplementedError

    def attach_codec(self, codec: nn.Module | None) -> None:
        """Use `codec` (None detaches it)."""
        if codec is not None:
            raise ValueError("a mel model uses no codec")

    def load_codec(self, weights: str | os.PathLike | None = None) -> None:
        """Load the codec named in the config (from a local `weights` file, or the cached download); nothing
        for conditionings without one."""


class CodecLatents(Conditioning):
    """Conditioning on a codec's latents.

    Args:
        config: the codec the model was trained with.
        sample_rate: the model's sample rate (for the re-EQ).
        codec: the codec itself (`mbd.codec.Codec`); it may be attached later (`attach_codec`, `load_codec`).
    """

    features = None

    def __init__(self, config: CodecConfig, sample_rate: int, codec: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = sample_rate
        self.codec = codec

    def _codec(self) -> nn.Module:
        if self.codec is None:
            raise RuntimeError("this model was loaded without a codec; pass `codec=` to from_pretrained")
        return self.codec

    @property
    def hop_length(self) -> int:
        if self.codec is None:
            raise RuntimeError("no codec attached, so the hop is unknown: pass `length=` to generate, or load "
                               "the model with its codec")
        return int(self.codec.hop_length)

    def from_tokens(
        self, tokens: torch.Tensor, n_bands: int, per_clip_eq: bool, chunk_seconds: float | None = None
    ) -> Request:
        codec = self._codec()
        # The codec's decoder holds ~25 MB of activations per second of audio on CPU: decoded in pieces, its
        # memory follows the chunk, and the reference itself is 4 bytes per sample. The re-EQ then streams
        # over it in segments (`eq.re_eq`). Per clip, each clip is decoded alone, as the codec's convolutions
        # round differently by batch size.
        def decode(codes: torch.Tensor) -> torch.Tensor:
            return decode_codes_in_pieces(codec.decode, codes, int(codec.hop_length), self.sample_rate, chunk_seconds)

        reference = torch.cat([decode(t[None]) for t in tokens]) if per_clip_eq else decode(tokens)  # [B, C, L]
        latents = codec.latents(tokens)  # [B, D, T]

        def finish(wav: torch.Tensor) -> torch.Tensor:
            ref = reference.to(wav)
            if not per_clip_eq:
                return re_eq(wav, ref, self.sample_rate, n_bands)
            out = torch.empty_like(ref)
            for b in range(wav.shape[0]):
                out[b : b + 1] = re_eq(wav[b : b + 1], ref[b : b + 1], self.sample_rate, n_bands)
            return out

        return Request(latents, reference.shape[-1], finish)

    def from_audio(self, wav: torch.Tensor) -> Request:
        codec = self._codec()
        return Request(codec.latents(codec.encode(wav)), wav.shape[-1], _unchanged)

    def attach_codec(self, codec: nn.Module | None) -> None:
        self.codec = codec

    def load_codec(self, weights: str | os.PathLike | None = None) -> None:
        from .codec import load_codec

        self.codec = load_codec(self.config.name, self.config.n_q, weights=weights)


class MelFeatures(Conditioning):
    """Conditioning on log-mel features (`mbd.mel`).

    Args:
        config: the mel definition.
    """

    codec = None

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.features = MelSpectrogram(config)

    @property
    def hop_length(self) -> int:
        return self.features.config.hop_length

    @property
    def min_samples(self) -> int:
        """The shortest audio whose centred STFT works (`MelConfig.min_samples`)."""
        return self.features.config.min_samples

    def from_mel(self, mel: torch.Tensor, strictness: float) -> Request:
        batched = mel.dim() == 3
        mel = self.features.check(mel).to(self.features.mel.mel_scale.fb.device)  # [B, n_mels, T]

        def finish(wav: torch.Tensor) -> torch.Tensor:
            wav = self.features.equalize(wav, mel, strictness)
            return wav if batched else wav[0]

        return Request(self.features.condition(mel), mel.shape[-1] * self.hop_length, finish)

    def from_audio(self, wav: torch.Tensor) -> Request:
        B, C, L = wav.shape
        mel = self.features.frame_aligned(wav.reshape(B * C, 1, L))  # [B * C, n_mels, T]
        request = self.from_mel(mel, 1.0)

        def finish(out: torch.Tensor) -> torch.Tensor:
            return request.finish(out)[..., :L].reshape(B, C, L)

        return Request(request.condition, request.length, finish)


def conditioning_for(config: MBDConfig, codec: nn.Module | None = None) -> Conditioning:
    """The conditioning a config names: `MelFeatures` for `config.features`, else `CodecLatents`."""
    if config.features is not None:
        conditioning = MelFeatures(config.features)
        conditioning.attach_codec(codec)
        return conditioning
    return CodecLatents(config.codec, config.sample_rate, codec)
