"""The DDPM maths of MBD: power noise schedule, training noise, step lists, samplers and their Gaussian draws.

Forward process (Ho et al., 2020, eq. 4), with AudioCraft's two extra scales (audiocraft/modules/
diffusion_schedule.py, `NoiseSchedule`): x_t = sqrt(alpha_bar_t) x0 / rescale + sqrt(1 - alpha_bar_t) s eps,
s = noise_scale. The samplers run the reverse process on an eps-predicting model and know nothing about
networks: they take a `denoise(x, t) -> eps` callable, so the same loops serve every band, the band-stacked
fused network (`mbd.fused`, each band with its own schedule), the golden replay and training-time evaluation.

`rescale`: the diffusion runs on x0 / rescale. `add_noise` divides the clean signal by it and every sampler
multiplies its final iterate by it, so a model trained with any rescale decodes at the scale of its data
(as AudioCraft's full-chain `NoiseSchedule.generate` does after step 0; its `generate_subsampled` never
reaches that branch). Released checkpoints use rescale = 1, where both ends are the identity.

Step lists are strictly descending integers ending in 0; the model is evaluated at all but the last.
`resolve_steps` validates a caller's list once, at the entry (`MultiBandDiffusion.generate`); the samplers
assume a valid list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import InputError

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""`denoise(x [B, C, L], t) -> eps [B, C, L]`: the model's noise prediction at integer step t."""

NoiseSource = Callable[[], torch.Tensor]
"""Returns the next standard Gaussian draw with the shape of the iterate `[B, C, L]`."""

StepCallback = Callable[[int, torch.Tensor], None]
"""`on_step(i, x)`: the state after iteration i."""

