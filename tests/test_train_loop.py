"""The training loop on a tiny U-Net and a random EnCodec: loss, resume, processor fitting, DDP, loading."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbd import MultiBandDiffusion, checkpoint
from mbd.bands import split_bands
from mbd.codec import Codec, load_codec
from mbd.processor import BandProcessor
from mbd.train import load_recipe, train, train_band
from mbd.train.config import TrainConfig
from mbd.train.data import CropSampler, scan, split_files
from mbd.train.logs import read_csv
from mbd.train.trainer import step_generator
from tests.conftest import REPO, random_encodec_24khz, write_audio

BAND = 2  # has the EQ processor


def with_steps(config: TrainConfig, steps: int) -> TrainConfig:
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, steps=steps))


STEPS = 16  # enough for the loss to fall clearly (to about 0.7 of its start with this recipe and seed)


@pytest.fixture(scope="module")
def run(tmp_path_factory, fast_run) -> tuple[Path, TrainConfig, Path]:
    """One uninterrupted 16-step run of band 2 (no curves.png): `(folder, config, out_dir)`."""
    tmp = tmp_path_factory.mktemp("train")
    with pytest.warns(UserWarning, match="broken.wav"), pytest.MonkeyPatch.context() as patch:
        patch.setattr("mbd.train.trainer.plot_curves", lambda *args, **kwargs: False)
        config = with_steps(load_recipe(fast_run(tmp)), STEPS)
        train_band(config, BAND, tmp / "straight", device="cpu")
    return tmp, config, tmp / "straight"


@pytest.fixture(scope="module")
def codec(run: tuple[Path, TrainConfig, Path]) -> Codec:
    """The run's codec, built once and handed to `train_band` by the tests that train more."""
    tmp, config, _ = run
    return load_codec("encodec_24khz", n_q=config.codec.n_q, weights=tmp / "encodec.th")


def losses(out: Path) -> list[float]:
    return [float(r["loss"]) for r in read_csv(out / f"band{BAND}" / "train.csv")]


def test_loss_falls(run) -> None:
    _, _, out = run
    curve = losses(out)
    assert len(curve) == STEPS
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5, curve


@pytest.mark.parametrize("dropout", [0.0, 0.2], ids=["plain", "dropout"])
def test_resume_is_bit_identical(run, codec, no_plots, dropout: float) -> None:  # noqa: ANN001
    """6 steps straight, or 3 then 3 more resumed (after the processor has been fitted), end bit-identical.
    The runs share a latent cache (EnCodec encodes each file once instead of every crop of every step)."""
    tmp, config, _ = run
    if dropout:  # dropout draws from torch's global RNG, which the state must restore too
        config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, dropout=dropout))
    cached = dataclasses.replace(config.codec, cache_dir=str(tmp / "resume_latents"))
    config = with_steps(dataclasses.replace(config, codec=cached), 6)
    straight, out = tmp / f"straight6_{dropout}", tmp / f"interrupted_{dropout}"
    with pytest.warns(UserWarning):
        train_band(config, BAND, straight, device="cpu", codec=codec)
        train_band(with_steps(config, 3), BAND, out, device="cpu", codec=codec)
        with pytest.raises(ValueError, match="pass --resume"):
            train_band(config, BAND, out, device="cpu", codec=codec)
        torch.manual_seed(1234)  # a different global RNG state in this process must not matter
        result = train_band(config, BAND, out, resume=True, device="cpu", codec=codec)
    assert result.step == 6 and len(result.losses) == 3
    assert losses(out) == losses(straight)
    _, a = checkpoint.read_ours(straight / f"band{BAND}" / "state.safetensors")
    _, b = checkpoint.read_ours(out / f"band{BAND}" / "state.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def test_resume_refuses_another_recipe(run, codec) -> None:  # noqa: ANN001
    """The refusal comes before anything is written: the module's run folder stays as it was."""
    _, config, out = run
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    changed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=1e-4))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"differs: \['optim.lr'\]"):
        train_band(changed, BAND, out, resume=True, device="cpu", codec=codec)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_max_seconds_stops_the_run_and_resume_finishes_it_identically(run, codec, no_plots, capsys) -> None:  # noqa: ANN001
    """With `log.max_seconds` spent after the first step, band 2 writes its checkpoint and stops there, and band 0
    (after it in the call) is not started; `--resume` then ends exactly where an uninterrupted run ends."""
    tmp, config, _ = run
    cached = dataclasses.replace(config.codec, cache_dir=str(tmp / "resume_latents"))
    config = with_steps(dataclasses.replace(config, codec=cached), 4)
    limited = dataclasses.replace(config, log=dataclasses.replace(config.log, max_seconds=1e-9))
    straight, out = tmp / "straight4", tmp / "timed"
    with pytest.warns(UserWarning):
        train_band(config, BAND, straight, device="cpu", codec=codec)
        stopped = train(limited, out, [BAND, 0], device="cpu")
        assert [(r.band, r.step) for r in stopped] == [(BAND, 1)] and not (out / "band0").exists()
        assert "band 2: stopped at step 1: log.max_seconds" in capsys.readouterr().out
        assert train(config, out, [BAND], resume=True, device="cpu")[0].step == 4
    assert losses(out) == losses(straight)
    _, a = checkpoint.read_ours(straight / f"band{BAND}" / "state.safetensors")
    _, b = checkpoint.read_ours(out / f"band{BAND}" / "state.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_warmup_raises_the_learning_rate_linearly(run, codec, no_plots) -> None:  # noqa: ANN001
    """With `optim.warmup = 5`, optimiser step s (from 0) runs at lr * (s + 1) / 5: the state after 2 steps
    holds the rate of the second, 2/5 of the recipe's."""
    tmp, config, _ = run
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, warmup=5, steps=2))
    with pytest.warns(UserWarning):
        train_band(config, BAND, tmp / "warmup", device="cpu", codec=codec)
    meta, _ = checkpoint.read_ours(tmp / "warmup" / f"band{BAND}" / "state.safetensors")
    assert [group["lr"] for group in meta["groups"]] == [pytest.approx(config.optim.lr * 2 / 5, rel=1e-12)]


