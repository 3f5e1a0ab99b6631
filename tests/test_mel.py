"""mbd.mel and mel-conditioned models: the feature definition, input checks, configs, vocode/regenerate, CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

import mbd
from mbd import MultiBandDiffusion, checkpoint, hub
from mbd.cli import main
from mbd.config import BandConfig, CodecConfig, MBDConfig
from mbd.diffusion import PowerSchedule
from mbd.mel import MelConfig, MelError, MelSpectrogram
from mbd.spectral_mbd import SpectralMBD
from mbd.unet import UNetConfig
from tests.conftest import MEL_UNET, tiny, tiny_mel_model

SR = 24000
UNET = MEL_UNET


@pytest.fixture(scope="module")
def mel_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mel") / "tiny_mel.safetensors"
    tiny_mel_model().save(path)
    return path


@pytest.fixture(scope="module")
def mel24k() -> SpectralMBD:
    """The bundled mel24k, loaded once for the tests that only run it."""
    return SpectralMBD.from_pretrained("mel24k")


def _speechlike(seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return (0.3 * torch.sin(2 * torch.pi * 220 * t) * (1 + torch.sin(2 * torch.pi * 3 * t)))[None, None]


# --- the feature definition ------------------------------------------------------------------------------


def test_features_follow_the_vocos_convention() -> None:
    wav = _speechlike()
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=1024, hop_length=256, n_mels=100, center=True, power=1
    )(wav[:, 0])
    ours = MelSpectrogram(MelConfig())(wav)
    assert ours.shape == (1, 100, wav.shape[-1] // 256 + 1)
    torch.testing.assert_close(ours, torch.log(reference.clamp(min=1e-5)))
    # librosa with the same definition (HTK scale, no norm, magnitude) agrees
    import librosa

    lib = librosa.feature.melspectrogram(
        y=wav[0, 0].numpy(), sr=SR, n_fft=1024, hop_length=256, n_mels=100, power=1, htk=True, norm=None,
        center=True, pad_mode="reflect",
    )
    loud = lib > 1e-2  # float32 rounding dominates in the near-silent bins
    np.testing.assert_allclose(ours[0].numpy()[loud], np.log(lib[loud]), atol=2e-3)


def test_one_frame_per_bottleneck_frame() -> None:
    """The mel of L samples has as many frames as the mel model's U-Net bottleneck for L samples."""
    assert MelConfig().frames(256 * 60) == 60 and MelConfig().frames(256 * 60 + 1) == 61
    model = tiny_mel_model()
    unet = model.bands[0].unet
    bottleneck: list[int] = []
    unet.encoders[-1].register_forward_hook(lambda module, inputs, out: bottleneck.append(out.shape[-1]))
    wav = _speechlike(256 * 60 / SR)
    assert model.features(wav).shape[-1] == 61  # the centred STFT has one frame more
    mel = model.features.frame_aligned(wav)
    with torch.no_grad():
        unet(torch.zeros(1, 1, 256 * 60), 500, model.features.condition(mel))
    assert bottleneck == [mel.shape[-1]] == [60]