Sampler = Literal["ddpm", "ddim", "dpm++2m"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm++2m")


@dataclass(frozen=True)
class PowerSchedule:
    """beta_t = (beta_t0^(1/p) + t / (N - 1) (beta_t1^(1/p) - beta_t0^(1/p)))^p for t = 0..N-1 and
    alpha_bar_t = prod_{s<=t} (1 - beta_s). Every vector is float32 on the CPU, computed as AudioCraft computes
    it, so that sampling coefficients match bit for bit.

    Args:
        beta_t0: beta at the first step.
        beta_t1: beta at the last step.
        beta_exp: the power p.
        num_steps: N, the number of diffusion steps the model was trained on.
        clip: the samplers clamp every iterate to [-clip, clip] in diffusion space (0 disables).
        rescale: the diffusion runs on x0 / rescale (see the module docstring).
        noise_scale: s, the scale of the Gaussian noise in training and sampling.
    """

    beta_t0: float = 1e-5
    beta_t1: float = 2.9e-2
    beta_exp: float = 7.5
    num_steps: int = 1000
    clip: float = 5.0
    rescale: float = 1.0
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.beta_t0 <= self.beta_t1 < 1:
            raise ValueError(f"need 0 < beta_t0 <= beta_t1 < 1, got {self.beta_t0}, {self.beta_t1}")
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {self.num_steps}")
        if not self.rescale > 0:
            raise ValueError(f"rescale must be > 0, got {self.rescale}")

    def betas(self) -> torch.Tensor:
        """beta_t for t = 0..N-1, `[N]` float32."""
        p = self.beta_exp
        start, end = self.beta_t0 ** (1 / p), self.beta_t1 ** (1 / p)
        return torch.linspace(start, end, self.num_steps, dtype=torch.float32) ** p

    def alpha_bars(self) -> torch.Tensor:
        """alpha_bar_t = cumprod(1 - beta)_t for t = 0..N-1, `[N]` float32."""
        return (1 - self.betas()).cumprod(dim=0)

    def alpha_bar(self, step: int) -> torch.Tensor:
        """alpha_bar at one step as a 0-d tensor, by a direct product (AudioCraft's sampler uses this form,
        which differs from `alpha_bars()[step]` by rounding, up to 8e-7)."""
        return (1 - self.betas()[: step + 1]).prod()


def add_noise(x0: torch.Tensor, step: torch.Tensor, noise: torch.Tensor, schedule: PowerSchedule) -> torch.Tensor:
    """A draw of q(x_t | x_0) for training: sqrt(alpha_bar_t) x0 / rescale + sqrt(1 - alpha_bar_t) s eps.

    Args:
        x0: clean signals `[B, C, L]`.
        step: one integer step per example `[B]`, on x0's device.
        noise: standard Gaussian eps `[B, C, L]`; the model's regression target.
        schedule: the noise schedule.

    Returns:
        x_t `[B, C, L]`.
    """
    alpha_bar = schedule.alpha_bars().to(x0.device)[step].view(-1, *[1] * (x0.dim() - 1))
    scaled_noise = (1 - alpha_bar).sqrt() * noise * schedule.noise_scale
    return alpha_bar.sqrt() / schedule.rescale * x0 + scaled_noise


# --- step lists -----------------------------------------------------------------------------------------


def default_steps(num_steps: int = 1000, stride: int = 50) -> list[int]:
    """AudioCraft's default step list: every `stride`-th step counting down from N-1, then 0.

    For N = 1000 this is [999, 949, ..., 49, 0]: 21 entries, 20 model evaluations.
    """
    steps = list(range(num_steps))[::-stride]
    return steps if steps[-1] == 0 else [*steps, 0]  # stride 1 is the full chain, which already ends in 0


def spaced_steps(num_evaluations: int, num_steps: int = 1000) -> list[int]:
    """`num_evaluations + 1` evenly spaced integer steps from N - 1 down to 0 (for "ddim" and "dpm++2m")."""
    if not 1 <= num_evaluations < num_steps:
        raise InputError(f"num_evaluations must be in [1, {num_steps}), got {num_evaluations}")
    grid = torch.linspace(num_steps - 1, 0, num_evaluations + 1, dtype=torch.float64).round().long()
    return [int(s) for s in grid]


def step_list(num_steps: int, evaluations: int | None = None, sampler: Sampler = "ddpm") -> list[int]:
    """The steps a sampler visits for a number of model evaluations.

    "ddpm" gets AudioCraft's 20-step list for `evaluations` None or 20, and for any count dividing N evenly
    every N/n-th step, then 0; otherwise (and for the other samplers) `evaluations` (default 10) evenly
    spaced steps.
    """
    if sampler == "ddpm" and (evaluations is None or num_steps % evaluations == 0):
        return default_steps(num_steps, num_steps // (evaluations or 20))
    return spaced_steps(evaluations or 10, num_steps)


def check_steps(steps: Sequence[int], num_steps: int) -> list[int]:
    """Validate a step list: strictly descending integers in [0, N), ending in 0, at least two entries."""
    steps = [int(s) for s in steps]
    if len(steps) < 2 or steps[-1] != 0:
        raise InputError(f"a step list needs at least two steps and must end in 0, got {steps}")
    if any(a <= b for a, b in zip(steps, steps[1:])):
        raise InputError(f"a step list must be strictly descending, got {steps}")
    if steps[0] >= num_steps:
        raise InputError(f"steps must be below num_steps={num_steps}, got {steps[0]}")
    return steps


def resolve_steps(steps: Sequence[int] | None, num_steps: int, sampler: Sampler = "ddpm") -> list[int]:
    """The one check of a caller's step list (`check_steps`), or the sampler's default list for None."""
    return step_list(num_steps, None, sampler) if steps is None else check_steps(steps, num_steps)


# --- samplers -------------------------------------------------------------------------------------------

Schedules = PowerSchedule | Sequence[PowerSchedule]
Update = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""`update(i, x_t, eps) -> x_s`: one sampler iteration from the listed step i to the next."""


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


def _run(
    update: Update,
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedules: list[PowerSchedule],
    steps: list[int],
    clip: bool,
    on_step: StepCallback | None,
) -> torch.Tensor:
    """The loop every sampler shares: scale the initial draw by s; per iteration i evaluate eps = s * model,
    step with `update`, clamp; after the last iteration multiply by `rescale`. Returns `[B, n * C, L]`."""
    noise_scale = _per_band([s.noise_scale for s in schedules], x_T)
    x = x_T * noise_scale
    for i, t in enumerate(steps[:-1]):
        with torch.no_grad():
            eps = denoise(x, t) * noise_scale
        x = update(i, x, eps)
        if clip:
            x = _clamp(x, schedules)
        if i == len(steps) - 2 and any(s.rescale != 1 for s in schedules):
            x = x * _per_band([s.rescale for s in schedules], x)
        if on_step is not None:
            on_step(i, x)
    return x


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
    cumulative-product ratios) so that results match the released implementation bit for bit.

    Args:
        denoise: the noise predictor `[B, n * C, L] -> [B, n * C, L]` (n = number of schedules).
        x_T: the initial standard Gaussian draw `[B, n * C, L]`.
        schedules: the schedule the model was trained with, or one per stacked band.
        steps: a valid step list (`check_steps`); `len(steps) - 1` model evaluations.
        noise: called once per iteration except the last, for the posterior noise `[B, n * C, L]`.
        on_step: called as `on_step(i, x)` with the state after iteration i.

    Returns:
        the final state `[B, n * C, L]`.
    """
    schedules = _as_list(schedules)
    alphas_sub = []
    for s in schedules:
        alpha_bars_sub = s.alpha_bars()[list(reversed(steps))]
        alphas_sub.append(torch.cat([alpha_bars_sub[:1], alpha_bars_sub[1:] / alpha_bars_sub[:-1]]))
    alpha_bar = [s.alpha_bar(s.num_steps - 1) for s in schedules]
    noise_scale = _per_band([s.noise_scale for s in schedules], x_T)

    def update(i: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        nonlocal alpha_bar
        alpha = [1 - (1 - a[-1 - i]) for a in alphas_sub]
        # (1) posterior mean, per band: (x_t - (1 - alpha) / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha)
        c_eps = _per_band([(1 - a) / (1 - ab).sqrt() for a, ab in zip(alpha, alpha_bar)], x)
        x_prev = (x - c_eps * eps) / _per_band([a.sqrt() for a in alpha], x)
        if i < len(steps) - 2:  # (2) sigma^2 = (1 - alpha_bar_prev) / (1 - alpha_bar_t) (1 - alpha); none at the end
            alpha_bar_prev = [s.alpha_bar(steps[i + 1]) for s in schedules]
            sigma = [((1 - abp) / (1 - ab) * (1 - a)) ** 0.5 for abp, ab, a in zip(alpha_bar_prev, alpha_bar, alpha)]
            x_prev += _per_band(sigma, x) * noise() * noise_scale
            alpha_bar = alpha_bar_prev
        return x_prev

    return _run(update, denoise, x_T, schedules, steps, True, on_step)


def _alpha_sigma(schedules: list[PowerSchedule], step: int | None, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-band sqrt(alpha_bar) and sqrt(1 - alpha_bar) at `step` (None: the clean end, alpha_bar = 1)."""
    alpha_bar = [torch.tensor(1.0) if step is None else s.alpha_bars()[step] for s in schedules]
    return _per_band([ab.sqrt() for ab in alpha_bar], x), _per_band([(1 - ab).sqrt() for ab in alpha_bar], x)


def _target(steps: list[int], i: int) -> int | None:
    """The step iteration i lands on: the next listed step, or the clean end (None) for the last."""
    return steps[i + 1] if i < len(steps) - 2 else None


def _ddim_update(schedules: list[PowerSchedule], steps: list[int]) -> Update:
    """Deterministic DDIM (Song et al., 2021, eq. 12 with eta = 0); like DDPM, the last iteration lands on
    alpha_bar = 1."""

    def update(i: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        alpha_t, sigma_t = _alpha_sigma(schedules, steps[i], x)
        alpha_s, sigma_s = _alpha_sigma(schedules, _target(steps, i), x)
        # (1) predicted clean signal: x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
        x0 = (x - sigma_t * eps) / alpha_t
        # (2) eq. 12, eta = 0: x_s = sqrt(alpha_bar_s) x0 + sqrt(1 - alpha_bar_s) eps
        return alpha_s * x0 + sigma_s * eps

    return update


def _dpmpp_2m_update(schedules: list[PowerSchedule], steps: list[int]) -> Update:
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2): a second-order multistep solver in data prediction.

    With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and lambda_t = log(alpha_t / sigma_t),
    each step is x_s = sigma_s / sigma_t x_t - alpha_s (exp(-h) - 1) D with h = lambda_s - lambda_t and
    D the second-order combination of the current and previous x0 predictions. The first step and the
    last (onto the clean signal) are first order, which makes the last one return the x0 prediction.
    """
    x0_prev: torch.Tensor | None = None
    h_prev: torch.Tensor | None = None

    def update(i: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        nonlocal x0_prev, h_prev
        s = _target(steps, i)
        alpha_t, sigma_t = _alpha_sigma(schedules, steps[i], x)
        x0 = (x - sigma_t * eps) / alpha_t  # (1) data prediction
        if s is None:
            return x0  # (2) last step: sigma_s = 0, first order lands on x0
        alpha_s, sigma_s = _alpha_sigma(schedules, s, x)
        h = (alpha_s / sigma_s).log() - (alpha_t / sigma_t).log()  # lambda_s - lambda_t
        d = x0
        if x0_prev is not None and h_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev  # (3) second-order correction
        x0_prev, h_prev = x0, h
        return sigma_s / sigma_t * x - alpha_s * torch.expm1(-h) * d

    return update


_ODE_UPDATES = {"ddim": _ddim_update, "dpm++2m": _dpmpp_2m_update}


def ode_sample(
    solver: Literal["ddim", "dpm++2m"],
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedules: Schedules,
    steps: list[int],
    clip: bool = True,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """A deterministic sampler on an eps-predicting model: it draws only the initial noise.

    Args:
        solver: "ddim" (`_ddim_update`) or "dpm++2m" (`_dpmpp_2m_update`).
        denoise: noise predictor `[B, n * C, L] -> [B, n * C, L]` (n = number of schedules).
        x_T: standard Gaussian initial noise `[B, n * C, L]`.
        schedules: one schedule per band (or one).
        steps: a valid step list, e.g. `spaced_steps(10)`.
        clip: clamp every iterate to each schedule's `[-clip, clip]`, as `ddpm_sample` does.
        on_step: called as `on_step(i, x)` after iteration i.

    Returns:
        the final state `[B, n * C, L]`.
    """
    schedules = _as_list(schedules)
    return _run(_ODE_UPDATES[solver](schedules, steps), denoise, x_T, schedules, steps, clip, on_step)


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
        the final state, shaped like the draws.
    """
    if sampler == "ddpm":
        return ddpm_sample(denoise, noise(), schedules, steps, noise, on_step)
    if sampler in _ODE_UPDATES:
        return ode_sample(sampler, denoise, noise(), schedules, steps, on_step=on_step)  # type: ignore[arg-type]
    raise InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
