"""The fewer-step solvers and the band-stacked DDPM loop."""

from __future__ import annotations

import pytest
import torch

from mbd.sampler import ddim_sample, ddpm_sample, dpmpp_2m_sample, spaced_steps
from mbd.schedule import PowerSchedule


def oracle(x0: torch.Tensor, schedule: PowerSchedule):
    """The exact (unit-scale) noise in x_t for the clean signal x0: x_t = sqrt(ab) x0 + sqrt(1 - ab) s eps."""
    alpha_bars = schedule.alpha_bars().double()

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        ab = alpha_bars[t]
        return ((x.double() - ab.sqrt() * x0.double()) / ((1 - ab).sqrt() * schedule.noise_scale)).float()

    return denoise


def test_spaced_steps() -> None:
    assert spaced_steps(1) == [999, 0]
    steps = spaced_steps(10)
    assert len(steps) == 11 and steps[0] == 999 and steps[-1] == 0
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert spaced_steps(4, 100) == [99, 74, 50, 25, 0]
    with pytest.raises(ValueError):
        spaced_steps(0)


SCHEDULES = [PowerSchedule(), PowerSchedule(beta_t1=0.02, beta_exp=2.0, noise_scale=0.5, clip=0.0)]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("solver", [ddim_sample, dpmpp_2m_sample])
@pytest.mark.parametrize("n_steps", [1, 3, 10])
def test_oracle_recovers_x0(solver, n_steps: int, schedule: PowerSchedule) -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 1, 500, generator=gen).clamp(-3, 3)
    x_T = torch.randn(2, 1, 500, generator=gen)
    seen: list[int] = []
    out = solver(oracle(x0, schedule), x_T, schedule, spaced_steps(n_steps), on_step=lambda i, x: seen.append(i))
    assert seen == list(range(n_steps))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_wrong_denoiser_does_not_recover_x0() -> None:
    x0 = torch.randn(1, 1, 200)
    out = ddim_sample(lambda x, t: torch.zeros_like(x), torch.randn(1, 1, 200), PowerSchedule(), spaced_steps(5))
    assert (out - x0).abs().max() > 0.5


def test_dpmpp_is_second_order() -> None:
    """On a Gaussian-data model (exact eps of N(0, s^2) data), DPM-Solver++(2M) beats DDIM at 5 steps."""
    schedule, s2 = PowerSchedule(clip=0.0), 0.25
    alpha_bars = schedule.alpha_bars()

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        ab = alpha_bars[t]
        return (1 - ab).sqrt() * x / (ab * s2 + 1 - ab)  # E[eps | x_t] for Gaussian data

    x_T = torch.randn(1, 1, 1000, generator=torch.Generator().manual_seed(3))
    exact = ddim_sample(denoise, x_T, schedule, list(range(999, -1, -1)), clip=False)
    errs = {
        solver.__name__: (solver(denoise, x_T, schedule, spaced_steps(5), clip=False) - exact).abs().max().item()
        for solver in (ddim_sample, dpmpp_2m_sample)
    }
    assert errs["dpmpp_2m_sample"] < errs["ddim_sample"], errs


def test_ddpm_bands_equals_ddpm_per_band() -> None:
    schedules = [PowerSchedule(), PowerSchedule(beta_t1=0.01, clip=1.0, noise_scale=0.8)]
    steps = [999, 800, 400, 100, 0]
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 2, 1, 64, generator=gen)  # [n_bands, B, C, L]
    draws = torch.randn(2, 3, 2, 1, 64, generator=gen)
    weights = torch.tensor([0.5, -1.5])

    def denoise_band(b: int):
        return lambda x, t: torch.tanh(x * weights[b] + t / 1000)

    want = []
    for b, schedule in enumerate(schedules):
        it = iter(draws[b])
        want.append(ddpm_sample(denoise_band(b), x_T[b], schedule, steps, lambda it=it: next(it)))
    later = iter(draws.unbind(1))

    def stacked_denoise(x: torch.Tensor, t: int) -> torch.Tensor:  # x [B, 2, L]
        return torch.cat([denoise_band(b)(x[:, b : b + 1], t) for b in range(2)], dim=1)

    got = ddpm_sample(
        stacked_denoise,
        x_T.permute(1, 0, 2, 3).reshape(2, 2, 64),
        schedules,
        steps,
        lambda: next(later).permute(1, 0, 2, 3).reshape(2, 2, 64),
    )
    assert got.abs().max() <= 5.0 and got[:, 1].abs().max() <= 1.0
    torch.testing.assert_close(got, torch.cat(want, dim=1), atol=0, rtol=0)
