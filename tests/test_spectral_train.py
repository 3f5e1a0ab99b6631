"""mbd.train.spectral_trainer: a spectral model learns (overfit check), resumes exactly, logs, and fails early."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import soundfile as sf
import torch

from mbd.spectral_mbd import SpectralMBD
from mbd.train import cli as train_cli
from mbd.train.config import RecipeError
from mbd.train.logs import read_csv
from mbd.train.spectral_config import load_spectral_recipe
from mbd.train.spectral_trainer import analyse, train

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
family = "spectral"
name = "overfit"
seed = 0
steps = 4
mel_loss = 1.0
[data]
paths = ["audio"]
valid_paths = ["audio"]
segment_frames = 32
valid_clips = 1
valid_seconds = 1.5
[net]
dim = 64
blocks = 3
mlp_ratio = 2.0
[optim]
lr = 2e-3
batch_size = 8
steps = 300
warmup = 10
ema_decay = 0.9
[log]
log_every = 20
valid_every = 150
checkpoint_every = 1000
"""


def speech_clip(folder: Path, seconds: float = 1.5) -> Path:
    """1.5 s of the bundled example (real speech) as the only training and validation file."""
    wav, sr = sf.read(REPO / "examples" / "speech.flac", dtype="float32")
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "clip.wav", wav[sr : sr + int(seconds * sr)], sr)
    return folder / "clip.wav"


def recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    speech_clip(tmp_path / "audio")
    (tmp_path / "recipe.toml").write_text(text)
    return tmp_path / "recipe.toml"


def raw_mel_l1(model: SpectralMBD, wav: torch.Tensor, seed: int = 0) -> float:
    """Log-mel L1 of the model's own output (no re-EQ) against the clip's mel."""
    _, mel = analyse(model, wav)
    frames = -(-wav.shape[-1] // model.hop_length)
    out = model.generate(mel[..., :frames], wav.shape[-1], generator=torch.Generator().manual_seed(seed))
    return (analyse(model, out)[1] - mel)[..., :frames].abs().mean().item()


@pytest.fixture(scope="module")
def overfit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("overfit")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return tmp, train(load_spectral_recipe(recipe(tmp)), tmp / "run")


@pytest.mark.slow  # 300 training steps: about a minute on 2 cores
def test_overfit_one_clip_far_better_than_noise(overfit: tuple[Path, Path]) -> None:
    """300 steps on 1.5 s of speech: the model's own output (no re-EQ) reproduces the clip's mel far better
    than white noise of the clip's level, and clearly better than the untrained model (its prior: noise
    shaped by the mel's envelope)."""
    tmp, path = overfit
    model = SpectralMBD.from_pretrained(path)
    wav = torch.from_numpy(sf.read(tmp / "audio" / "clip.wav", dtype="float32")[0])[None, None]
    trained = raw_mel_l1(model, wav)
    untrained = SpectralMBD(model.config)
    untrained.bands.sigma.copy_(model.bands.sigma)
    prior = raw_mel_l1(untrained, wav)
    _, mel = analyse(model, wav)
    white = (analyse(model, torch.randn_like(wav) * wav.std())[1] - mel).abs().mean().item()
    assert trained < 0.2 * white, (trained, white)
    assert trained < 0.75 * prior, (trained, prior)
    logged = float(read_csv(path.parent / "valid.csv")[-1]["mel_l1"])
    assert logged == pytest.approx(trained, abs=0.02)  # valid.csv scores the same thing


@pytest.mark.slow  # 300 training steps: about a minute on 2 cores
def test_logs_show_learning(overfit: tuple[Path, Path]) -> None:
    _, path = overfit
    run = path.parent
    rows = read_csv(run / "train.csv")
    assert [int(r["step"]) for r in rows] == list(range(20, 301, 20))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    valid = read_csv(run / "valid.csv")
    assert [int(r["step"]) for r in valid] == [150, 300]
    assert all(float(v[f"valid_loss_q{q}"]) > 0 for v in valid for q in range(4))
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_is_bit_identical(tmp_path: Path, no_plots, capsys) -> None:  # noqa: ANN001
    """4 steps straight, or 2 then 2 more resumed, end bit-identical; logging settings (here the progress bar
    instead of a printed line per log row) may change between the two."""
    text = RECIPE.replace("steps = 300", "steps = 4").replace("checkpoint_every = 1000", "checkpoint_every = 2")
    text = text.replace("log_every = 20", "log_every = 2").replace("batch_size = 8", "batch_size = 4")
    config = load_spectral_recipe(recipe(tmp_path, text.replace("valid_every = 150", "valid_every = 0")))
    train(config, tmp_path / "straight")
    assert "step 2: loss" in capsys.readouterr().out
    first = dataclasses.replace(config, optim=dataclasses.replace(config.optim, steps=2),
                                log=dataclasses.replace(config.log, progress=True))
    train(first, tmp_path / "split")
    out, err = capsys.readouterr()
    assert "step 2: loss" not in out and "2/2" in err
    train(config, tmp_path / "split", resume=True)
    a = SpectralMBD.from_pretrained(tmp_path / "straight" / "model.safetensors").state_dict()
    b = SpectralMBD.from_pretrained(tmp_path / "split" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[{k: v for k, v in r.items() if k != "steps_per_s"} for r in read_csv(tmp_path / run / "train.csv")]
              for run in ("straight", "split")]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    with pytest.raises(Exception, match="exists"):
        train(config, tmp_path / "split")
    other = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=1e-4))
    with pytest.raises(Exception, match="different recipe"):
        train(other, tmp_path / "split", resume=True)