# --- input checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mel, message",
    [
        (torch.zeros(80, 50) - 3, "has 80 mel bins, this model expects 100"),
        (torch.zeros(50, 100) - 3, r"looks transposed \(\[T, n_mels\]\).*pass mel.T"),
        (torch.zeros(2, 50, 100) - 3, "looks transposed"),
        (torch.full((100, 50), float("nan")), "5000 NaN or infinite values"),
        (torch.tensor([[float("inf")] * 5] * 100), "NaN or infinite"),
        (torch.zeros(100), r"expected \[n_mels, T\] or \[B, n_mels, T\]"),
        (torch.zeros(100, 1), "at least 3"),
        (torch.zeros(100, 2) - 3, "at least 3"),  # 512 samples: torch.stft's reflect padding needs > 512
        (torch.zeros(0, 100, 40) - 3, "batch is empty"),
        (torch.zeros(100, 5, dtype=torch.long), "floating-point"),
        (torch.full((100, 40), 1e30), "far outside the natural-log mel range"),
        (torch.linspace(20, 100, 4000).reshape(100, 40), "in dB"),  # dB-scaled, 20 .. 100
        (torch.linspace(-80, 0, 4000).reshape(100, 40), "in dB"),  # dB relative to the maximum
        (np.full((100, 40), 1e300), "far outside"),  # float64 beyond float32
        (np.zeros((100, 40), dtype=np.int16), "floating-point"),
        ([[0.0] * 40] * 100, "expected a tensor or numpy array"),
    ],
    ids=["bins", "transposed", "transposed-batch", "nan", "inf", "1d", "one-frame", "two-frames", "empty-batch",
         "integer", "1e30", "db", "db-relative", "float64-huge", "numpy-int", "list"],
)
def test_bad_mels_raise_clear_errors(mel: torch.Tensor, message: str) -> None:
    with pytest.raises(MelError, match=message):
        MelSpectrogram(MelConfig()).check(mel)


def test_linear_scale_mel_warns() -> None:
    features = MelSpectrogram(MelConfig())
    log_mel = features(_speechlike())
    with pytest.warns(UserWarning, match="looks like a linear magnitude"):
        features.check((log_mel - log_mel.max()).exp())  # a quiet linear mel: in (0, 1], only suspicious
    with pytest.raises(MelError, match="a linear magnitude"):
        features.check(log_mel.exp() * 30 / log_mel.exp().max())  # a value of 30 is no natural-log mel
    with pytest.warns(UserWarning, match="log10, dB"):
        features.check(log_mel - 12)  # below the floor, but not far
    with pytest.raises(MelError, match="in dB"):
        features.check(20 * log_mel / np.log(10))  # decibels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert features.check(log_mel[0]).shape == (1, 100, log_mel.shape[-1])  # a real log-mel: silent


def test_minimum_length_is_the_stfts() -> None:
    """The fewest frames is the first T with T * hop > n_fft // 2 (torch.stft's reflect padding): 3 at hop 256."""
    features = MelSpectrogram(MelConfig())
    assert (MelConfig().min_frames, MelConfig().min_samples) == (3, 513)
    with pytest.raises(RuntimeError):  # what the check guards against
        features.equalize(torch.zeros(1, 1, 512), torch.zeros(1, 100, 2) - 3)
    assert features.equalize(torch.zeros(1, 1, 768), features.check(torch.zeros(100, 3) - 3)).shape == (1, 1, 768)


def test_numpy_mels_of_any_byte_order() -> None:
    features = MelSpectrogram(MelConfig())
    mel = np.random.default_rng(0).uniform(-8, 2, (100, 7))
    big = mel.astype(">f4")
    assert torch.equal(features.check(big), torch.from_numpy(mel.astype(np.float32))[None])
    assert features.check(mel.astype(">f8")).dtype == torch.float32


def test_equalize_matches_the_target_mel() -> None:
    features = MelSpectrogram(MelConfig())
    target_wav = _speechlike(0.512)[..., :256 * 48]
    target = features(target_wav)[..., :48]  # [1, 100, 48]
    noise = torch.randn(1, 1, 256 * 48, generator=torch.Generator().manual_seed(0)) * 0.01
    assert torch.equal(features.equalize(noise, target, 0.0), noise)
    before = (features(noise)[..., :48] - target).abs().mean()
    after = (features(features.equalize(noise, target))[..., :48] - target).abs().mean()
    half = (features(features.equalize(noise, target, 0.5))[..., :48] - target).abs().mean()
    assert after < half < before and after < 0.5 * before


# --- config and checkpoints --------------------------------------------------------------------------------


