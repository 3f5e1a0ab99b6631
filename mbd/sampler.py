"""Reverse diffusion: AudioCraft's subsampled DDPM loop (spec §c, `generate_subsampled`) and two
deterministic fewer-step solvers on the same eps-predicting models.

The samplers know nothing about networks: they take a `denoise(x, t) -> eps` callable and, for DDPM, a
source of Gaussian noise, so the same loops serve every band, the fused network (bands stacked along
channels, each with its own schedule), the golden replay and training-time evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from .schedule import PowerSchedule, check_steps

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""`denoise(x [B, C, L], t) -> eps [B, C, L]`: the model's noise prediction at integer step t."""

NoiseSource = Callable[[], torch.Tensor]
"""Returns the next standard Gaussian draw with the shape of the iterate `[B, C, L]`."""

StepCallback = Callable[[int, torch.Tensor], None]
"""`on_step(i, x)`: the state after iteration i."""

Sampler = Literal["ddpm", "ddim", "dpm++2m"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm++2m")


Schedules = PowerSchedule | Sequence[PowerSchedule]


def _per_band(values: Sequence[torch.Tensor | float], x: torch.Tensor) -> torch.Tensor:
    """Per-band scalars as a `[1, n * C, 1]` tensor broadcasting over band-stacked `x` `[B, n * C, L]`."""
    v = torch.stack([torch.as_tensor(value, dtype=torch.float32) for value in values])  # [n]
    return v.repeat_interleave(x.shape[1] // len(values)).view(1, -1, 1).to(x)


def _as_list(schedules: Schedules) -> list[PowerSchedule]:
    return [schedules] if isinstance(schedules, PowerSchedule) else list(schedules)


def _clamp(x: torch.Tensor, schedules: list[PowerSchedule]) -> torch.Tensor:
    if not any(s.clip for s in schedules):
        return x
    bound = _per_band([s.clip if s.clip else float("inf") for s in schedules], x)
    return torch.minimum(torch.maximum(x, -bound), bound)


def ddpm_sample(
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedules: Schedules,
    steps: list[int],
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling over a descending subset of steps (Ho et al., 2020, Algorithm 2).

    Between consecutive listed steps t > s the chain is treated as one DDPM step with
    alpha = alpha_bar_s / alpha_bar_t. Coefficients are evaluated exactly as AudioCraft's
    `generate_subsampled` does (float32, on the CPU; alpha_bar_t by direct product, alpha from
    cumulative-product ratios) so that results match the released implementation bit for bit. The iterate
    may hold several bands stacked along channels (see `mbd.fused`), each with its own schedule.

    Args:
        denoise: the noise predictor `[B, n * C, L] -> [B, n * C, L]` (n = number of schedules).
        x_T: the initial Gaussian noise `[B, n * C, L]`.
        schedules: the schedule the model was trained with, or one per stacked band.
        steps: strictly descending steps ending in 0; `len(steps) - 1` model evaluations.
        noise: called once per iteration except the last, for the posterior noise `[B, n * C, L]`.
        on_step: called as `on_step(i, x)` with the state after iteration i.

    Returns:
        The final state in diffusion space `[B, n * C, L]`.
    """
    schedules = _as_list(schedules)
    steps = [check_steps(steps, s.num_steps) for s in schedules][0]
    alphas_sub = []
    for s in schedules:
        alpha_bars_sub = s.alpha_bars()[list(reversed(steps))]
        alphas_sub.append(torch.cat([alpha_bars_sub[:1], alpha_bars_sub[1:] / alpha_bars_sub[:-1]]))
    alpha_bar = [s.alpha_bar(s.num_steps - 1) for s in schedules]
    noise_scale = _per_band([s.noise_scale for s in schedules], x_T)
    x = x_T * noise_scale
    for i, t in enumerate(steps[:-1]):
        with torch.no_grad():
            eps = denoise(x, t) * noise_scale
        alpha = [1 - (1 - a[-1 - i]) for a in alphas_sub]
        # (1) posterior mean, per band: (x_t - (1 - alpha) / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha)
        c_eps = _per_band([(1 - a) / (1 - ab).sqrt() for a, ab in zip(alpha, alpha_bar)], x)
        x_prev = (x - c_eps * eps) / _per_band([a.sqrt() for a in alpha], x)
        if t == steps[-2]:
            # (2) the last iteration is deterministic and lands on alpha_bar = 1.
            alpha_bar = [torch.tensor(1.0)] * len(schedules)
        else:
            # (2) sigma_t^2 = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha)
            alpha_bar_prev = [s.alpha_bar(steps[i + 1]) for s in schedules]
            sigma = [((1 - abp) / (1 - ab) * (1 - a)) ** 0.5 for abp, ab, a in zip(alpha_bar_prev, alpha_bar, alpha)]
            x_prev += _per_band(sigma, x) * noise() * noise_scale
            alpha_bar = alpha_bar_prev
        # AudioCraft multiplies by `rescale` only after t == 0, which a list ending in 0 never iterates.
        x = _clamp(x_prev, schedules)
        if on_step is not None:
            on_step(i, x)
    return x


def spaced_steps(num_evaluations: int, num_steps: int = 1000) -> list[int]:
    """`num_evaluations + 1` evenly spaced integer steps from N - 1 down to 0, for `ddim_sample` and
    `dpmpp_2m_sample` (the model is evaluated at all but the final 0)."""
    if not 1 <= num_evaluations < num_steps:
        raise ValueError(f"num_evaluations must be in [1, {num_steps}), got {num_evaluations}")
    grid = torch.linspace(num_steps - 1, 0, num_evaluations + 1, dtype=torch.float64).round().long()
    return [int(s) for s in grid]


def _alpha_sigma(schedules: list[PowerSchedule], step: int | None, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-band sqrt(alpha_bar) and sqrt(1 - alpha_bar) at `step` (None: the clean end, alpha_bar = 1)."""
    alpha_bar = [torch.tensor(1.0) if step is None else s.alpha_bars()[step] for s in schedules]
    return _per_band([ab.sqrt() for ab in alpha_bar], x), _per_band([(1 - ab).sqrt() for ab in alpha_bar], x)


def _targets(steps: list[int]) -> list[int | None]:
    """The step each iteration lands on: the next listed step, and the clean end (None) for the last."""
    return [*steps[1:-1], None]


def ddim_sample(
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedules: Schedules,
    steps: list[int],
    clip: bool = True,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (Song et al., 2021, eq. 12 with eta = 0) on an eps-predicting model.

    The model is evaluated at `steps[:-1]`; like `ddpm_sample`, the last iteration lands on the clean
    signal (alpha_bar = 1).

    Args:
        denoise: noise predictor `[B, n * C, L] -> [B, n * C, L]` (n = number of schedules).
        x_T: standard Gaussian initial noise `[B, n * C, L]`.
        schedules: one schedule per band (or one).
        steps: strictly descending steps ending in 0, e.g. `spaced_steps(10)`.
        clip: clamp every iterate to each schedule's `[-clip, clip]`, as `ddpm_sample` does.
        on_step: called as `on_step(i, x)` after iteration i.

    Returns:
        the final state in diffusion space `[B, n * C, L]`.
    """
    schedules = _as_list(schedules)
    steps = [check_steps(steps, s.num_steps) for s in schedules][0]
    noise_scale = _per_band([s.noise_scale for s in schedules], x_T)
    x = x_T * noise_scale
    for i, (t, s) in enumerate(zip(steps[:-1], _targets(steps))):
        with torch.no_grad():
            eps = denoise(x, t) * noise_scale
        alpha_t, sigma_t = _alpha_sigma(schedules, t, x)
        alpha_s, sigma_s = _alpha_sigma(schedules, s, x)
        # (1) predicted clean signal: x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
        x0 = (x - sigma_t * eps) / alpha_t
        # (2) eq. 12, eta = 0: x_s = sqrt(alpha_bar_s) x0 + sqrt(1 - alpha_bar_s) eps
        x = alpha_s * x0 + sigma_s * eps
        if clip:
            x = _clamp(x, schedules)
        if on_step is not None:
            on_step(i, x)
    return x


def dpmpp_2m_sample(
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedules: Schedules,
    steps: list[int],
    clip: bool = True,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2): a second-order multistep solver in data prediction.

    With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and lambda_t = log(alpha_t / sigma_t),
    each step is x_s = sigma_s / sigma_t x_t - alpha_s (exp(-h) - 1) D with h = lambda_s - lambda_t and
    D the second-order combination of the current and previous x0 predictions. The first step and the
    last (onto the clean signal) are first order, which makes the last one return the x0 prediction.

    Args:
        denoise: noise predictor `[B, n * C, L] -> [B, n * C, L]` (n = number of schedules).
        x_T: standard Gaussian initial noise `[B, n * C, L]`.
        schedules: one schedule per band (or one).
        steps: strictly descending steps ending in 0, e.g. `spaced_steps(10)`.
        clip: clamp every iterate to each schedule's `[-clip, clip]`, as `ddpm_sample` does.
        on_step: called as `on_step(i, x)` after iteration i.

    Returns:
        the final state in diffusion space `[B, n * C, L]`.
    """
    schedules = _as_list(schedules)
    steps = [check_steps(steps, s.num_steps) for s in schedules][0]
    noise_scale = _per_band([s.noise_scale for s in schedules], x_T)
    x = x_T * noise_scale
    x0_prev: torch.Tensor | None = None
    h_prev: torch.Tensor | None = None
    for i, (t, s) in enumerate(zip(steps[:-1], _targets(steps))):
        with torch.no_grad():
            eps = denoise(x, t) * noise_scale
        alpha_t, sigma_t = _alpha_sigma(schedules, t, x)
        x0 = (x - sigma_t * eps) / alpha_t  # (1) data prediction
        if s is None:
            x = x0  # (2) last step: sigma_s = 0, first order lands on x0
        else:
            alpha_s, sigma_s = _alpha_sigma(schedules, s, x)
            h = (alpha_s / sigma_s).log() - (alpha_t / sigma_t).log()  # lambda_s - lambda_t
            d = x0
            if x0_prev is not None and h_prev is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev  # (3) second-order correction
            x = sigma_s / sigma_t * x - alpha_s * torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if clip:
            x = _clamp(x, schedules)
        if on_step is not None:
            on_step(i, x)
    return x


def sample(
    sampler: Sampler,
    denoise: Denoiser,
    noise: NoiseSource,
    schedules: Schedules,
    steps: list[int],
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run the named sampler from `noise()` (the initial draw); DDPM keeps drawing from `noise`.

    Returns:
        the final state in diffusion space, shaped like the draws.
    """
    if sampler == "ddpm":
        return ddpm_sample(denoise, noise(), schedules, steps, noise, on_step)
    if sampler == "ddim":
        return ddim_sample(denoise, noise(), schedules, steps, on_step=on_step)
    if sampler == "dpm++2m":
        return dpmpp_2m_sample(denoise, noise(), schedules, steps, on_step=on_step)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
