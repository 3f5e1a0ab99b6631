"""The DDPM maths: schedule, training noise, step lists, samplers, rescale and the order of the Gaussian draws."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mbd import diffusion
from mbd.diffusion import (
    PowerSchedule,
    add_noise,
    check_steps,
    ddpm_sample,
    default_steps,
    ode_sample,
    resolve_steps,
    sample,
    spaced_steps,
    step_list,
)
from mbd.noise import all_draws, band_draws, randn
from mbd.options import RuntimeOptions
from mbd.train.config import RecipeError, build
from tests.conftest import oracle, tiny_diffusion_model


def reference_alpha_bars(schedule: PowerSchedule) -> torch.Tensor:
    """alpha_bar_t in float64 from the power-schedule formula, independently of `PowerSchedule`."""
    p = schedule.beta_exp
    betas = np.linspace(schedule.beta_t0 ** (1 / p), schedule.beta_t1 ** (1 / p), schedule.num_steps) ** p
    return torch.from_numpy(np.cumprod(1 - betas))


def gaussian(generator: torch.Generator, shape: tuple[int, ...]):  # noqa: ANN201
    return lambda: torch.randn(shape, generator=generator)


# --- schedule -------------------------------------------------------------------------------------------


def test_power_schedule_endpoints_and_shape() -> None:
    schedule = PowerSchedule()
    betas = schedule.betas()
    assert betas.shape == (1000,) and betas.dtype == torch.float32
    assert betas[0].item() == pytest.approx(1e-5, rel=1e-5)
    assert betas[-1].item() == pytest.approx(2.9e-2, rel=1e-5)
    assert torch.all(betas[1:] > betas[:-1])
    # by hand: (1e-5^(1/7.5) + 500/999 (0.029^(1/7.5) - 1e-5^(1/7.5)))^7.5
    assert betas[500].item() == pytest.approx(1.488e-3, rel=1e-3)
    alpha_bars = schedule.alpha_bars()
    assert torch.all(alpha_bars[1:] < alpha_bars[:-1])
    torch.testing.assert_close(alpha_bars.double(), reference_alpha_bars(schedule), atol=1e-6, rtol=0)
    assert alpha_bars[999].item() == pytest.approx(0.0051866, rel=1e-4)
    assert schedule.alpha_bar(949).item() == pytest.approx(0.01911, rel=1e-3)


def test_exponent_one_is_linear() -> None:
    betas = PowerSchedule(beta_t0=1e-4, beta_t1=0.02, beta_exp=1.0, num_steps=5).betas()
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, 5))


def test_bad_schedule() -> None:
    with pytest.raises(ValueError, match="beta"):
        PowerSchedule(beta_t0=0.1, beta_t1=0.01)
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        PowerSchedule(num_steps=1)


# --- training noise -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule", [PowerSchedule(), PowerSchedule(beta_t1=0.02, beta_exp=2.0, rescale=2.0, noise_scale=0.5)]
)
def test_add_noise_is_the_closed_form(schedule: PowerSchedule) -> None:
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 64, generator=gen), torch.randn(4, 1, 64, generator=gen)
    step = torch.tensor([0, 1, 500, 999])
    ab = reference_alpha_bars(schedule)[step].view(-1, 1, 1)
    want = ab.sqrt() * x0.double() / schedule.rescale + (1 - ab).sqrt() * schedule.noise_scale * eps.double()
    got = add_noise(x0, step, eps, schedule)
    assert got.shape == x0.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


# --- step lists -----------------------------------------------------------------------------------------


def test_default_and_spaced_steps() -> None:
    assert default_steps() == [*range(999, 0, -50), 0]
    assert len(default_steps()) == 21
    assert spaced_steps(1) == [999, 0]
    assert spaced_steps(4, 100) == [99, 74, 50, 25, 0]
    with pytest.raises(ValueError, match=re.escape("num_evaluations must be in [1, 1000), got 0")):
        spaced_steps(0)


def test_step_list_choice() -> None:
    assert step_list(1000) == step_list(1000, 20) == [*range(999, 0, -50), 0]
    assert step_list(1000, 10) == [*range(999, 0, -100), 0]  # 10 divides 1000: every 100th step
    assert step_list(100, 4) == [99, 74, 49, 24, 0]
    assert step_list(1000, 7) == [999, 856, 714, 571, 428, 285, 143, 0]  # round(999 k / 7)
    assert step_list(100, 4, "ddim") == [99, 74, 50, 25, 0]
    assert len(step_list(1000, None, "dpm++2m")) == 11


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([999], "a step list needs at least two steps and must end in 0, got [999]"),
        ([999, 500], "a step list needs at least two steps and must end in 0, got [999, 500]"),
        ([0, 999], "a step list needs at least two steps and must end in 0, got [0, 999]"),
        ([999, 999, 0], "a step list must be strictly descending, got [999, 999, 0]"),
        ([500, 999, 0], "a step list must be strictly descending, got [500, 999, 0]"),
        ([1000, 0], "steps must be below num_steps=1000, got 1000"),
    ],
)
def test_step_validation_messages(steps: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_steps(steps, 1000)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        resolve_steps(steps, 1000)


def test_resolve_steps() -> None:
    assert resolve_steps(None, 1000) == [*range(999, 0, -50), 0]
    assert resolve_steps(None, 1000, "ddim") == spaced_steps(10)
    got = resolve_steps(np.array([999, 400, 0]), 1000)
    assert got == [999, 400, 0] and all(type(s) is int for s in got)


@pytest.mark.parametrize("fused", [False, True])
def test_generate_checks_the_step_list_once(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    calls: list[list[int]] = []
    check = diffusion.check_steps
    monkeypatch.setattr(diffusion, "check_steps", lambda steps, n: calls.append(list(steps)) or check(steps, n))
    model = tiny_diffusion_model(n_bands=2)
    latents = torch.randn(1, 8, 12, generator=torch.Generator().manual_seed(0))
    chunked = RuntimeOptions(fused=fused, chunk_seconds=0.08, overlap_seconds=0.02)  # 6-frame chunks: 3 spans
    model.generate(latents, steps=[999, 500, 0], generator=torch.Generator().manual_seed(1), options=chunked)
    assert calls == [[999, 500, 0]]
    with pytest.raises(ValueError, match="strictly descending"):
        model.generate(latents, steps=[999, 999, 0], options=chunked)


# --- samplers -------------------------------------------------------------------------------------------

SCHEDULES = [PowerSchedule(), PowerSchedule(beta_t1=0.02, beta_exp=2.0, noise_scale=0.5, clip=0.0)]


def test_ddpm_oracle_recovers_signal() -> None:
    schedule = PowerSchedule(clip=0.0)
    x0 = torch.sin(torch.linspace(0, 20, 400)).view(1, 1, -1) * 0.5
    g = torch.Generator().manual_seed(0)
    for steps in (default_steps(), [999, 500, 100, 0], list(range(999, -1, -1))):
        x_T = torch.randn(x0.shape, generator=g)
        out = ddpm_sample(oracle(x0, schedule), x_T, schedule, steps, gaussian(g, x0.shape))
        # the last step leaves the noise of alpha_bar_0 = 1 - beta_0 ~ 1e-5 only
        torch.testing.assert_close(out, x0, atol=1e-2, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("solver", ["ddim", "dpm++2m"])
@pytest.mark.parametrize("n_steps", [1, 3, 10])
def test_deterministic_oracle_recovers_x0(solver: str, n_steps: int, schedule: PowerSchedule) -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 1, 500, generator=gen).clamp(-3, 3)
    x_T = torch.randn(2, 1, 500, generator=gen)
    seen: list[int] = []
    out = ode_sample(
        solver, oracle(x0, schedule), x_T, schedule, spaced_steps(n_steps), on_step=lambda i, x: seen.append(i)
    )
    assert seen == list(range(n_steps))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_same_generator_same_output_and_clipping() -> None:
    schedule = PowerSchedule(clip=0.5)

    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        states: list[torch.Tensor] = []
        x_T = torch.randn(2, 1, 64, generator=g)

        def on_step(i: int, x: torch.Tensor) -> None:
            states.append(x.clone())

        # denoise = -x pushes the iterate outwards, so the clamp is reached
        out = ddpm_sample(lambda x, t: -x, x_T, schedule, default_steps(), gaussian(g, (2, 1, 64)), on_step)
        return out, states

    a, states = run(1)
    b, _ = run(1)
    c, _ = run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(states) == 20 and torch.equal(states[-1], a)
    assert a.abs().max().item() <= 0.5


def test_ddpm_draws_no_noise_after_the_last_iteration() -> None:
    draws = []

    def noise() -> torch.Tensor:
        draws.append(1)
        return torch.zeros(1, 1, 8)

    ddpm_sample(lambda x, t: torch.zeros_like(x), torch.zeros(1, 1, 8), PowerSchedule(), [999, 600, 300, 0], noise)
    assert len(draws) == 2


def test_wrong_denoiser_does_not_recover_x0() -> None:
    x0 = torch.randn(1, 1, 200)
    out = ode_sample("ddim", lambda x, t: torch.zeros_like(x), torch.randn(1, 1, 200), PowerSchedule(), spaced_steps(5))
    assert (out - x0).abs().max() > 0.5


def test_dpmpp_is_second_order() -> None:
    """On a Gaussian-data model (exact eps of N(0, s^2) data), DPM-Solver++(2M) beats DDIM at 5 steps."""
    schedule, s2 = PowerSchedule(clip=0.0), 0.25
    alpha_bars = schedule.alpha_bars()

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        ab = alpha_bars[t]
        return (1 - ab).sqrt() * x / (ab * s2 + 1 - ab)  # E[eps | x_t] for Gaussian data

    x_T = torch.randn(1, 1, 1000, generator=torch.Generator().manual_seed(3))
    exact = ode_sample("ddim", denoise, x_T, schedule, list(range(999, -1, -1)), clip=False)
    errs = {
        solver: (ode_sample(solver, denoise, x_T, schedule, spaced_steps(5), clip=False) - exact).abs().max().item()
        for solver in ("ddim", "dpm++2m")
    }
    assert errs["dpm++2m"] < errs["ddim"], errs


def test_ddpm_bands_equals_ddpm_per_band() -> None:
    schedules = [PowerSchedule(), PowerSchedule(beta_t1=0.01, clip=1.0, noise_scale=0.8, rescale=0.5)]
    steps = [999, 800, 400, 100, 0]
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 2, 1, 64, generator=gen)  # [n_bands, B, C, L]
    draws = torch.randn(2, 3, 2, 1, 64, generator=gen)
    weights = torch.tensor([0.5, -1.5])

    def denoise_band(b: int):  # noqa: ANN202
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
    assert got.abs().max() <= 5.0 and got[:, 1].abs().max() <= 0.5  # band 1: clip 1, then rescale 0.5
    torch.testing.assert_close(got, torch.cat(want, dim=1), atol=0, rtol=0)


def test_unknown_sampler() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sample("euler", lambda x, t: x, lambda: torch.zeros(1, 1, 4), PowerSchedule(), [999, 0])  # type: ignore[arg-type]


# --- rescale --------------------------------------------------------------------------------------------


def test_oracle_inverts_add_noise() -> None:
    """The training pairs (add_noise(x0, t, eps), eps) are what the samplers' oracle predicts, rescale included."""
    schedule = PowerSchedule(rescale=2.0, noise_scale=0.5)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 1, 64, generator=gen), torch.randn(1, 1, 64, generator=gen)
    for t in (0, 300, 999):
        noisy = add_noise(x0, torch.tensor([t]), eps, schedule)
        torch.testing.assert_close(oracle(x0, schedule)(noisy, t), eps, atol=2e-3, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
@pytest.mark.parametrize("rescale", [0.5, 2.0])
def test_every_sampler_undoes_rescale(sampler: str, rescale: float) -> None:
    """A model trained on x0 / rescale decodes to x0, not to x0 / rescale."""
    schedule = PowerSchedule(clip=0.0, rescale=rescale)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 1, 300, generator=gen).clamp(-3, 3)
    states: list[torch.Tensor] = []
    steps = default_steps() if sampler == "ddpm" else spaced_steps(10)
    out = sample(sampler, oracle(x0, schedule), gaussian(gen, x0.shape), schedule, steps, lambda i, x: states.append(x))
    torch.testing.assert_close(out, x0, atol=1e-2 if sampler == "ddpm" else 1e-4, rtol=0)
    assert torch.equal(states[-1], out)