def test_config_round_trip_and_token_configs_unchanged() -> None:
    config = tiny_mel_model().config
    data = json.loads(json.dumps(config.to_dict()))
    assert data["codec"] is None and data["features"]["n_mels"] == 100
    assert MBDConfig.from_dict(data) == config
    token = MBDConfig(SR, CodecConfig(), (BandConfig(UNetConfig(codec_dim=128), PowerSchedule(), None),))
    assert "features" not in token.to_dict()  # token models keep the original stored layout
    assert MBDConfig.from_dict(token.to_dict()) == token
    with pytest.raises(ValueError, match="exactly one of"):
        MBDConfig(SR, CodecConfig(), config.bands, features=MelConfig())
    with pytest.raises(ValueError, match="unknown keys"):
        MBDConfig.from_dict({**data, "features": {**data["features"], "mystery": 1}})


def test_fp16_file_loads_as_float32(tmp_path: Path) -> None:
    model = tiny_mel_model()
    tensors = {k: v.half() if ".unet." in k else v for k, v in model.band_state().items()}
    checkpoint.save(tmp_path / "half.safetensors", model.config.to_dict(), tensors)
    loaded = MultiBandDiffusion.from_pretrained(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for name, value in loaded.band_state().items():
        torch.testing.assert_close(value, tensors[name].float())


# --- vocode / regenerate -----------------------------------------------------------------------------------


def test_vocode_shapes_seeding_and_regenerate() -> None:
    model = tiny_mel_model()
    mel = model.features(_speechlike())  # [1, 100, T]
    steps = [999, 500, 0]
    one = model.vocode(mel[0], steps=steps, generator=torch.Generator().manual_seed(0))
    assert one.shape == (1, mel.shape[-1] * 256)
    again = model.vocode(mel, steps=steps, generator=torch.Generator().manual_seed(0))
    assert again.shape == (1, 1, mel.shape[-1] * 256) and torch.equal(again[0], one)
    wav = _speechlike(0.3)
    out = model.regenerate(wav, SR, steps=steps, generator=torch.Generator().manual_seed(0))
    assert out.shape == wav.shape and torch.isfinite(out).all()
    out16 = model.regenerate(torch.randn(2, 1, 15999), 16000, steps=steps)  # not a whole 24 kHz length
    assert out16.shape == (2, 1, 15999)
    with pytest.raises(RuntimeError, match="mel model"):
        model.tokens_to_wav(torch.zeros(1, 4, 10, dtype=torch.long))


def test_token_model_refuses_vocode() -> None:
    with pytest.raises(RuntimeError, match="not on mel spectrograms"):
        tiny().vocode(torch.zeros(100, 10))


def test_api_vocode_keeps_the_input_kind(mel_model_path: Path) -> None:
    mel = MelSpectrogram(MelConfig())(_speechlike(0.2))[0]  # [100, T]
    audio, sr = mbd.vocode(mel.numpy(), mel_model_path, steps=2, seed=0, device="cpu")
    assert isinstance(audio, np.ndarray) and audio.shape == (1, mel.shape[-1] * 256) and sr == SR
    batch, _ = mbd.vocode(torch.stack([mel, mel]), mel_model_path, steps=2, seed=0, device="cpu")
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 1, mel.shape[-1] * 256)
    with pytest.raises(MelError, match="transposed"):
        mbd.vocode(mel.T.numpy(), mel_model_path, device="cpu")


# --- the bundled model -------------------------------------------------------------------------------------


