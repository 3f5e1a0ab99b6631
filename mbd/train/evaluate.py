"""Validation: regenerate fixed held-out clips with one band model and score them against the true band.

Scores (lower is better except SI-SDR):
- `mel`: mean absolute difference of log-mel spectrograms (80 mels, 1024-point FFT, hop 256);
- `stft`: mean absolute difference of log-magnitude spectrograms (same FFT);
- `si_sdr`: scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019), averaged over clips.
"""

from __future__ import annotations

import torch
import torchaudio

from .. import flow
from ..diffusion import PowerSchedule, add_noise, ddpm_sample, default_steps
from ..processor import BandProcessor
from ..unet import DiffusionUNet

N_FFT, HOP, N_MELS = 1024, 256, 80


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """`[N, L]` -> `[N, F, frames]` magnitude spectrogram."""
    window = torch.hann_window(N_FFT, device=x.device)
    return torch.stft(x, N_FFT, HOP, window=window, return_complex=True).abs()


def stft_distance(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean |log(|STFT est| + 1e-5) - log(|STFT ref| + 1e-5)| over `[N, 1, L]` clips."""
    e, r = _magnitude(est.flatten(0, 1)), _magnitude(ref.flatten(0, 1))
    return (torch.log(e + 1e-5) - torch.log(r + 1e-5)).abs().mean().item()


def mel_distance(est: torch.Tensor, ref: torch.Tensor, sample_rate: int) -> float:
    """Mean |log-mel est - log-mel ref| over `[N, 1, L]` clips."""
    fbank = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, sample_rate / 2, N_MELS, sample_rate).to(est)
    e = _magnitude(est.flatten(0, 1)).pow(2).transpose(1, 2) @ fbank  # [N, frames, mels]
    r = _magnitude(ref.flatten(0, 1)).pow(2).transpose(1, 2) @ fbank
    return (torch.log(e + 1e-5) - torch.log(r + 1e-5)).abs().mean().item()


def si_sdr(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean SI-SDR in dB of `[N, 1, L]` estimates against references (both made zero-mean)."""
    est = est.flatten(1) - est.flatten(1).mean(dim=1, keepdim=True)
    ref = ref.flatten(1) - ref.flatten(1).mean(dim=1, keepdim=True)
    scale = (est * ref).sum(dim=1, keepdim=True) / ref.pow(2).sum(dim=1, keepdim=True).clamp(min=1e-12)
    target = scale * ref
    ratio = target.pow(2).sum(dim=1) / (est - target).pow(2).sum(dim=1).clamp(min=1e-12)
    return (10 * torch.log10(ratio.clamp(min=1e-12))).mean().item()


@torch.no_grad()
def regenerate_band(
    unet: DiffusionUNet,
    processor: BandProcessor | None,
    schedule: PowerSchedule,
    latents: torch.Tensor,
    length: int,
    stride: int,
    seed: int,
    objective: str = "ddpm",
) -> torch.Tensor:
    """Sample one band from its latent with every `stride`-th step, noise from a generator seeded `seed`.

    Args:
        latents: codec latents `[N, D, T]`.
        length: samples to generate.
        objective: what the U-Net predicts, "ddpm" (eps) or "flow" (velocity).

    Returns:
        audio of this band `[N, 1, length]`.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (latents.shape[0], 1, length)

    def draw() -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(latents.device)

    steps = default_steps(schedule.num_steps, stride)
    if objective == "flow":  # as many Euler steps as the DDPM list has evaluations
        num = schedule.num_steps
        times = flow.FlowSchedule().times(len(steps) - 1)
        x = flow.sample(lambda x, t: unet(x, flow.step_index(t, num), latents), draw(), times)
    else:
        x = ddpm_sample(lambda x, t: unet(x, t, latents), draw(), schedule, steps, draw)
    return x if processor is None else processor.unproject(x)


@torch.no_grad()
def quarter_losses(
    unet: DiffusionUNet, x: torch.Tensor, latents: torch.Tensor, schedule: PowerSchedule, objective: str, seed: int
) -> dict[str, float]:
    """The training loss on held-out clips at the centre of each quarter of the step range, with fixed draws:
    `valid_loss_q0` (the cleanest quarter) .. `valid_loss_q3` (the noisiest).

    Args:
        x: the clips' band in diffusion space `[N, 1, L]`.
        latents: their conditioning `[N, D, T]`.
    """
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
    num, out = schedule.num_steps, {}
    for q in range(4):
        t = torch.full((x.shape[0],), int((q + 0.5) / 4 * num), device=x.device)
        if objective == "flow":
            noisy, target = flow.add_noise(x, eps, 1 - t.float() / (num - 1))
        else:
            noisy, target = add_noise(x, t, eps, schedule), eps
        out[f"valid_loss_q{q}"] = (unet(noisy, t, latents) - target).pow(2).mean().item()
    return out


def score(est: torch.Tensor, ref: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """All validation scores of `est` against `ref`, both `[N, 1, L]`."""
    est, ref = est.float().cpu(), ref.float().cpu()
    return {"mel": mel_distance(est, ref, sample_rate), "stft": stft_distance(est, ref), "si_sdr": si_sdr(est, ref)}
