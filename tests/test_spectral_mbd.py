"""mbd.spectral_mbd: the spectral model's files, sampling, vocode/regenerate, loading by name and the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mbd
from mbd import checkpoint
from mbd.api import load_model
from mbd.frame_net import FrameNetConfig
from mbd.mel import MelError
from mbd.spectral_mbd import SpectralMBD, SpectralMBDConfig


def tiny(seed: int = 0, **changes: object) -> SpectralMBD:
    torch.manual_seed(seed)
    config = dataclasses.replace(SpectralMBDConfig(net=FrameNetConfig(dim=8, blocks=1)), **changes)
    model = SpectralMBD(config).eval()
    model.bands.sigma.copy_(torch.tensor([0.5, 0.8, 1.0, 1.2]))
    return model


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spectral") / "tiny.safetensors"
    tiny().save(path)
    return path


def mel_of(seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    wav = torch.randn(1, 1, int(seconds * 24000), generator=torch.Generator().manual_seed(seed)) * 0.1
    return tiny().features.frame_aligned(wav)  # [1, 100, T]


def test_file_round_trip_is_exact_and_fp16_files_load_as_float32(tmp_path: Path, tiny_path: Path) -> None:
    model, mel = tiny(), mel_of()
    loaded = SpectralMBD.from_pretrained(tiny_path)
    assert loaded.config == model.config
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    torch.testing.assert_close(loaded.vocode(mel, generator=g()), model.vocode(mel, generator=g()), rtol=0, atol=0)
    model.save(tmp_path / "half.safetensors", half=True)
    half = SpectralMBD.from_pretrained(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert half.bands.sigma.tolist() == model.bands.sigma.tolist()  # statistics stay float32


def test_mismatched_files_and_configs_are_refused(tmp_path: Path, tiny_path: Path) -> None:
    config, tensors = checkpoint.load(tiny_path)
    tensors.pop("net.head.bias")
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        SpectralMBD.from_state(config, tensors)
    config["net"]["dim"] = 16
    with pytest.raises(checkpoint.CheckpointError, match="shapes"):
        SpectralMBD.from_state(config, checkpoint.load(tiny_path)[1])
    with pytest.raises(ValueError, match="mel"):
        SpectralMBDConfig(spectral=dataclasses.replace(SpectralMBDConfig().spectral, hop_length=128))
    with pytest.raises(ValueError, match="schedule"):
        SpectralMBDConfig(schedules=())


@pytest.mark.parametrize("objective,solver", [("flow", "euler"), ("flow", "heun"), ("ddpm", "euler")])
def test_vocode_shapes_seeding_and_kinds(objective: str, solver: str) -> None:
    model, mel = tiny(objective=objective, solver=solver), mel_of()
    frames = mel.shape[-1]
    one = model.vocode(mel[0], generator=torch.Generator().manual_seed(1), steps=3)
    assert one.shape == (1, frames * 256) and torch.isfinite(one).all()
    again = model.vocode(mel[0], generator=torch.Generator().manual_seed(1), steps=3)
    other = model.vocode(mel[0], generator=torch.Generator().manual_seed(2), steps=3)
    assert torch.equal(one, again) and not torch.equal(one, other)
    batch = model.vocode(torch.cat([mel, mel]), generator=torch.Generator().manual_seed(1), steps=3)
    assert batch.shape == (2, 1, frames * 256)
    with pytest.raises(MelError, match="transposed"):
        model.vocode(mel[0].T)


def test_mel_eq_and_polish_move_the_output_towards_the_mel() -> None:
    model, mel = tiny(), mel_of(1.0)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    distance = {}
    settings = {"raw": dict(mel_eq=0.0), "eq": dict(mel_eq=1.0), "gl": dict(mel_eq=1.0, griffin_lim=4)}
    for name, kwargs in settings.items():
        wav = model.vocode(mel, generator=g(), **kwargs)
        distance[name] = (model.features.frame_aligned(wav) - mel).abs().mean().item()
    assert distance["eq"] < 0.5 * distance["raw"]
    assert distance["gl"] < 1.5 * distance["eq"]  # the projection keeps the re-EQ'd magnitudes (up to consistency)


def test_regenerate_resamples_and_keeps_length() -> None:
    model = tiny()
    wav = torch.randn(1, 2, 16001) * 0.1  # 16001 * 1.5 samples at 24 kHz is not whole
    out = model.regenerate(wav, 16000, generator=torch.Generator().manual_seed(0), steps=2)
    assert out.shape == (1, 2, 16001) and torch.isfinite(out).all()


def test_api_loads_spectral_files_and_keeps_the_input_kind(tiny_path: Path) -> None:
    model = load_model(str(tiny_path), "cpu")
    assert isinstance(model, SpectralMBD)
    mel = mel_of()[0].numpy()
    audio, sr = mbd.vocode(mel, tiny_path, seed=3, device="cpu")
    assert isinstance(audio, np.ndarray) and audio.shape == (1, mel.shape[-1] * 256) and sr == 24000
    again, _ = mbd.vocode(mel, tiny_path, seed=3, device="cpu")
    np.testing.assert_array_equal(audio, again)
    with pytest.raises(ValueError, match="mel spectrograms"):
        mbd.decode(np.zeros((4, 10), dtype=np.int64), tiny_path, device="cpu")


def test_cli_vocode_with_a_spectral_model(tmp_path: Path, tiny_path: Path, monkeypatch) -> None:
    from mbd.cli import main

    monkeypatch.setenv("MBD_OFFLINE", "1")
    mel = mel_of()[0].numpy()
    np.save(tmp_path / "a.npy", mel)
    out = tmp_path / "a.wav"
    assert main(["vocode", str(tmp_path / "a.npy"), "-o", str(out), "--model", str(tiny_path)]) == 0
    audio, sr = sf.read(out)
    assert sr == 24000 and len(audio) == mel.shape[-1] * 256 and np.isfinite(audio).all()


def test_cli_info_and_convert_know_spectral_files(tmp_path: Path, tiny_path: Path, capsys) -> None:
    from mbd.cli import main

    assert main(["info", str(tiny_path)]) == 0
    out = capsys.readouterr().out
    assert "spectral MBD checkpoint, 4 STFT bands of 128 bins" in out and "width 8" in out
    assert main(["convert", str(tiny_path), str(tmp_path / "copy.safetensors")]) == 0
    a, b = SpectralMBD.from_pretrained(tiny_path), SpectralMBD.from_pretrained(tmp_path / "copy.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_default_path_comes_from_the_model_file(tmp_path: Path) -> None:
    """A file's config sets vocode's default projection; model_magnitude 0 keeps the mel's least-squares
    magnitudes, so even an untrained network's output then follows the mel closely."""
    model = tiny(griffin_lim=8, model_magnitude=0.0)
    model.save(tmp_path / "m.safetensors")
    loaded = SpectralMBD.from_pretrained(tmp_path / "m.safetensors")
    mel = mel_of(1.0)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    default = loaded.vocode(mel, generator=g())
    torch.testing.assert_close(default, loaded.vocode(mel, generator=g(), griffin_lim=8, model_magnitude=0.0))
    assert not torch.equal(default, loaded.vocode(mel, generator=g(), griffin_lim=0))
    distance = (loaded.features.frame_aligned(default) - mel).abs().mean().item()
    raw = (loaded.features.frame_aligned(loaded.vocode(mel, generator=g(), mel_eq=0.0, griffin_lim=0)) - mel)
    assert distance < 0.25 * raw.abs().mean().item()
    with pytest.raises(ValueError, match="model_magnitude"):
        tiny(model_magnitude=2.0)