def test_mel24k_is_bundled_and_resolves_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MBD_MANIFEST", raising=False)
    monkeypatch.setenv("MBD_OFFLINE", "1")
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "empty-cache"))
    entry = hub.model_entry("mel24k")
    assert entry.bundled and entry.input == "mel" and entry.url is None
    path = hub.resolve_model("mel24k")
    assert path.name == "mel24k.safetensors" and path.parent.name == "checkpoints" and path.is_file()
    assert path.stat().st_size <= 25 * 2**20
    assert not (tmp_path / "empty-cache").exists()  # nothing downloaded or cached
    model = SpectralMBD.from_pretrained("mel24k")
    assert isinstance(model, SpectralMBD) and model.codec is None and model.config.mel == MelConfig()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_mel24k_own_output_follows_the_mel_better_than_its_prior(mel24k: SpectralMBD) -> None:
    """The trained network's own output (no re-EQ, no projection) follows the mel of the README's clip (a
    held-out speaker; its first 1.5 s) clearly better than the same model untrained, whose output is its prior:
    noise shaped by the mel's envelope. (The acceptance bound of 0.35 is not met yet: checkpoints/mel24k.md.)"""
    model = mel24k
    untrained = SpectralMBD(model.config)
    untrained.bands.sigma.copy_(model.bands.sigma)
    wav = torch.from_numpy(soundfile.read(Path(__file__).resolve().parents[1] / "examples" / "speech.flac",
                                          dtype="float32", frames=int(1.5 * SR))[0])[None, None]
    mel = model.features.frame_aligned(wav)

    def own_output_l1(m: SpectralMBD) -> float:
        out = m.vocode(mel, generator=torch.Generator().manual_seed(0), mel_eq=0.0, griffin_lim=0)
        assert out.shape == (1, 1, mel.shape[-1] * 256)
        return (m.features.frame_aligned(out[..., : wav.shape[-1]]) - mel).abs().mean().item()

    assert own_output_l1(model) < 0.8 * own_output_l1(untrained)


# --- CLI ---------------------------------------------------------------------------------------------------