def test_processor_fitted_on_first_band_passed_examples(run) -> None:
    _, config, out = run
    _, tensors = checkpoint.read_ours(out / f"band{BAND}" / f"band{BAND}.safetensors")
    assert tensors["bands.0.processor.counts"].item() == 8  # num_samples 8 = the first 2 batches of 4
    with pytest.warns(UserWarning):
        files, _ = scan(config.data.paths)
    train_files, _ = split_files(files, None, config.data.valid_clips, config.seed)
    sampler = CropSampler(train_files, 24_000, 2400)
    expected = BandProcessor(config.processor_config(BAND), 24_000)
    for step in range(2):
        g = step_generator(config.seed, BAND, step)
        wav = sampler.load(sampler.draw(4, g))
        expected.update(split_bands(wav, 24_000, 4)[BAND], generator=step_generator(config.seed, BAND, step))
    for name in ("sum_x", "sum_x2", "sum_target_x2"):
        torch.testing.assert_close(tensors[f"bands.0.processor.{name}"], getattr(expected, name))


def test_checkpoint_loads_and_generates(run, codec) -> None:  # noqa: ANN001
    tmp, config, out = run
    model = MultiBandDiffusion.from_pretrained(out / f"band{BAND}" / f"band{BAND}.safetensors", codec=codec)
    _, tensors = checkpoint.read_ours(out / f"band{BAND}" / "state.safetensors")
    # the inference file holds the EMA weights, not the raw ones
    assert torch.equal(model.bands[0].unet.embedding.weight, tensors["ema.embedding.weight"])
    assert not torch.equal(tensors["ema.embedding.weight"], tensors["model.embedding.weight"])
    wav = torch.randn(1, 1, 4800) * 0.1
    regen = model.regenerate(wav, 24_000, steps=[999, 500, 0], generator=torch.Generator().manual_seed(0))
    assert regen.shape == wav.shape and torch.isfinite(regen).all()
    valid = read_csv(out / f"band{BAND}" / "valid.csv")
    assert [r["step"] for r in valid] == [str(STEPS)] and all(r[k] for r in valid for k in ("mel", "stft", "si_sdr"))


@pytest.mark.slow  # two processes each importing torch and training
def test_two_process_gloo_matches_single_process(run) -> None:
    tmp, config, straight = run
    out = tmp / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "mbd.train", str(tmp / "recipe.toml"), "--band", str(BAND), "--steps", "6",
        "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, single = losses(out), losses(straight)[:6]
    assert len(ddp) == 6
    torch.testing.assert_close(torch.tensor(ddp), torch.tensor(single), rtol=1e-3, atol=1e-5)
    _, a = checkpoint.read_ours(out / f"band{BAND}" / "state.safetensors")
    assert a["optim.0.step"].item() == 6


@pytest.mark.slow
def test_tiny_recipe_loss_falls(tmp_path: Path) -> None:
    """recipes/tiny.toml (its U-Net, schedule, processor and optimiser), band 2, 300 steps on synthetic
    tones plus noise (a few minutes on 2 cores): the loss halves and the exported band samples."""
    weights = tmp_path / "encodec.th"
    torch.save(random_encodec_24khz(seed=0).state_dict(), weights)
    write_audio(tmp_path / "audio", n=12, seconds=3.0)
    config = load_recipe(REPO / "recipes" / "tiny.toml")
    config = dataclasses.replace(
        config,
        codec=dataclasses.replace(config.codec, weights=str(weights)),
        data=dataclasses.replace(config.data, paths=(str(tmp_path / "audio"),)),
    )
    with pytest.warns(UserWarning, match="broken.wav"):
        result = train_band(config, BAND, tmp_path / "run", device="cpu")
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    assert result.step == 300 and last < 0.5 * first, (first, last)
    model = MultiBandDiffusion.from_pretrained(result.model_path, load_codec=False)
    latent = torch.randn(1, 128, 75)  # 1 s of EnCodec 24 kHz frames (hop 320); no codec loaded: length given
    wav = model.generate(latent, length=24_000, steps=[999, 499, 0], generator=torch.Generator().manual_seed(0))
    assert wav.shape == (1, 1, 24_000) and torch.isfinite(wav).all()