def test_rescale_is_refused_for_spectral_models() -> None:
    """The spectral trainer draws x_t without `rescale`/`noise_scale`, so a model may not declare them."""
    from mbd.diffusion import PowerSchedule
    from mbd.spectral_mbd import SpectralMBDConfig

    with pytest.raises(ValueError, match="rescale and diffusion.noise_scale must be 1"):
        SpectralMBDConfig(diffusion=PowerSchedule(rescale=2.0))


@pytest.mark.parametrize("objective,solver", [("flow", "euler"), ("flow", "heun"), ("ddpm", "euler")])
def test_vocode_with_clip_generators_is_batch_invariant(objective: str, solver: str) -> None:
    """One generator per clip: each clip's noise and network calls are its own, so its output is bit-identical
    whatever it is batched with."""
    from mbd.noise import clip_generators

    model = tiny(objective=objective, solver=solver)
    mels = torch.cat([mel_of(0.3, seed) for seed in range(3)])  # [3, 100, T]

    def run(m: torch.Tensor, seed: int = 0) -> torch.Tensor:
        return model.vocode(m, generator=clip_generators(seed, m, "cpu"), steps=3)

    batch = run(mels)
    for i in range(3):
        assert torch.equal(run(mels[i : i + 1])[0], batch[i])
    assert torch.equal(run(mels[[2, 0]]), batch[[2, 0]])
    assert not torch.equal(run(mels, seed=1), batch)


