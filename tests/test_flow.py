"""mbd.flow: the probability path, its target, the time grid and the ODE solvers."""

from __future__ import annotations

import pytest
import torch

from mbd import flow


def test_path_endpoints_and_target() -> None:
    x_1, x_0 = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    x_t, u = flow.add_noise(x_1, x_0, torch.tensor([0.0, 1.0, 0.25]))
    torch.testing.assert_close(x_t[0], x_0[0])
    torch.testing.assert_close(x_t[1], x_1[1])
    torch.testing.assert_close(x_t[2], 0.75 * x_0[2] + 0.25 * x_1[2])
    torch.testing.assert_close(u, x_1 - x_0)


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_time_grid(shift: float) -> None:
    t = flow.FlowSchedule(shift).times(8)
    assert t.shape == (9,) and t[0] == 0 and t[-1] == 1
    assert (t[1:] > t[:-1]).all()
    mid = t[4].item()
    assert mid == pytest.approx(shift * 0.5 / (1 + (shift - 1) * 0.5))  # Esser et al. 2024, eq. 23


def test_bad_schedule_and_solver() -> None:
    with pytest.raises(ValueError, match="shift"):
        flow.FlowSchedule(0.0)
    with pytest.raises(ValueError, match="at least 1 step"):
        flow.FlowSchedule().times(0)
    with pytest.raises(ValueError, match="solver"):
        flow.sample(lambda x, t: x, torch.zeros(1), torch.tensor([0.0, 1.0]), "rk4")  # type: ignore[arg-type]


def test_one_euler_step_of_the_exact_field_reaches_a_point_target() -> None:
    # For data concentrated at c the marginal velocity is (c - x) / (1 - t): Euler from t = 0 lands on c.
    c = torch.tensor([[1.5, -2.0]])
    x_0 = torch.randn(4, 2)
    out = flow.sample(lambda x, t: (c - x) / (1 - t[:, None]), x_0, flow.FlowSchedule().times(1))
    torch.testing.assert_close(out, c.expand(4, 2))


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_gaussian_data_is_reached_with_the_exact_field(solver: str) -> None:
    # Data N(m, s^2), prior N(0, 1): x_t is Gaussian with mean t m and std sigma_t = sqrt((1-t)^2 + t^2 s^2);
    # the marginal velocity is m + (x - t m) * sigma_t' / sigma_t (the closed form, independent of our code).
    m, s = 2.0, 0.5

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = ((1 - t) ** 2 + t**2 * s**2).sqrt()
        d_sigma = (-(1 - t) + t * s**2) / sigma
        return m + (x - t * m) * d_sigma / sigma

    x_0 = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = flow.sample(velocity, x_0, flow.FlowSchedule().times(200 if solver == "euler" else 20).double(), solver)
    assert out.mean().item() == pytest.approx(m, abs=0.01)
    assert out.std().item() == pytest.approx(s, abs=0.01)


def test_per_example_time_grids_and_callback() -> None:
    seen = []
    times = torch.stack([torch.linspace(0, 1, 5), flow.FlowSchedule(3.0).times(4)], dim=1)  # [5, 2]
    out = flow.sample(lambda x, t: torch.ones_like(x) * t[:, None], torch.zeros(2, 1), times,
                      on_step=lambda i, x: seen.append(i))
    assert seen == [0, 1, 2, 3]
    # Euler with v = t integrates sum_i t_i dt_i: a left Riemann sum of t over each grid
    want = [(times[:-1, b] * (times[1:, b] - times[:-1, b])).sum().item() for b in range(2)]
    torch.testing.assert_close(out[:, 0], torch.tensor(want))
