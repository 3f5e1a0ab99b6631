from __future__ import annotations

import pytest
import torch

from mbd.schedule import PowerSchedule, check_steps, default_steps


def test_power_schedule_endpoints_and_shape() -> None:
    schedule = PowerSchedule()
    betas = schedule.betas()
    assert betas.shape == (1000,) and betas.dtype == torch.float32
    assert betas[0].item() == pytest.approx(1e-5, rel=1e-5)
    assert betas[-1].item() == pytest.approx(2.9e-2, rel=1e-5)
    assert torch.all(betas[1:] > betas[:-1])
    # the table of spec §c
    assert betas[500].item() == pytest.approx(1.488e-3, rel=1e-3)
    alpha_bars = schedule.alpha_bars()
    assert torch.all(alpha_bars[1:] < alpha_bars[:-1])
    assert alpha_bars[999].item() == pytest.approx(0.0051866, rel=1e-4)
    assert schedule.alpha_bar(949).item() == pytest.approx(0.01911, rel=1e-3)


def test_exponent_one_is_linear() -> None:
    betas = PowerSchedule(beta_t0=1e-4, beta_t1=0.02, beta_exp=1.0, num_steps=5).betas()
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, 5))


def test_default_steps() -> None:
    steps = default_steps()
    assert len(steps) == 21 and steps[:3] == [999, 949, 899] and steps[-2:] == [49, 0]


@pytest.mark.parametrize("steps", [[999], [999, 500], [0, 999], [999, 999, 0], [1000, 0]])
def test_bad_step_lists(steps: list[int]) -> None:
    with pytest.raises(ValueError, match="step"):
        check_steps(steps, 1000)


def test_bad_schedule() -> None:
    with pytest.raises(ValueError, match="beta"):
        PowerSchedule(beta_t0=0.1, beta_t1=0.01)
