"""Log-mel features: the continuous conditioning of mel vocoder models (one definition for training and inference).

The convention is Vocos' (and that of many TTS pipelines feeding a 24 kHz vocoder): a magnitude
(power 1) mel spectrogram with torchaudio's defaults (HTK mel scale, no filter normalisation, centred
frames with reflect padding, periodic Hann window), then `log(clamp(mel, min=1e-5))`. At hop 256 one mel
frame is one bottleneck frame of a depth-4, stride-4 U-Net, so a mel `[n_mels, T]` is vocoded to
`T * hop` samples.

The U-Net sees the log-mel shifted and scaled by fixed constants (`MelConfig.norm_mean`, `norm_std`), a
purely numerical convenience that keeps the conditioning near unit scale; users always see the raw log-mel.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .arrays import native
from .errors import InputError, MelError

MAX_LOG_MEL = 20.0
"""Above this a value cannot be a natural-log magnitude mel of audio in [-1, 1] (at most log(n_fft) ~ 7-10):
a dB (about 20 .. 100) or linear-magnitude mel, refused."""
BELOW_FLOOR = 20.0
"""Values this far below log(clip_val) cannot come from the convention (e.g. dB relative to the maximum)."""


@dataclass(frozen=True)
class MelConfig:
    """Args:
    sample_rate: audio sample rate in Hz.
    n_fft: FFT size (and window length).
    hop_length: samples between frames.
    n_mels: mel bins.
    f_min, f_max: mel filter range in Hz (f_max None: sample_rate / 2).
    clip_val: the magnitude floor before the natural log.
    norm_mean, norm_std: the U-Net sees `(log_mel - norm_mean) / norm_std`.
    """

    sample_rate: int = 24_000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 100
    f_min: float = 0.0
    f_max: float | None = None
    clip_val: float = 1e-5
    norm_mean: float = -1.0
    norm_std: float = 2.4

    @property
    def min_frames(self) -> int:
        """The fewest frames a mel may have: its `T * hop` samples must exceed `n_fft // 2`, the reflect padding
        of the centred STFT that the re-EQ computes (and at least 2)."""
        return max(2, self.n_fft // (2 * self.hop_length) + 1)

    @property
    def min_samples(self) -> int:
        """The fewest samples of audio turned into a mel (`regenerate`): more than `n_fft // 2`, and
        `min_frames` frames."""
        return max(self.n_fft // 2 + 1, (self.min_frames - 1) * self.hop_length + 1)

    def frames(self, length: int) -> int:
        """Conditioning frames for `length` samples: `ceil(length / hop)` (the centred STFT has one more)."""
        return -(-length // self.hop_length)


class MelSpectrogram(nn.Module):
    """Audio to log-mel features, and their checks and normalisation for the U-Net.

    Args:
        config: the mel definition.
    """

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
            center=True,
            power=1,
        )

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel of mono audio.

        Args:
            wav: audio `[B, 1, L]`.

        Returns:
            natural-log magnitude mel `[B, n_mels, L // hop + 1]`.
        """
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise InputError(f"wav must be mono [B, 1, L], got {tuple(wav.shape)}")
        mel = self.mel(wav[:, 0].float())  # [B, n_mels, T]
        return torch.log(mel.clamp(min=self.config.clip_val))

    forward = features

    def frame_aligned(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel with one frame per `hop` samples, as the U-Net's bottleneck sees it: the centred STFT's last
        frame is dropped when `L` is a multiple of the hop.

        Args:
            wav: audio `[B, 1, L]`.

        Returns:
            natural-log magnitude mel `[B, n_mels, ceil(L / hop)]`.
        """
        return self.features(wav)[..., : self.config.frames(wav.shape[-1])]

    def condition(self, mel: torch.Tensor) -> torch.Tensor:
        """Raw log-mel `[B, n_mels, T]` to the U-Net's conditioning `[B, n_mels, T]`."""
        return (mel - self.config.norm_mean) / self.config.norm_std

    def equalize(self, wav: torch.Tensor, mel: torch.Tensor, strictness: float = 1.0) -> torch.Tensor:
        """Re-EQ audio against a log-mel, frame by frame and mel band by mel band (the mel analogue of MBD's
        re-EQ against the codec decode, at the mel's time and frequency resolution).

        Each mel band's energy in each frame is scaled towards the target: the log gains
        `strictness * (mel - log_mel(wav))` are spread to the STFT bins by the mel filters' weights, the
        STFT magnitudes are scaled and the phases kept, then inverted.

        Args:
            wav: audio `[B, 1, L]`, `L = T * hop`.
            mel: the target log-mel `[B, n_mels, T]` (or `T + 1` frames).
            strictness: 0 returns `wav` unchanged, 1 matches the target fully.

        Returns:
            audio `[B, 1, L]`.
        """
        if strictness == 0:
            return wav
        c = self.config
        window = torch.hann_window(c.n_fft, device=wav.device)
        spec = self.equalized_stft(wav, mel, strictness)
        out = torch.istft(spec, c.n_fft, c.hop_length, window=window, length=wav.shape[-1])  # [B, L]
        return out[:, None].to(wav.dtype)

    def equalized_stft(self, wav: torch.Tensor, mel: torch.Tensor, strictness: float = 1.0) -> torch.Tensor:
        """The STFT of `wav` `[B, 1, L]` with each frame's mel-band energies scaled towards the log-mel `mel`
        `[B, n_mels, T]` (see `equalize`, which inverts it): complex `[B, n_fft // 2 + 1, L // hop + 1]`."""
        c = self.config
        window = torch.hann_window(c.n_fft, device=wav.device)
        spec = torch.stft(wav[:, 0].float(), c.n_fft, c.hop_length, window=window, return_complex=True)  # [B, F, T']
        fb = self.mel.mel_scale.fb  # [F, n_mels]
        have = torch.log((fb.T @ spec.abs()).clamp(min=c.clip_val))  # [B, n_mels, T']
        frames = spec.shape[-1]
        want = F.pad(mel.float(), (0, frames - mel.shape[-1]), mode="replicate") if mel.shape[-1] < frames else mel
        log_gain = strictness * (want[..., :frames] - have)  # [B, n_mels, T']
        weights = fb / fb.sum(dim=1, keepdim=True).clamp(min=1e-8)  # [F, n_mels]: bins without a filter keep gain 1
        return spec * torch.exp(weights @ log_gain)  # [B, F, T']

    def magnitude(self, mel: torch.Tensor, iterations: int = 30) -> torch.Tensor:
        """The non-negative least-squares linear magnitude behind a log-mel: argmin_{A >= 0} ||fb^T A - exp(mel)||,
        by the multiplicative updates of Lee and Seung (2001) started from each band's magnitude spread evenly
        over its filter (librosa's `mel_to_stft` solves the same problem with L-BFGS-B, much more slowly).

        Args:
            mel: natural-log magnitude mel `[B, n_mels, T]`.
            iterations: multiplicative updates.

        Returns:
            magnitudes `[B, n_fft // 2 + 1, T]`.
        """
        fb = self.mel.mel_scale.fb  # [F, n_mels]
        target = mel.float().exp()  # [B, n_mels, T]
        area = fb.sum(dim=0).clamp(min=1e-8)  # [n_mels]
        share = fb / fb.sum(dim=1, keepdim=True).clamp(min=1e-8)  # [F, n_mels]
        a = (share @ (target / area[:, None])).clamp(min=1e-10)  # [B, F, T]
        numerator = fb @ target
        for _ in range(iterations):
            a = a * numerator / (fb @ (fb.T @ a)).clamp(min=1e-10)
        return a

    def check(self, mel: torch.Tensor | np.ndarray, name: str = "mel") -> torch.Tensor:
        """Validate a user's log-mel and return it as `[B, n_mels, T]` float32.

        Raises `MelError` for the wrong number of bins, a transposed `[T, n_mels]` input, an empty batch, too
        few frames (`MelConfig.min_frames`), NaN/inf, or values far outside the natural-log range (a dB or
        linear-magnitude mel, or values beyond float32); warns when the values only look like a linear
        magnitude or another log base. Numpy arrays of any byte order are accepted.

        Args:
            mel: `[n_mels, T]` or `[B, n_mels, T]`, a tensor or numpy array.
        """
        n = self.config.n_mels
        if isinstance(mel, np.ndarray):
            if mel.dtype.kind != "f":
                raise MelError(f"{name}: expected real floating-point log-mel values, got {mel.dtype}")
            mel = torch.from_numpy(np.ascontiguousarray(native(mel)))
        if not isinstance(mel, torch.Tensor):
            raise MelError(f"{name}: expected a tensor or numpy array, got {type(mel).__name__}")
        shape = tuple(mel.shape)
        if mel.layout != torch.strided:
            raise MelError(f"{name}: expected a dense tensor, got a {mel.layout} one")
        if mel.dim() == 2:
            mel = mel[None]
        if mel.dim() != 3:
            raise MelError(f"{name}: expected [n_mels, T] or [B, n_mels, T] with n_mels = {n}, got {shape}")
        if mel.is_complex() or not mel.is_floating_point():
            raise MelError(f"{name}: expected real floating-point log-mel values, got {mel.dtype}")
        if mel.shape[1] != n:
            if mel.shape[2] == n:
                raise MelError(
                    f"{name}: shape {shape} looks transposed ([T, n_mels]); this model expects "
                    f"[n_mels, T] with n_mels = {n}: pass mel.T (or mel.transpose(-1, -2))"
                )
            raise MelError(f"{name}: has {mel.shape[1]} mel bins, this model expects {n} (shape {shape})")
        if mel.shape[0] == 0:
            raise MelError(f"{name}: the batch is empty (shape {shape})")
        if mel.shape[2] < self.config.min_frames:
            raise MelError(f"{name}: has {mel.shape[2]} frames; this model needs at least {self.config.min_frames} "
                           f"(its {self.config.n_fft}-point STFT needs more than {self.config.n_fft // 2} samples)")
        if not torch.isfinite(mel).all():
            bad = (~torch.isfinite(mel)).sum().item()
            raise MelError(f"{name}: holds {bad} NaN or infinite values")
        low, high = mel.min().item(), mel.max().item()
        floor = math.log(self.config.clip_val)
        expected = f"the natural-log mel, log(clamp(mel, min={self.config.clip_val:g})), spans about {floor:.1f} .. 5"
        if high > MAX_LOG_MEL or low < floor - BELOW_FLOOR:
            raise MelError(
                f"{name}: values span {low:.3g} .. {high:.3g}, far outside the natural-log mel range: is it in dB, "
                f"a linear magnitude or another normalisation? ({expected})"
            )
        if low >= 0:
            warnings.warn(
                f"{name}: all values are >= 0 (max {high:.3g}): this looks like a linear magnitude "
                f"(or power) mel, but the model expects the natural log ({expected})",
                UserWarning,
                stacklevel=4,
            )
        elif low < floor - 1e-3 or high > 12:
            warnings.warn(
                f"{name}: values span {low:.3g} .. {high:.3g}, outside the natural-log mel range "
                f"({floor:.1f} .. about 5): is it log10, dB or another normalisation?",
                UserWarning,
                stacklevel=4,
            )
        return mel.float()