def test_latent_cache(run, codec, no_plots) -> None:  # noqa: ANN001
    tmp, config, _ = run
    cache = tmp / "latents"
    config = with_steps(dataclasses.replace(config, codec=dataclasses.replace(config.codec, cache_dir=str(cache))), 3)
    with pytest.warns(UserWarning):
        result = train_band(config, 0, tmp / "cached", device="cpu", codec=codec)
    stored = sorted(cache.glob("*.safetensors"))
    assert result.step == 3 and len(stored) >= 1 and all(math.isfinite(x) for x in result.losses)
    from safetensors.torch import load_file

    latent = load_file(str(stored[0]))["latent"]
    assert latent.shape[0] == 128 and latent.shape[1] == 45  # a whole 0.6 s file: ceil(14400 / 320) frames


MEL_RECIPE = """
name = "mel-test"
seed = 1
n_bands = 2
conditioner = "mel"
[data]
paths = ["audio"]
segment_duration = 0.128
valid_clips = 1
valid_duration = 0.128
[unet]
hidden = 4
growth = 1
depth = 4
res_blocks = 1
codec_dim = 100
[optim]
lr = 1e-2
batch_size = 4
steps = 12
[log]
log_every = 1
valid_every = 0
checkpoint_every = 12
valid_stride = 250
tensorboard = false
progress = false
[[band]]
index = 0
[[band]]
index = 1
"""


def test_mel_conditioned_training_assembles_a_mel_model(tmp_path: Path, no_plots) -> None:  # noqa: ANN001
    """conditioner = "mel": no codec is loaded; the bands assemble into a model that vocodes a log-mel."""
    from mbd.train import train
    write_audio(tmp_path / "audio", 3)
    (tmp_path / "recipe.toml").write_text(MEL_RECIPE)
    with pytest.warns(UserWarning, match="broken.wav"):
        config = load_recipe(tmp_path / "recipe.toml")
        results = train(config, tmp_path / "run", device="cpu")
    curve = results[0].losses
    assert len(curve) == 12 and sum(curve[-4:]) < sum(curve[:4])
    model = MultiBandDiffusion.from_pretrained(tmp_path / "run" / "model.safetensors")
    assert model.codec is None and len(model.bands) == 2 and model.config.features == config.mel
    mel = model.features(torch.randn(1, 1, 2560) * 0.1)[..., :10]
    wav = model.vocode(mel, steps=[999, 0], generator=torch.Generator().manual_seed(0))
    assert wav.shape == (1, 1, 2560) and torch.isfinite(wav).all()


def test_flow_objective_trains_and_samples_with_the_ode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """objective = "flow" for U-Net band models: the loss falls and the exported bands are flow bands."""
    from mbd.train import train, trainer

    draw = trainer.plot_curves

    def band0_only(train_csv: Path, valid_csv: Path, out: Path, *args, **kwargs) -> bool:  # noqa: ANN002, ANN003
        """Band 0's curves.png is checked below; band 1 skips drawing its own (about a second)."""
        return out.parent.name == "band0" and draw(train_csv, valid_csv, out, *args, **kwargs)

    monkeypatch.setattr(trainer, "plot_curves", band0_only)
    write_audio(tmp_path / "audio", 3)
    recipe = MEL_RECIPE.replace('conditioner = "mel"', 'conditioner = "mel"\nobjective = "flow"')
    (tmp_path / "recipe.toml").write_text(recipe)
    with pytest.warns(UserWarning, match="broken.wav"):
        config = load_recipe(tmp_path / "recipe.toml")
        results = train(config, tmp_path / "run", device="cpu")
    curve = results[0].losses
    assert sum(curve[-4:]) < sum(curve[:4])
    model = MultiBandDiffusion.from_pretrained(tmp_path / "run" / "model.safetensors")
    assert [band.config.objective for band in model.bands] == ["flow", "flow"]
    valid = read_csv(tmp_path / "run" / "band0" / "valid.csv")  # validated at the last step
    assert [int(r["step"]) for r in valid] == [12] and all(float(valid[0][f"valid_loss_q{q}"]) > 0 for q in range(4))
    assert (tmp_path / "run" / "band0" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    mel = model.features(torch.randn(1, 1, 2560) * 0.1)[..., :10]
    wav = model.vocode(mel, steps=[999, 499, 0], generator=torch.Generator().manual_seed(0))
    assert wav.shape == (1, 1, 2560) and torch.isfinite(wav).all()
