"""MultiBandDiffusion as an nn.Module: device and dtype moves, save/load, seeding, input checks."""

from __future__ import annotations

import pytest
import torch

from mbd import MultiBandDiffusion, checkpoint
from mbd.config import MBDConfig
from tests.conftest import tiny

STEPS = [999, 600, 200, 0]


def _generate(model: MultiBandDiffusion, seed: int = 5) -> torch.Tensor:
    latents = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(9)).to(next(model.parameters()))
    return model.generate(latents, length=6 * 320, steps=STEPS, generator=torch.Generator().manual_seed(seed))


def test_seeded_generate_is_reproducible() -> None:
    model = tiny()
    a, b, c = _generate(model), _generate(model), _generate(model, seed=6)
    assert a.shape == (2, 1, 6 * 320)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_float64_move_computes_the_same_function() -> None:
    model = tiny()
    ref = _generate(model)
    double = tiny().double()
    assert all(p.dtype == torch.float64 for p in double.parameters())
    assert double.bands[1].processor.sum_x.dtype == torch.float64
    out = _generate(double)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-3, rtol=1e-3)


def test_save_and_load_give_identical_output(tmp_path) -> None:
    model = tiny()
    path = tmp_path / "tiny.safetensors"
    model.save(path)
    loaded = MultiBandDiffusion.from_pretrained(path, load_codec=False)
    assert loaded.config == model.config
    assert torch.equal(_generate(loaded), _generate(model))
    assert set(checkpoint.load(path)[1]) == set(model.band_state())


def test_generate_input_checks() -> None:
    model = tiny()
    with pytest.raises(ValueError, match=r"\[B, D, T\]"):
        model.generate(torch.randn(8, 6), length=6 * 320)
    with pytest.raises(ValueError, match="descending"):
        model.generate(torch.randn(1, 8, 6), length=6 * 320, steps=[500, 999, 0])
    with pytest.raises(ValueError, match="noise must be"):
        model.generate(torch.randn(1, 8, 6), length=6 * 320, steps=STEPS, noise=torch.randn(2, 3, 1, 1, 100))
    with pytest.raises(RuntimeError, match="without a codec"):
        model.tokens_to_wav(torch.zeros(1, 4, 6, dtype=torch.long))


def test_step_lists() -> None:
    model = tiny()
    assert model.step_list() == [999, *range(949, 0, -50), 0]
    assert model.step_list(20) == model.step_list()
    assert model.step_list(10) == [999, *range(899, 0, -100), 0]
    assert len(model.step_list(7)) == 8 and model.step_list(7)[-1] == 0
    assert len(model.step_list(None, "ddim")) == 11


def test_flow_bands_integrate_their_velocity_with_euler_steps() -> None:
    """A band with objective "flow" is sampled by Euler steps on a uniform flow-time grid, its U-Net called
    with step k = round((1 - t)(N - 1)). With the exact velocity of data concentrated at c, (c - x) / (1 - t),
    the band lands on c (in diffusion space; the processor then unprojects it), whatever the step count."""
    import dataclasses

    model = tiny()
    model.config = dataclasses.replace(
        model.config, bands=tuple(dataclasses.replace(b, objective="flow") for b in model.config.bands)
    )
    for band in model.bands:
        band.config = dataclasses.replace(band.config, objective="flow")
    c = 0.25
    calls = []

    def oracle(x: torch.Tensor, step: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        calls.append(step.tolist())
        t = 1 - step.float() / 999
        return (c - x) / (1 - t).clamp(min=1e-6).view(-1, 1, 1)

    for band in model.bands:
        band.unet.forward = oracle
    latents = torch.randn(2, 8, 6)
    out = model.generate(latents, length=6 * 320, steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert calls[:3] == [[999, 999], [666, 666], [333, 333]]  # 3 Euler steps: t = 0, 1/3, 2/3
    want = torch.full((2, 1, 6 * 320), c) + model.bands[1].unproject(torch.full((2, 1, 6 * 320), c))
    torch.testing.assert_close(out, want)
    stored = MBDConfig.from_dict(model.config.to_dict())
    assert [b.objective for b in stored.bands] == ["flow", "flow"]
    assert "objective" not in tiny().config.to_dict()["bands"][0]  # ddpm files keep AudioCraft's layout
