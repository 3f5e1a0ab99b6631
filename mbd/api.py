"""One-call decoding: `mbd.decode(tokens)` and `mbd.vocode(mel)` for scripts and TTS/music pipelines."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from . import checkpoint
from .diffusion import Sampler
from .errors import OutputError
from .memory import check_job
from .options import DType, RuntimeOptions, SamplingOptions, runtime_options
from .pipeline import MultiBandDiffusion
from .spectral_mbd import FAMILY as SPECTRAL
from .spectral_mbd import SpectralMBD
from .tokens import validate_codes

DEFAULT_MODEL = "encodec24k-3kbps"
DEFAULT_MEL_MODEL = "mel24k"  # bundled with the package: works offline

Audio = TypeVar("Audio", torch.Tensor, np.ndarray)


@functools.lru_cache(maxsize=4)
def load_model(model: str, device: str, codec_weights: str | None = None) -> MultiBandDiffusion | SpectralMBD:
    """Load (once per process) a model by name or path, with its codec, on `device`: a spectral model
    (`mbd.spectral_mbd`, e.g. the bundled mel24k) or an MBD of per-band U-Nets."""
    path = Path(model)
    if not path.exists():
        from . import hub

        path = hub.resolve_model(model)
    config, tensors = checkpoint.load(path)
    if config.get("family") == SPECTRAL:
        return SpectralMBD.from_state(config, tensors).to(device).eval()
    mbd = MultiBandDiffusion.from_state(config, tensors)
    mbd.conditioning.load_codec(codec_weights)  # as `MultiBandDiffusion.from_pretrained` does; none for mel models
    return mbd.to(device).eval()


def check_output(wav: torch.Tensor, what: str) -> torch.Tensor:
    """`wav` if every sample is finite, else `OutputError` naming `what`."""
    if not torch.isfinite(wav).all():
        bad = int((~torch.isfinite(wav)).sum())
        raise OutputError(f"{what}: the model produced {bad} NaN or infinite samples (are its weights finite?); "
                          "nothing was returned or written")
    return wav


def decode_codes(
    mbd: MultiBandDiffusion,
    codes: torch.Tensor,
    sampling: SamplingOptions,
    runtime: RuntimeOptions,
    max_memory: str | None = None,
    name: str = "tokens",
) -> torch.Tensor:
    """Decode validated codes `[B, K, T]` (one length) to audio `[B, C, T * hop]` on the model's device.

    Each clip has its own noise stream (`SamplingOptions.generators`) and is re-EQ'd against its own codec
    decode, so a clip's result does not depend on the other clips in the batch (AudioCraft's `tokens_to_wav`
    draws and equalises a batch jointly).

    Args:
        max_memory: the memory limit (`mbd.memory.memory_limit`); the job's estimate is checked first.
        name: what to name in errors.

    Raises:
        MemoryLimitError: the job would need more than the limit.
        OutputError: the output is not finite.
    """
    check_job(mbd, codes.shape[0], codes.shape[-1] * mbd.hop_length, runtime, max_memory, name)
    return check_output(mbd.tokens_to_wav(
        codes.to(mbd.device),
        steps=sampling.step_list(mbd),
        generator=sampling.generators(mbd.device, codes),
        sampler=sampling.sampler,
        options=runtime,
        per_clip_eq=True,
    ), name)


def vocode_mels(
    mbd: MultiBandDiffusion | SpectralMBD,
    mel: torch.Tensor | np.ndarray,
    sampling: SamplingOptions,
    runtime: RuntimeOptions,
    max_memory: str | None = None,
    name: str = "mel",
) -> torch.Tensor:
    """Vocode log-mels `[B, n_mels, T]` (one length; checked here) to audio `[B, 1, T * hop]` on the model's
    device, each clip with its own noise stream, so a clip's result does not depend on its batch.
    `max_memory` and `name` are as for `decode_codes`."""
    mel = mbd.features.check(mel, name=name)  # [B, n_mels, T]: the clips as the model reads them, for their seeds
    check_job(mbd, mel.shape[0], mel.shape[-1] * mbd.hop_length, runtime, max_memory, name)
    with warnings.catch_warnings():  # `vocode` checks the mel again and would repeat its warnings
        warnings.simplefilter("ignore", UserWarning)
        wav = mbd.vocode(
            mel,
            steps=sampling.step_list(mbd),
            generator=sampling.generators(mbd.device, mel),
            sampler=sampling.sampler,
            options=runtime,
        )
    return check_output(wav, name)


def decode(
    tokens: Audio | Sequence[Audio],
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    steps: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    sampler: Sampler = "ddpm",
    dtype: DType = "float32",
    codec_weights: str | os.PathLike | None = None,
    chunk_seconds: float | None = None,
    max_memory: str | None = None,
) -> tuple[Audio | list[Audio], int]:
    """Decode codec tokens to audio with Multi-Band Diffusion.

    Args:
        tokens: integer codes as a tensor or numpy array, `[K, T]`, `[B, K, T]` or Hugging Face `EncodecModel`
            `audio_codes` `[1, B, K, T]`; or a list of `[K, T_i]` clips of different lengths.
        model: a pretrained name (see `mbd models`) or a checkpoint path.
        steps: sampler steps (default: 20 for "ddpm", 10 for the fewer-step samplers).
        seed: makes the output reproducible.
        device: "cpu", "cuda", ...; default the GPU when there is one.
        sampler: "ddpm" (AudioCraft's), "ddim" or "dpm++2m".
        dtype: network precision, "float32", "bfloat16" or "float16".
        codec_weights: a local codec weights file instead of the cached download.
        chunk_seconds: decode long audio in crossfaded chunks of this many seconds (bounded memory).
        max_memory: refuse a job estimated to need more memory, e.g. "8G" (default: `$MBD_MAX_MEMORY`, else
            90 % of the available memory; see `mbd.memory`).

    Raises:
        mbd.memory.MemoryLimitError: the job would need more than `max_memory`.
        OutputError: the model produced NaN or infinite samples.

    Returns:
        `(audio, sample_rate)`. Audio is the same kind as the input (tensor or numpy): `[1, L]` for `[K, T]`
        input, `[B, 1, L]` for batched input, a list of `[1, L_i]` for a list.
    """
    runtime = runtime_options(device, dtype=dtype, chunk_seconds=chunk_seconds)
    sampling = SamplingOptions(sampler, steps, seed)
    mbd = load_model(str(model), runtime.device, None if codec_weights is None else str(codec_weights))
    if mbd.codec is None:
        raise ValueError(f"model '{model}' is conditioned on mel spectrograms, not codec tokens: use mbd.vocode")
    codec = mbd.codec
    check = functools.partial(validate_codes, n_q=mbd.config.codec.n_q, cardinality=codec.cardinality)
    if isinstance(tokens, (list, tuple)):
        clips = [check(clip, name=f"tokens[{i}]") for i, clip in enumerate(tokens)]
        outs: list[torch.Tensor | None] = [None] * len(clips)
        by_length: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            by_length.setdefault(clip.shape[-1], []).append(i)
        for indices in by_length.values():  # one batch per distinct length
            name = f"tokens[{indices[0]}]" if len(indices) == 1 else "tokens"
            wav = decode_codes(mbd, torch.cat([clips[i] for i in indices]), sampling, runtime, max_memory, name).cpu()
            for j, i in enumerate(indices):
                outs[i] = wav[j]
        return [_like(out, clip_in) for out, clip_in in zip(outs, tokens)], mbd.sample_rate
    codes = check(tokens, name="tokens")
    wav = decode_codes(mbd, codes, sampling, runtime, max_memory).cpu()
    if tokens.ndim == 2:
        wav = wav[0]
    return _like(wav, tokens), mbd.sample_rate


def vocode(
    mel: Audio,
    model: str | os.PathLike = DEFAULT_MEL_MODEL,
    *,
    steps: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    sampler: Sampler = "ddpm",
    dtype: DType = "float32",
    max_memory: str | None = None,
) -> tuple[Audio, int]:
    """Turn a log-mel spectrogram into audio with a mel-conditioned Multi-Band Diffusion model.

    The default model, `mel24k`, ships with the package (no download) and takes Vocos' 24 kHz mel: n_fft
    1024, hop 256, 100 bins, `log(clamp(magnitude_mel, min=1e-5))` (see `mbd.mel`).

    Args:
        mel: log-mel as a tensor or numpy array, `[n_mels, T]` or `[B, n_mels, T]`. The wrong number of bins,
            a transposed `[T, n_mels]` array or NaN/inf raise `mbd.mel.MelError`; a linear-looking scale warns.
        model: a mel model name (see `mbd models`) or a checkpoint path.
        steps: sampler steps (default: 20 for "ddpm", 10 for the fewer-step samplers).
        seed: makes the output reproducible.
        device: "cpu", "cuda", ...; default the GPU when there is one.
        sampler: "ddpm" (AudioCraft's), "ddim" or "dpm++2m".
        dtype: network precision, "float32", "bfloat16" or "float16".
        max_memory: as for `decode`.

    Raises:
        mbd.mel.MelError: a mel that does not fit the model (see `MelSpectrogram.check`).
        mbd.memory.MemoryLimitError: the job would need more than `max_memory`.
        OutputError: the model produced NaN or infinite samples.

    Returns:
        `(audio, sample_rate)`, audio the same kind as the input: `[1, T * hop]` for `[n_mels, T]`,
        `[B, 1, T * hop]` for `[B, n_mels, T]`.
    """
    runtime = runtime_options(device, dtype=dtype)
    sampling = SamplingOptions(sampler, steps, seed)
    mbd = load_model(str(model), runtime.device, None)
    if mbd.features is None:
        raise ValueError(f"model '{model}' is conditioned on codec tokens, not mel spectrograms: use mbd.decode")
    wav = vocode_mels(mbd, mel, sampling, runtime, max_memory).cpu()
    if getattr(mel, "ndim", 3) == 2:
        wav = wav[0]
    return _like(wav, mel), mbd.sample_rate


def _like(wav: torch.Tensor, reference: object) -> torch.Tensor | np.ndarray:
    return wav.numpy() if isinstance(reference, np.ndarray) else wav