def test_api_and_cli_spectral_outputs_do_not_depend_on_the_batch(tmp_path: Path, tiny_path: Path, monkeypatch) -> None:
    """`mbd.vocode`, `mbd vocode --batch-size` and `mbd regenerate` with companions, same seed: the same clip."""
    from mbd import cli

    a, b = mel_of(0.3, 0), mel_of(0.3, 1)
    alone, _ = mbd.vocode(a[0], tiny_path, seed=3, device="cpu")
    assert torch.equal(mbd.vocode(torch.cat([b, a]), tiny_path, seed=3, device="cpu")[0][1], alone)
    assert not torch.equal(mbd.vocode(a[0], tiny_path, seed=4, device="cpu")[0], alone)
    written: dict[str, torch.Tensor] = {}
    real = cli.write_audio
    def record(path, wav, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        written[Path(path).name] = wav
        return real(path, wav, *args, **kwargs)

    monkeypatch.setattr(cli, "write_audio", record)
    np.save(tmp_path / "a.npy", a[0].numpy())
    np.save(tmp_path / "b.npy", b[0].numpy())
    model = ["--model", str(tiny_path), "--seed", "3", "--device", "cpu"]
    for batch, names in ((1, ["a"]), (2, ["b", "a"])):
        assert cli.main(["vocode", *(str(tmp_path / f"{n}.npy") for n in names), "-o", str(tmp_path / f"v{batch}"),
                         "--batch-size", str(batch), *model]) == 0
        assert torch.equal(written["a.wav"], alone)
    wavs = {}
    for name, seed in (("x", 0), ("y", 1)):
        noise = torch.randn(4800, generator=torch.Generator().manual_seed(seed)) * 0.1
        sf.write(tmp_path / f"{name}.wav", noise.numpy(), 24000)
    for run, names in enumerate((["y"], ["x", "y"])):
        assert cli.main(["regenerate", *(str(tmp_path / f"{n}.wav") for n in names), "-o", str(tmp_path / f"r{run}"),
                         *model]) == 0
        wavs[run] = written["y.wav"]
    assert torch.equal(wavs[0], wavs[1])


def test_vocode_refuses_out_of_range_mels_and_regenerate_short_audio(tiny_path: Path) -> None:
    """`mbd.vocode` of values like 1e300 is a MelError, not NaN audio; regenerate of 512 samples (2 frames,
    too few for the 1024-point STFT's reflect padding) is one clear error, 513 samples work."""
    from mbd.errors import AudioError

    with pytest.raises(MelError, match="far outside the natural-log mel range"):
        mbd.vocode(np.full((100, 10), 1e300), tiny_path, steps=2, seed=0, device="cpu")
    model = tiny()
    with pytest.raises(AudioError, match="audio too short: 512 samples at 24000 Hz, need at least 513"):
        model.regenerate(torch.randn(1, 1, 512) * 0.1, 24000, steps=2)
    assert model.regenerate(torch.randn(1, 1, 513) * 0.1, 24000, steps=2).shape == (1, 1, 513)
    out = model.regenerate(torch.randn(1, 1, 7000) * 0.1, 44101, steps=2)  # an odd rate, through soxr
    assert out.shape == (1, 1, 7000) and torch.isfinite(out).all()
