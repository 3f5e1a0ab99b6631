"""Griffin-Lim from given phases: the projection of an inconsistent STFT towards a consistent one."""

from __future__ import annotations

import torch

from .mel import MelConfig


def polish(spec: torch.Tensor, mel: MelConfig, iterations: int, length: int, momentum: float = 0.99) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al., 2013; the update of torchaudio's `griffinlim`) that keeps the
    magnitudes of `spec` and starts from its phases, rather than from random or constant phases as
    torchaudio's and librosa's functions do: a projection of an inconsistent spectrogram (e.g. re-EQ'd
    magnitudes over the model's phases) towards a consistent one.

    Args:
        spec: complex STFT `[B, n_fft // 2 + 1, T']` (the mel's n_fft and hop, Hann window, centred).
        length: output samples.

    Returns:
        audio `[B, 1, length]`.
    """
    window = torch.hann_window(mel.n_fft, device=spec.device)

    def istft(x: torch.Tensor) -> torch.Tensor:
        return torch.istft(x, mel.n_fft, mel.hop_length, window=window, length=length)

    magnitude, phase = spec.abs(), spec / spec.abs().clamp(min=1e-16)
    previous = torch.zeros_like(spec)
    for _ in range(iterations):
        rebuilt = torch.stft(istft(magnitude * phase), mel.n_fft, mel.hop_length, window=window, return_complex=True)
        phase = rebuilt - previous * (momentum / (1 + momentum))
        phase = phase / phase.abs().clamp(min=1e-16)
        previous = rebuilt
    return istft(magnitude * phase)[:, None]
