"""Flow matching: the probability path, its training target and the ODE sampler.

The conditional optimal-transport path of Lipman et al. (2023, "Flow Matching for Generative Modeling",
eq. 20-23 with sigma_min = 0, i.e. the rectified flow of Liu et al., 2023) joins a Gaussian draw x_0 at
t = 0 to a data point x_1 at t = 1:

    x_t = (1 - t) x_0 + t x_1,        u_t(x_t | x_1) = x_1 - x_0.

A network v(x_t, t) regresses u_t; sampling integrates dx/dt = v(x, t) from t = 0 to 1 (Euler or Heun).
Time grids may be warped by a shift s (Esser et al., 2024, eq. 23), t' = s t / (1 + (s - 1) t): s > 1 spends
more steps near the data end. The maths knows nothing about networks or bands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`velocity(x [B, ...], t [B]) -> v [B, ...]`: the model's estimate of u_t at time t."""

StepCallback = Callable[[int, torch.Tensor], None]
"""`on_step(i, x)`: the state after ODE step i."""

Solver = Literal["euler", "heun"]
SOLVERS: tuple[str, ...] = ("euler", "heun")


@dataclass(frozen=True)
class FlowSchedule:
    """Args:
    shift: warps the sampling time grid, t' = shift t / (1 + (shift - 1) t); 1 is uniform.
    """

    shift: float = 1.0

    def __post_init__(self) -> None:
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")

    def times(self, steps: int) -> torch.Tensor:
        """The `steps + 1` times from 0 to 1 that the sampler visits, `[steps + 1]` float32."""
        if steps < 1:
            raise ValueError(f"a flow sampler needs at least 1 step, got {steps}")
        t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        return (self.shift * t / (1 + (self.shift - 1) * t)).float()


def step_index(t: torch.Tensor, num_steps: int) -> torch.Tensor:
    """The integer step of a discrete-step network (MBD's U-Net embeds steps 0..N-1, N - 1 the noisiest) that
    stands for flow time t in [0, 1]: k = round((1 - t) (N - 1)). `[B] -> [B]` long."""
    return ((1 - t.float()) * (num_steps - 1)).round().long()


def add_noise(x_1: torch.Tensor, x_0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A point on the path and its target velocity (Lipman et al., 2023, eq. 22-23, sigma_min = 0).

    Args:
        x_1: data `[B, ...]`.
        x_0: standard Gaussian draws, the shape of `x_1`.
        t: times in [0, 1] `[B]`.

    Returns:
        `(x_t, u_t)`, each the shape of `x_1`.
    """
    t = t.view(-1, *([1] * (x_1.dim() - 1))).to(x_1)
    return (1 - t) * x_0 + t * x_1, x_1 - x_0


def sample(
    velocity: Velocity,
    x_0: torch.Tensor,
    times: torch.Tensor,
    solver: Solver = "euler",
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from `times[0]` to `times[-1]`.

    Euler takes one evaluation per step; Heun's method (the explicit trapezoidal rule) two, except on the
    last step, which is a plain Euler step (as in Karras et al., 2022, Algorithm 1).

    Args:
        velocity: the model's velocity.
        x_0: initial Gaussian draws `[B, ...]`.
        times: ascending times `[S + 1]`, e.g. `FlowSchedule.times(S)`, or one grid per example `[S + 1, B]`.
        solver: "euler" or "heun".
        on_step: called as `on_step(i, x)` after step i.

    Returns:
        x at `times[-1]`, `[B, ...]`.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    x = x_0
    times = times.to(x.device, torch.float32)
    if times.dim() == 1:
        times = times[:, None].expand(-1, x.shape[0])  # [S + 1, B]
    view = (-1,) + (1,) * (x.dim() - 1)
    for i in range(len(times) - 1):
        t, t_next = times[i], times[i + 1]  # [B] each
        dt = (t_next - t).view(view)
        v = velocity(x, t)
        if solver == "heun" and i < len(times) - 2:
            v_next = velocity(x + dt * v, t_next)
            x = x + dt * (v + v_next) / 2
        else:
            x = x + dt * v
        if on_step is not None:
            on_step(i, x)
    return x
