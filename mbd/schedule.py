"""The power noise schedule of MBD's diffusion process (spec §c).

beta_t = (beta_t0^(1/p) + t / (N - 1) * (beta_t1^(1/p) - beta_t0^(1/p)))^p for t = 0..N-1, with
alpha_bar_t = prod_{s<=t} (1 - beta_s) as in DDPM (Ho et al., 2020, eq. 4). All vectors are float32 on
the CPU, computed exactly as AudioCraft computes them, so that sampling coefficients match bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PowerSchedule:
    """Args:
    beta_t0: beta at the first step.
    beta_t1: beta at the last step.
    beta_exp: the power p.
    num_steps: N, the number of diffusion steps the model was trained on.
    clip: the sampler clamps every iterate to [-clip, clip] in diffusion space (0 disables).
    rescale: training scales x0 by 1 / rescale; the sampler undoes it after step 0.
    noise_scale: scale of the Gaussian noise in training and sampling.
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


def default_steps(num_steps: int = 1000, stride: int = 50) -> list[int]:
    """AudioCraft's default step list: every `stride`-th step counting down from N-1, then 0.

    For N = 1000 this is [999, 949, ..., 49, 0]: 21 entries, 20 model evaluations.
    """
    return list(range(num_steps))[::-stride] + [0]


def check_steps(steps: list[int], num_steps: int) -> list[int]:
    """Validate a step list: strictly descending integers in [0, N), ending in 0, at least two entries."""
    steps = [int(s) for s in steps]
    if len(steps) < 2 or steps[-1] != 0:
        raise ValueError(f"a step list needs at least two steps and must end in 0, got {steps}")
    if any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"a step list must be strictly descending, got {steps}")
    if steps[0] >= num_steps:
        raise ValueError(f"steps must be below num_steps={num_steps}, got {steps[0]}")
    return steps
