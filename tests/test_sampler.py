from __future__ import annotations

import torch

from mbd.sampler import ddpm_sample
from mbd.schedule import PowerSchedule, default_steps


def _oracle(x0: torch.Tensor, schedule: PowerSchedule):
    """The exact noise prediction for a data set holding the single signal x0."""
    alpha_bars = schedule.alpha_bars()

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        a = alpha_bars[t]
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return denoise


def _gaussian(generator: torch.Generator, shape: tuple[int, ...]):
    return lambda: torch.randn(shape, generator=generator)


def test_oracle_denoiser_recovers_signal() -> None:
    schedule = PowerSchedule(clip=0.0)
    x0 = torch.sin(torch.linspace(0, 20, 400)).view(1, 1, -1) * 0.5
    g = torch.Generator().manual_seed(0)
    for steps in (default_steps(), [999, 500, 100, 0], list(range(999, -1, -1))):
        out = ddpm_sample(
            _oracle(x0, schedule), torch.randn(x0.shape, generator=g), schedule, steps, _gaussian(g, x0.shape)
        )
        # the last step leaves the noise of alpha_bar_0 = 1 - beta_0 ~ 1e-5 only
        torch.testing.assert_close(out, x0, atol=1e-2, rtol=0)


def test_same_generator_same_output_and_clipping() -> None:
    schedule = PowerSchedule(clip=0.5)

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        return -x  # pushes the iterate outwards, so the clamp is reached

    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        states: list[torch.Tensor] = []
        out = ddpm_sample(
            denoise,
            torch.randn(2, 1, 64, generator=g),
            schedule,
            default_steps(),
            _gaussian(g, (2, 1, 64)),
            lambda i, x: states.append(x.clone()),
        )
        return out, states

    a, states = run(1)
    b, _ = run(1)
    c, _ = run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(states) == 20 and torch.equal(states[-1], a)
    assert a.abs().max().item() <= 0.5


def test_noise_draw_count() -> None:
    draws = []

    def noise() -> torch.Tensor:
        draws.append(1)
        return torch.zeros(1, 1, 8)

    ddpm_sample(lambda x, t: torch.zeros_like(x), torch.zeros(1, 1, 8), PowerSchedule(), [999, 600, 300, 0], noise)
    assert len(draws) == 2  # no noise after the last iteration