def test_cli_vocode_batches_errors_and_overwrite(tmp_path: Path, mel_model_path: Path, capsys) -> None:
    features = MelSpectrogram(MelConfig())
    mel = features(_speechlike(0.2))[0].numpy()  # [100, T]
    np.save(tmp_path / "one.npy", mel)
    np.save(tmp_path / "two.npy", np.stack([mel, mel]))
    np.save(tmp_path / "transposed.npy", mel.T.copy())
    np.save(tmp_path / "linear.npy", np.exp(mel - mel.max()))  # in (0, 1]: suspicious, not refused
    out = tmp_path / "out"
    args = ["--model", str(mel_model_path), "--steps", "2", "--seed", "0", "--device", "cpu"]
    code = main(["vocode", *(str(tmp_path / n) for n in ("one.npy", "two.npy", "transposed.npy", "linear.npy")),
                 "-o", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and "transposed.npy" in err and "looks transposed" in err
    assert "linear.npy: all values are >= 0" in err  # a warning, the file is still vocoded
    assert sorted(p.name for p in out.iterdir()) == ["linear.wav", "one.wav", "two_0.wav", "two_1.wav"]
    data, sr = soundfile.read(out / "one.wav")
    assert sr == SR and data.shape == (mel.shape[-1] * 256,) and np.isfinite(data).all()
    assert main(["vocode", str(tmp_path / "one.npy"), "-o", str(out / "one.wav"), *args]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["vocode", str(tmp_path / "one.npy"), "-o", str(out / "one.wav"), "--overwrite", *args]) == 0
    # a codec-token model is refused with one line
    assert main(["decode", str(tmp_path / "one.npy"), "-o", str(out), "--model", str(mel_model_path)]) == 2
    assert "mel model" in capsys.readouterr().err


# --- the README's first command ----------------------------------------------------------------------------


def _griffin_lim(mel: np.ndarray, length: int) -> np.ndarray:
    """The Griffin-Lim baseline from the same mel (HTK scale, no norm, magnitude, centred), 32 iterations."""
    import librosa

    stft = librosa.feature.inverse.mel_to_stft(np.exp(mel), sr=SR, n_fft=1024, power=1.0, htk=True, norm=None)
    return librosa.griffinlim(stft, n_iter=32, hop_length=256, n_fft=1024, center=True, length=length,
                              pad_mode="reflect", random_state=0)  # mel_to_audio's two steps, seeded


@pytest.fixture(scope="module")
def readme_first_command(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """Runs `mbd regenerate examples/speech.flac -o OUT.wav --model mel24k` with MBD_OFFLINE=1 and an empty
    cache; returns (source, output) audio."""
    import os
    import subprocess
    import sys

    tmp_path = tmp_path_factory.mktemp("readme")
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "OUT.wav"
    env = {**os.environ, "MBD_OFFLINE": "1", "MBD_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mbd", "regenerate", "examples/speech.flac", "-o", str(out), "--model", "mel24k"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "cache").exists()  # nothing was downloaded or cached
    source, source_sr = soundfile.read(repo / "examples" / "speech.flac", dtype="float32")
    audio, sr = soundfile.read(out, dtype="float32")
    assert sr == source_sr == SR
    return source, audio


def _log_mel_l1(audio: np.ndarray, target: torch.Tensor) -> float:
    features = MelSpectrogram(MelConfig())
    return (features(torch.from_numpy(audio).float()[None, None]) - target).abs().mean().item()


def test_readme_first_command_works_offline(readme_first_command) -> None:
    source, audio = readme_first_command
    assert audio.shape == source.shape
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-3
    target = MelSpectrogram(MelConfig())(torch.from_numpy(source)[None, None])
    silence = np.random.default_rng(0).normal(0, 1e-4, len(source)).astype(np.float32)
    assert _log_mel_l1(audio, target) < 0.5 * _log_mel_l1(silence, target)  # it follows the input's mel


@pytest.mark.slow  # a quality bound: benchmarks/mel_quality.py checks the same one (default row) on held-out clips
def test_readme_first_command_is_within_2x_of_griffin_lim(readme_first_command) -> None:
    """The quality bound of the default path: log-mel L1 at most twice Griffin-Lim's (32 iterations) on the
    README's clip; the full table is benchmarks/mel_quality.py's."""
    source, audio = readme_first_command
    target = MelSpectrogram(MelConfig())(torch.from_numpy(source)[None, None])
    ours = _log_mel_l1(audio, target)
    theirs = _log_mel_l1(_griffin_lim(target[0].numpy(), len(source)), target)
    assert ours <= 2 * theirs, f"log-mel L1: mel24k {ours:.3f}, Griffin-Lim (32 iterations) {theirs:.3f}"


def test_mel24k_turns_silence_into_silence(mel24k: SpectralMBD) -> None:
    """Digital silence in, (near) silence out: no DC offset, no noise floor above -60 dBFS."""
    out = mel24k.regenerate(torch.zeros(1, 1, SR // 2), SR, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, SR // 2)
    assert out.abs().max().item() < 1e-3 and abs(out.mean().item()) < 1e-5


def test_magnitude_solves_the_nonnegative_least_squares_problem_as_librosa_does() -> None:
    import librosa

    features = MelSpectrogram(MelConfig())
    mel = features(_speechlike(0.5) + 0.01 * torch.randn(1, 1, SR // 2, generator=torch.Generator().manual_seed(0)))
    ours = features.magnitude(mel, iterations=50)[0].double()  # [F, T]
    theirs = torch.from_numpy(librosa.feature.inverse.mel_to_stft(
        np.exp(mel[0].double().numpy()), sr=SR, n_fft=1024, power=1.0, htk=True, norm=None))  # L-BFGS-B
    fb = features.mel.mel_scale.fb.double()
    target = mel[0].double().exp()

    def residual(a: torch.Tensor) -> float:
        return (torch.linalg.norm(fb.T @ a - target) / torch.linalg.norm(target)).item()

    assert (ours >= 0).all() and ours.shape == theirs.shape
    assert residual(ours) < 0.05 and residual(ours) < 2 * residual(theirs) + 1e-3