@pytest.mark.parametrize(
    "change,message",
    [
        (("dim = 64", "dim = 64\nwidth = 3"), "unknown keys"),
        (("dim = 64", "dim = 64\nchannels = 256"), "unknown keys"),
        (('family = "spectral"', 'family = "spectral"\nobjective = "score"'), "objective"),
        (("segment_frames = 32", "segment_frames = 0"), "segment_frames"),
        (('paths = ["audio"]', 'paths = ["nowhere"]'), "does not exist"),
        (("warmup = 10", "warmup = 10\nprecision = 'bf16'"), "optim.precision: spectral models train in fp32"),
        (("ema_decay = 0.9", "ema_decay = 1.0"), "optim.ema_decay must be in [0, 1)"),
        (("mel_loss = 1.0", "mel_loss = -1.0"), "mel_loss must be >= 0"),
    ],
)
def test_bad_recipes_fail_with_one_line_before_training(tmp_path: Path, capsys, change, message) -> None:
    path = recipe(tmp_path, RECIPE.replace(*change))
    assert train_cli.main([str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "state.safetensors").exists()


def test_shipped_spectral_recipe_parses() -> None:
    config = load_spectral_recipe(REPO / "recipes" / "mel24k.toml")
    model = config.model_config()
    assert model.objective == "flow" and model.spectral.n_bands == len(model.schedules) == 4
    assert (model.mel.n_fft, model.mel.hop_length, model.mel.n_mels) == (1024, 256, 100)
    assert all(Path(p).is_absolute() for p in config.data.paths + config.data.valid_paths)
    with pytest.raises(RecipeError, match="family"):
        load_spectral_recipe(REPO / "recipes" / "tiny.toml")


def test_optim_table_overrides_only_the_keys_it_gives(tmp_path: Path) -> None:
    """A spectral recipe's [optim] table changes the spectral defaults (AdamW 1e-3, 200 warm-up steps, clip 1,
    EMA 0.999, 16 crops, fp32), not the U-Net recipes' (Adam 2e-4, no warm-up, no clipping, EMA 0.99, 128)."""
    text = RECIPE.split("[optim]")[0] + "[optim]\nlr = 5e-4\n"
    config = load_spectral_recipe(recipe(tmp_path, text))
    o = config.optim
    assert (o.lr, o.warmup, o.max_norm, o.ema_decay, o.batch_size, o.steps, o.precision) == (
        5e-4, 200, 1.0, 0.999, 16, 10_000, "fp32"
    )  # fmt: skip
    assert [round(o.lr_at(s) / 5e-4, 6) for s in (0, 99, 199, 5000)] == [0.005, 0.5, 1.0, 1.0]
