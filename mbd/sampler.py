"""Reverse diffusion: AudioCraft's subsampled DDPM loop (spec §c, `generate_subsampled`).

The sampler knows nothing about networks or bands: it takes a `denoise(x, t) -> eps` callable and a source
of Gaussian noise, so the same loop serves every band, the golden replay and training-time evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import PowerSchedule, check_steps

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""`denoise(x [B, C, L], t) -> eps [B, C, L]`: the model's noise prediction at integer step t."""

NoiseSource = Callable[[], torch.Tensor]
"""Returns the next standard Gaussian draw with the shape of the iterate `[B, C, L]`."""


def ddpm_sample(
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedule: PowerSchedule,
    steps: list[int],
    noise: NoiseSource,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling over a descending subset of steps (Ho et al., 2020, Algorithm 2).

    Between consecutive listed steps t > s the chain is treated as one DDPM step with
    alpha = alpha_bar_s / alpha_bar_t. Coefficients are evaluated exactly as AudioCraft does (float32, on
    the CPU; alpha_bar_t by direct product, alpha from cumulative-product ratios) so that results match
    the released implementation bit for bit.

    Args:
        denoise: the noise predictor.
        x_T: the initial Gaussian noise `[B, C, L]`.
        schedule: the noise schedule the model was trained with.
        steps: strictly descending steps ending in 0; `len(steps) - 1` model evaluations.
        noise: called once per iteration except the last, for the posterior noise.
        on_step: called as `on_step(i, x)` with the state after iteration i.

    Returns:
        The final state in diffusion space `[B, C, L]`.
    """
    steps = check_steps(steps, schedule.num_steps)
    alpha_bars_sub = schedule.alpha_bars()[list(reversed(steps))]  # ascending in alpha_bar
    alphas_sub = torch.cat([alpha_bars_sub[:1], alpha_bars_sub[1:] / alpha_bars_sub[:-1]])
    betas_sub = 1 - alphas_sub
    alpha_bar = schedule.alpha_bar(schedule.num_steps - 1)
    x = x_T * schedule.noise_scale
    for i, t in enumerate(steps[:-1]):
        with torch.no_grad():
            eps = denoise(x, t) * schedule.noise_scale
        alpha = 1 - betas_sub[-1 - i]
        # (1) posterior mean: x_prev = (x_t - (1 - alpha) / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha)
        x_prev = (x - (1 - alpha) / (1 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        if t == steps[-2]:
            # (2) the last iteration is deterministic and lands on alpha_bar = 1.
            sigma2 = torch.tensor(0.0)
            alpha_bar_prev = torch.tensor(1.0)
        else:
            # (2) sigma_t^2 = beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha)
            alpha_bar_prev = schedule.alpha_bar(steps[i + 1])
            sigma2 = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha)
        if sigma2 > 0:
            x_prev += sigma2**0.5 * noise() * schedule.noise_scale
        if schedule.clip:
            x_prev = x_prev.clamp(-schedule.clip, schedule.clip)
        # AudioCraft multiplies by `rescale` only after t == 0, which a list ending in 0 never iterates.
        x, alpha_bar = x_prev, alpha_bar_prev
        if on_step is not None:
            on_step(i, x)
    return x
