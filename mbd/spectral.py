"""STFT frequency bands and their EQ normalisation, for frame-level band models.

The complex STFT (n_fft, hop, periodic Hann window, centred frames) is split into `n_bands` equal ranges
of bins, an exact split recombined by concatenation (the Nyquist bin is dropped). Each band is generated in
a normalised space, the analogue of MBD's EQ processor at STFT resolution, computed from the log-mel
itself rather than from a fitted statistic:

    x_b = S[bins_b] / (E[bins_b] * sigma_b),

where E is the per-bin magnitude envelope that the mel implies (each mel band's magnitude spread evenly over
its filter, `envelope`) and sigma_b the band's fitted standard deviation of S / E. In that space every band
and every frame has unit scale whatever its loudness, so a unit Gaussian is a mel-shaped prior in the STFT
domain (the data-dependent prior of PriorGrad, Lee et al., ICLR 2022) and the loss weighs quiet and loud
regions alike. A band is stored as `[2 * bins, T]`: real parts, then imaginary parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SpectralConfig:
    """Args:
    n_fft: FFT size and window length (the mel's).
    hop_length: samples between frames (the mel's).
    n_bands: equal ranges of the `n_fft // 2` lowest bins.
    floor: the envelope's lower bound (per-bin magnitude).
    """

    n_fft: int = 1024
    hop_length: int = 256
    n_bands: int = 4
    floor: float = 1e-6

    def __post_init__(self) -> None:
        if self.n_fft < 2 or self.hop_length < 1 or self.n_bands < 1:
            raise ValueError(f"need n_fft >= 2, hop_length >= 1, n_bands >= 1, got {self}")
        if (self.n_fft // 2) % self.n_bands:
            raise ValueError(f"n_fft // 2 = {self.n_fft // 2} bins do not split into {self.n_bands} equal bands")
        if not self.floor > 0:
            raise ValueError(f"floor must be > 0, got {self.floor}")

    @property
    def band_bins(self) -> int:
        return self.n_fft // 2 // self.n_bands


class SpectralBands(nn.Module):
    """STFT analysis and synthesis, the band split and the mel-envelope normalisation.

    Args:
        config: the STFT and band layout.
        mel_fb: the mel filterbank `[n_fft // 2 + 1, n_mels]` (torchaudio's `MelScale.fb`).
    """

    def __init__(self, config: SpectralConfig, mel_fb: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        fb = mel_fb[: config.n_fft // 2].float()  # [F, M], Nyquist bin dropped
        area = mel_fb.float().sum(dim=0).clamp(min=1e-8)  # [M]: each filter's total weight
        share = fb.clone()
        covered = share.sum(dim=1) > 0
        index = torch.arange(len(share))
        for f in index[~covered].tolist():  # bins under no filter (DC) borrow the nearest covered bin's share
            share[f] = share[index[covered][(index[covered] - f).abs().argmin()]]
        share = share / share.sum(dim=1, keepdim=True)  # [F, M]: rows sum to 1
        self.register_buffer("spread", share / area, persistent=False)  # [F, M]
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer("sigma", torch.ones(config.n_bands))  # fitted per-band std of S / E

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio `[B, 1, L]` to the complex STFT without its Nyquist bin, `[B, n_fft // 2, L // hop + 1]`."""
        c = self.config
        spec = torch.stft(wav[:, 0].float(), c.n_fft, c.hop_length, window=self.window, return_complex=True)
        return spec[:, : c.n_fft // 2]

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Complex STFT `[B, n_fft // 2, T']` (Nyquist bin zero) to audio `[B, 1, length]`."""
        c = self.config
        spec = torch.cat([spec, spec.new_zeros(spec.shape[0], 1, spec.shape[-1])], dim=1)
        return torch.istft(spec, c.n_fft, c.hop_length, window=self.window, length=length)[:, None]

    def envelope(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Per-bin magnitude envelope implied by a natural-log magnitude mel `[B, M, T]`: `[B, n_fft // 2, T]`."""
        return (self.spread @ log_mel.float().exp()).clamp(min=self.config.floor)

    def normalise(self, spec: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Complex STFT `[B, F, T]` and its envelope `[B, F, T]` to stacked bands `[B, n_bands, 2 * bins, T]`."""
        z = spec / env  # [B, F, T]
        bands = z.unflatten(1, (self.config.n_bands, self.config.band_bins))  # [B, n, bins, T]
        x = torch.cat([bands.real, bands.imag], dim=2)  # [B, n, 2 * bins, T]
        return x / self.sigma.view(1, -1, 1, 1)

    def denormalise(self, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalise`: stacked bands `[B, n_bands, 2 * bins, T]` to the complex STFT `[B, F, T]`."""
        x = x * self.sigma.view(1, -1, 1, 1)
        real, imag = x.chunk(2, dim=2)  # [B, n, bins, T] each
        return torch.complex(real, imag).flatten(1, 2) * env

    @torch.no_grad()
    def fit(self, spec: torch.Tensor, env: torch.Tensor) -> None:
        """Set each band's sigma to the RMS of its real and imaginary parts of S / E over a sample of frames.

        Args:
            spec: complex STFT `[B, F, T]`.
            env: its envelope `[B, F, T]`.
        """
        self.sigma.fill_(1.0)
        x = self.normalise(spec, env)  # [B, n, 2 * bins, T]
        self.sigma.copy_(x.pow(2).mean(dim=(0, 2, 3)).sqrt().clamp(min=1e-3))