def test_rescale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rescale must be > 0, got 0.0"):
        PowerSchedule(rescale=0.0)
    with pytest.raises(RecipeError, match="schedule: rescale must be > 0"):
        build(PowerSchedule, {"rescale": -1.0}, "schedule")


# --- the Gaussian draws ---------------------------------------------------------------------------------

SHAPE = (2, 1, 16)


def explicit_draws(n_bands: int, n_draws: int, generator: torch.Generator | None) -> torch.Tensor:
    """The documented order, written out: band 0's draws 0..K-1, then band 1's, ... `[n_bands, K, *SHAPE]`."""
    return torch.stack(
        [torch.stack([torch.randn(SHAPE, generator=generator) for _ in range(n_draws)]) for _ in range(n_bands)]
    )


def test_all_draws_order_from_a_generator() -> None:
    like = torch.zeros(SHAPE, dtype=torch.float64)
    got = all_draws(SHAPE, 3, 2, torch.Generator().manual_seed(7), None, like)
    want = explicit_draws(2, 3, torch.Generator().manual_seed(7))
    assert got.dtype == torch.float64 and got.shape == (2, 3, *SHAPE)
    assert torch.equal(got, want.double())


def test_all_draws_order_from_the_global_generator() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        got = all_draws(SHAPE, 2, 3, None, None, torch.zeros(SHAPE))
        torch.manual_seed(5)
        want = explicit_draws(3, 2, None)
    assert torch.equal(got, want)


