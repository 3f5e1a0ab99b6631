"""The fused band network computes the same function as the band-by-band path."""

from __future__ import annotations

import pytest
import torch

import mbd.fused
import mbd.pipeline
from mbd.diffusion import PowerSchedule
from mbd.fused import fuse, stack_bands, unstack_bands
from mbd.gemm_conv import use_gemm
from mbd.options import RuntimeOptions
from mbd.unet import DiffusionUNet, UNetConfig
from tests.conftest import HOP, TINY_MBD_UNET, latents, tiny_mbd

FUSED = RuntimeOptions(fused=True)


@pytest.fixture(autouse=True)
def fuse_any_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tiny models are below the width from which fusing pays on CPU: fuse them anyway."""
    monkeypatch.setattr(mbd.fused, "CPU_MIN_WIDTH", 0)


@pytest.mark.parametrize("gemm", ["none", "packed", "mm", "shifted", "winograd4"])
def test_forward_matches_per_band(gemm: str) -> None:
    model = tiny_mbd()
    unets = [band.unet for band in model.bands]
    fused = fuse(unets).eval()
    if gemm != "none":  # every convolution as GEMMs, with oneDNN-packed or plain weights, Winograd or not
        tile = {"shifted": None, "winograd4": 4}.get(gemm, 2)
        assert use_gemm(fused, min_weights=0, pack=gemm != "mm", tile=tile) > 0
    x = torch.randn(3, 2, 1, 333)  # [n_bands, B, C, L], L not a multiple of the stride
    c, steps = latents(), torch.tensor([3, 999])  # one step per batch item
    with torch.no_grad():
        want = torch.stack([u(x[b], steps, c) for b, u in enumerate(unets)])
        got = fused.denoise(stack_bands(x), fused.step_embeddings(steps), fused.condition_embedding(c, 333))
        assert torch.equal(got, fused(stack_bands(x), steps, c))
    assert want.abs().max() > 0.1
    torch.testing.assert_close(unstack_bands(got, 3), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
def test_generate_matches_per_band(sampler: str) -> None:
    # Different schedules per band: the fused sampler applies each band's own coefficients and clip.
    schedules = [PowerSchedule(), PowerSchedule(beta_t1=0.02, clip=3.0), PowerSchedule(beta_exp=5.0, noise_scale=0.9)]
    model = tiny_mbd(schedules)
    steps = [999, 700, 300, 100, 0]
    runs = {
        fused: model.generate(
            latents(),
            length=10 * HOP,
            steps=steps,
            sampler=sampler,
            options=RuntimeOptions(fused=fused),
            generator=torch.Generator().manual_seed(7),
        )
        for fused in (False, True)
    }
    assert runs[False].abs().max() > 0.1
    torch.testing.assert_close(runs[True], runs[False], atol=1e-5, rtol=0)


def test_generate_with_stored_noise_and_callbacks() -> None:
    model = tiny_mbd()
    steps = [999, 500, 0]
    noise = torch.randn(3, 2, 2, 1, 8 * HOP)
    states: dict[bool, dict[tuple[int, int], torch.Tensor]] = {False: {}, True: {}}
    outs = {
        f: model.generate(
            latents(8),
            length=8 * HOP,
            steps=steps,
            noise=noise,
            options=RuntimeOptions(fused=f),
            on_step=lambda b, i, x, f=f: states[f].__setitem__((b, i), x.clone()),
        )
        for f in (False, True)
    }
    torch.testing.assert_close(outs[True], outs[False], atol=1e-5, rtol=0)
    assert states[True].keys() == states[False].keys() == {(b, i) for b in range(3) for i in range(2)}
    for key, x in states[False].items():
        torch.testing.assert_close(states[True][key], x, atol=1e-5, rtol=0)


def test_bfloat16_close_in_relative_l2() -> None:
    model = tiny_mbd()
    kwargs = dict(length=10 * HOP, steps=[999, 500, 200, 0], noise=torch.randn(3, 3, 2, 1, 10 * HOP))
    ref = model.generate(latents(), **kwargs)
    for fused in (False, True):
        out = model.generate(latents(), options=RuntimeOptions(dtype="bfloat16", fused=fused), **kwargs)
        assert out.dtype == torch.float32
        rel = ((out - ref).norm() / ref.norm()).item()
        assert 0 < rel < 5e-2, rel  # bf16 has an 8-bit mantissa: ~1e-2 relative error


def test_fused_falls_back_when_configs_differ() -> None:
    other = UNetConfig(hidden=4, depth=3, res_blocks=1, norm_groups=2, kernel=4, stride=2, growth=2.0, codec_dim=16)
    model = tiny_mbd(unets=[TINY_MBD_UNET, other, TINY_MBD_UNET])
    with pytest.raises(ValueError):
        fuse([band.unet for band in model.bands])
    kwargs = dict(length=8 * HOP, steps=[999, 0], generator=None, noise=torch.randn(3, 1, 2, 1, 8 * HOP))
    fused = model.generate(latents(8), options=FUSED, **kwargs)
    torch.testing.assert_close(fused, model.generate(latents(8), **kwargs))


def test_fused_cache_follows_weight_updates() -> None:
    model = tiny_mbd()
    kwargs = dict(length=8 * HOP, steps=[999, 0], noise=torch.randn(3, 1, 2, 1, 8 * HOP), options=FUSED)
    before = model.generate(latents(8), **kwargs)
    with torch.no_grad():
        model.bands[0].unet.decoders[-1].convtr.weight.mul_(2.0)
    after = model.generate(latents(8), **kwargs)
    assert not torch.allclose(before, after)
    per_band = model.generate(latents(8), **{**kwargs, "options": RuntimeOptions()})
    torch.testing.assert_close(after, per_band, atol=1e-5, rtol=0)


@pytest.mark.slow  # torch.compile (inductor, C++ codegen) takes ~30 s on 2 CPU cores
def test_compiled_fused_matches_fused() -> None:
    model = tiny_mbd()
    noise = torch.randn(3, 2, 2, 1, 8 * HOP, generator=torch.Generator().manual_seed(3))
    kwargs = dict(length=8 * HOP, steps=[999, 500, 0], noise=noise)
    want = model.generate(latents(8), options=FUSED, **kwargs)
    got = model.generate(latents(8), options=RuntimeOptions(fused=True, compile=True), **kwargs)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_compile_requires_fused() -> None:
    with pytest.raises(ValueError, match="fused"):
        RuntimeOptions(compile=True)


def test_unet_single_forward_shapes_guard() -> None:
    unets = [DiffusionUNet(TINY_MBD_UNET) for _ in range(2)]
    fused = fuse(unets)
    with pytest.raises(ValueError, match="bottleneck"):
        fused.condition_embedding(torch.randn(1, 16, 100), 64)
    with pytest.raises(ValueError, match=r"x must be \[B, 2, L\]"):
        fused(torch.randn(1, 1, 64), 3, torch.randn(1, 16, 4))


def test_fused_pays_only_from_the_cpu_min_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the package's own CPU_MIN_WIDTH, not this module's fuse-anything setting
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert mbd.fused.fused_pays(UNetConfig(hidden=32), cpu)  # bottleneck 32 * 4^3 = 2048: measured 2.3x
    assert not mbd.fused.fused_pays(UNetConfig(hidden=16), cpu)  # 1024: measured 0.74x
    assert mbd.fused.fused_pays(UNetConfig(hidden=8), cuda)
    model = tiny_mbd()
    calls = []
    monkeypatch.setattr(mbd.pipeline, "sample_fused", lambda *args: calls.append(args))
    kwargs = dict(length=8 * HOP, steps=[999, 0], noise=torch.randn(3, 1, 2, 1, 8 * HOP))
    declined = model.generate(latents(8), options=FUSED, **kwargs)  # tiny: the per-band path, exactly
    assert not calls
    torch.testing.assert_close(declined, model.generate(latents(8), **kwargs), rtol=0, atol=0)
