"""MultiBandDiffusion as an nn.Module: device and dtype moves, save/load, seeding, input checks."""

from __future__ import annotations

import dataclasses
import math

import julius
import pytest
import torch

from mbd import MultiBandDiffusion, checkpoint
from mbd.codec import EncodecCodec
from mbd.config import MBDConfig
from tests.conftest import TINY_UNET, ToyCodec, tiny

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


def test_from_pretrained_loads_a_local_codec_weights_file(tmp_path, encodec_weights) -> None:
    import dataclasses

    path = tmp_path / "tiny.safetensors"
    tiny(unet=dataclasses.replace(TINY_UNET, codec_dim=128)).save(path)  # EnCodec 24 kHz latents are 128-d
    model = MultiBandDiffusion.from_pretrained(path, codec_weights=encodec_weights)
    assert (model.codec.sample_rate, model.codec.hop_length, model.codec.n_q) == (24000, 320, 4)
    assert model.hop_length == 320  # the hop comes from the attached codec
    codes = torch.randint(0, 1024, (1, 4, 3), generator=torch.Generator().manual_seed(0))
    out = model.tokens_to_wav(codes, steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 3 * 320) and torch.isfinite(out).all()
    assert MultiBandDiffusion.from_pretrained(path, load_codec=False).codec is None


def test_per_clip_eq_makes_each_clip_independent_of_the_batch() -> None:
    """per_clip_eq: clip 0's output does not change when clip 1 does, and equals clip 0 decoded alone (a batch
    of one, where both re-EQ modes agree). The default joint re-EQ (AudioCraft's) shares its gains across the
    batch, so there clip 0 changes with clip 1."""
    model = tiny()
    g = torch.Generator().manual_seed(3)
    lat = torch.randn(2, 8, 6, generator=g)
    ref = torch.randn(2, 1, 6 * 320, generator=g)
    other_lat, other_ref = lat.clone(), ref.clone()
    other_lat[1] = 3 * torch.randn(8, 6, generator=g)
    other_ref[1] = 20 * torch.cumsum(torch.randn(6 * 320, generator=g), 0)[None] / (6 * 320) ** 0.5  # loud, dark
    noise = torch.randn(2, len(STEPS) - 1, 2, 1, 6 * 320, generator=g)  # [n_bands, K, B, C, L]

    def decode(tokens: torch.Tensor, reference: torch.Tensor, per_clip: bool, noise: torch.Tensor) -> torch.Tensor:
        model.codec = ToyCodec(reference, 320)
        return model.tokens_to_wav(tokens, n_bands=8, steps=STEPS, noise=noise, per_clip_eq=per_clip)

    per_clip, per_clip_other = decode(lat, ref, True, noise), decode(other_lat, other_ref, True, noise)
    alone = decode(lat[:1], ref[:1], False, noise[:, :, :1])
    torch.testing.assert_close(per_clip[0], per_clip_other[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_clip[:1], alone, atol=1e-5, rtol=1e-5)
    assert (per_clip[1] - per_clip_other[1]).abs().max() > 0.1
    joint, joint_other = decode(lat, ref, False, noise), decode(other_lat, other_ref, False, noise)
    assert (joint[0] - joint_other[0]).abs().max() > 0.05 * joint[0].abs().max()
    assert (joint[0] - alone[0]).abs().max() > 0.05 * alone.abs().max()


@pytest.mark.parametrize("length", [4000, 4001])
def test_regenerate_resamples_to_the_model_rate_and_back(
    encodec_codec: EncodecCodec, length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 kHz audio into a 24 kHz token model: the codec sees it at 24 kHz, the output comes back at 16 kHz
    with the input's length (also when the 24 kHz length is not whole), and equals the decode at 24 kHz
    resampled with julius."""
    model = tiny(unet=dataclasses.replace(TINY_UNET, codec_dim=128))
    model.codec = encodec_codec  # the session's EncodecCodec(encodec_weights, 4)
    seen: list[tuple[int, ...]] = []
    encode = model.codec.encode
    monkeypatch.setattr(model.codec, "encode", lambda wav: (seen.append(tuple(wav.shape)), encode(wav))[1])
    t = torch.arange(length) / 16000
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t))[None, None]
    out = model.regenerate(wav, 16000, steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, length) and torch.isfinite(out).all()
    at_24k = math.ceil(length * 1.5)
    assert seen == [(1, 1, at_24k)]
    wav_24k = julius.resample_frac(wav, 16000, 24000, full=True)
    decoded = model.generate(
        model.codec.latents(encode(wav_24k)), length=at_24k, steps=STEPS, generator=torch.Generator().manual_seed(0)
    )
    want = julius.resample_frac(decoded, 24000, 16000)[..., :length]
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