def test_band_draws_from_stored_noise() -> None:
    noise = torch.randn(2, 4, *SHAPE)
    draw = band_draws(SHAPE, 3, 1, 2, None, noise, torch.zeros(SHAPE, dtype=torch.float64))
    for k in range(3):
        assert torch.equal(draw(), noise[1, k].double())
    with pytest.raises(ValueError, match=re.escape("noise must be [2, 3, 2, 1, 16], got [2, 4, 2, 1, 15]")):
        band_draws(SHAPE, 3, 0, 2, None, noise[..., :15], torch.zeros(SHAPE))
    with pytest.raises(ValueError, match="noise holds 4 draws per band, 5 are needed"):
        band_draws(SHAPE, 5, 0, 2, None, noise, torch.zeros(SHAPE))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_generate_draws_in_the_documented_order(fused: bool, sampler: str) -> None:
    """`generate(generator=g)` equals `generate(noise=...)` fed explicit draws of g in the documented order."""
    model = tiny_diffusion_model(n_bands=2)
    latents = torch.randn(1, 8, 4, generator=torch.Generator().manual_seed(0))
    steps, options = [999, 600, 200, 0], RuntimeOptions(fused=fused)
    n_draws = len(steps) - 1 if sampler == "ddpm" else 1
    g = torch.Generator().manual_seed(3)
    noise = torch.stack(
        [torch.stack([torch.randn(1, 1, 4 * 320, generator=g) for _ in range(n_draws)]) for _ in range(2)]
    )
    kw = dict(steps=steps, sampler=sampler, options=options)
    seeded = model.generate(latents, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(seeded, model.generate(latents, noise=noise, **kw))
    assert not torch.equal(seeded, model.generate(latents, noise=noise.flip(0), **kw))


def per_clip_draws(n_bands: int, n_draws: int, seeds: list[int], rows: int = 1) -> torch.Tensor:
    """The per-clip order, written out: clip i's generator draws its `[rows, 1, 16]` for band 0's draws
    0..K-1, then band 1's, ...; the clips are stacked on the batch axis. `[n_bands, K, rows * len(seeds), 1, 16]`."""
    per_clip = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        bands = [torch.stack([torch.randn(rows, 1, 16, generator=g) for _ in range(n_draws)]) for _ in range(n_bands)]
        per_clip.append(torch.stack(bands))
    return torch.cat(per_clip, dim=2)


def test_all_draws_per_clip_generators() -> None:
    """One generator per clip: each draws its clip's slices in the documented order, whatever the batch."""
    got = all_draws(SHAPE, 3, 2, [torch.Generator().manual_seed(s) for s in (7, 8)], None, torch.zeros(SHAPE))
    assert torch.equal(got, per_clip_draws(2, 3, [7, 8]))
    alone = all_draws((1, 1, 16), 3, 2, [torch.Generator().manual_seed(8)], None, torch.zeros(1, 1, 16))
    assert torch.equal(alone[:, :, 0], got[:, :, 1])  # clip 1's draws are those it gets when drawn alone
    # the single-generator order is unchanged, and differs from the per-clip one
    assert not torch.equal(all_draws(SHAPE, 3, 2, torch.Generator().manual_seed(7), None, torch.zeros(SHAPE)), got)


def test_band_draws_per_clip_generators_draw_band_by_band() -> None:
    """`generate`'s band-by-band path takes band 1's draws only after band 0's: the same per-clip streams."""
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    draws = []
    for b in range(2):
        draw = band_draws(SHAPE, 2, b, 2, gens, None, torch.zeros(SHAPE))
        draws.append(torch.stack([draw() for _ in range(2)]))
    assert torch.equal(torch.stack(draws), per_clip_draws(2, 2, [1, 2]))


def test_randn_groups_and_errors() -> None:
    """n generators split the batch into n equal consecutive groups (e.g. a file's channels)."""
    got = randn((4, 1, 16), [torch.Generator().manual_seed(s) for s in (3, 4)], "cpu")
    assert torch.equal(got, per_clip_draws(1, 1, [3, 4], rows=2)[0, 0])
    with pytest.raises(ValueError, match="3 generators cannot split a batch of 4"):
        randn((4, 1, 16), [torch.Generator() for _ in range(3)], "cpu")


@pytest.mark.parametrize("fused", [False, True])
def test_generate_with_per_clip_generators(fused: bool) -> None:
    """`generate` with one generator per clip equals `generate(noise=...)` fed the per-clip draws, and each
    clip's output is bit-identical to the clip decoded alone."""
    model = tiny_diffusion_model(n_bands=2)
    latents = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=[999, 600, 200, 0], options=RuntimeOptions(fused=fused))
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = model.generate(latents, generator=gens(3, 4), **kw)
    noise = torch.cat(
        [torch.stack([torch.stack([torch.randn(1, 1, 4 * 320, generator=g) for _ in range(3)]) for _ in range(2)])
         for g in gens(3, 4)], dim=2,
    )
    torch.testing.assert_close(both, model.generate(latents, noise=noise, **kw), rtol=0, atol=1e-5)
    for i, seed in enumerate((3, 4)):
        assert torch.equal(model.generate(latents[i : i + 1], generator=gens(seed), **kw)[0], both[i])
    swapped = model.generate(latents.flip(0), generator=gens(4, 3), **kw)
    assert torch.equal(swapped, both.flip(0))
