"""mbd.train without a training loop: recipes, data, checkpoints, assembling and validation scores."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mbd import MultiBandDiffusion, checkpoint
from mbd.bands import split_bands
from mbd.train import RecipeError, assemble, evaluate, load_recipe, state
from mbd.train import cli as train_cli
from mbd.train.config import TrainConfig
from mbd.train.data import CropSampler, DataError, read_clip, scan, split_files
from mbd.unet import DiffusionUNet
from tests.conftest import REPO, SR, TINY_RECIPE, write_audio

# --- recipes ----------------------------------------------------------------------------------------------


UNET_RECIPES = [p for p in sorted((REPO / "recipes").glob("*.toml")) if p.stem != "mel24k"]  # mel24k: spectral


@pytest.mark.parametrize("path", UNET_RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_parse(path: Path) -> None:
    config = load_recipe(path)
    assert config.n_bands == 4 and sorted(b.index for b in config.band) == [0, 1, 2, 3]
    assert Path(config.data.paths[0]).is_absolute()
    if path.stem == "mel24k_unet":  # the first mel vocoder (U-Nets; superseded by the spectral mel24k)
        assert config.conditioner == "mel" and config.unet.codec_dim == config.mel.n_mels == 100
        assert config.unet.stride**config.unet.depth == config.mel.hop_length == 256
        assert config.data.valid_paths and [config.processor_config(b) is None for b in range(4)] == [
            True, True, False, False
        ]  # fmt: skip
    elif path.stem != "tiny":  # the paper's settings
        u, s, o = config.unet, config.schedule, config.optim
        assert (u.hidden, u.growth, u.depth, u.res_blocks, u.codec_dim) == (48, 4, 4, 2, 128)
        assert (s.beta_t0, s.beta_t1, s.beta_exp, s.num_steps) == (1e-5, 2.9e-2, 7.5, 1000)
        assert (o.batch_size, o.lr, o.ema_decay, o.max_norm, config.data.segment_duration) == (128, 2e-4, 0.99, None, 1)
        assert [config.processor_config(b) is None for b in range(4)] == [True, True, False, False]
        assert config.processor_config(2).power_std == 0.4 and config.processor_config(3).power_std == 0.75
        assert config.processor.n_bands == 8 and config.processor.num_samples == 10_000


def test_recipe_paths_resolve_against_the_recipe_folder(tmp_path: Path, monkeypatch, fast_run) -> None:  # noqa: ANN001
    recipe = fast_run(tmp_path)
    monkeypatch.chdir(REPO)
    config = load_recipe(recipe)
    assert config.data.paths == (str(tmp_path / "audio"),)
    assert config.codec.weights == str(tmp_path / "encodec.th")


_BASE = "[data]\npaths = ['audio']\n[[band]]\nindex = 0\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[data]\npaths = ['audio']\nsegment_durations = 1.0\n[[band]]\nindex = 0",
            "unknown keys ['segment_durations']",
        ),
        ("bogus = 1\n" + _BASE, "unknown keys ['bogus']"),
        (_BASE + "[optim]\nbatch_size = '8'", "optim.batch_size: expected int"),
        (_BASE + "[optim]\nlr = -1.0", "optim.lr must be > 0"),
        (_BASE + "[optim]\nprecision = 'fp16'", "optim.precision: must be one of"),
        (_BASE + "[optim]\nwarmup = -1", "optim.warmup must be >= 0"),
        (_BASE + "[optim]\nmax_norm = 0.0", "optim.max_norm must be > 0"),  # no clipping: leave it out
        (_BASE + "[log]\nmax_seconds = 0", "log.max_seconds must be > 0"),  # no limit: leave it out
        (_BASE + "[optim]\nbeta2 = 1.0", "optim.beta1 and optim.beta2 must be in [0, 1)"),
        (_BASE + "[unet]\nhidden = 4.5", "unet.hidden: expected int"),
        (_BASE + "[unet]\nnum_steps = 500", "must equal schedule.num_steps"),
        (_BASE + "[schedule]\nbeta_t0 = 0.5\nbeta_t1 = 0.1", "need 0 < beta_t0 <= beta_t1 < 1"),
        ("[data]\npaths = ['audio']\n[[band]]\nindex = 7", "indices must be distinct and in [0, 4)"),
        ("[data]\npaths = ['audio']\n[[band]]\nprocessor = true", "missing keys ['index']"),
        ("[[band]]\nindex = 0", "data.paths: list at least one"),
    ],
)
def test_bad_recipes_raise_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "does not exist"),
        ("empty", "training data set is empty"),
        ("too_few", "need more than data.valid_clips"),
        ("syntax", "not valid TOML"),
        ("band", "no [[band]] with index = 1"),
    ],
)
def test_cli_fails_before_training(tmp_path: Path, capsys, setup: str, message: str, fast_run) -> None:  # noqa: ANN001
    recipe = fast_run(tmp_path)
    out = tmp_path / "out"
    args = [str(recipe), "--out", str(out)]
    if setup == "missing":
        recipe.write_text(TINY_RECIPE.replace('paths = ["audio"]', 'paths = ["nowhere"]'))
    elif setup == "empty":
        (tmp_path / "empty").mkdir()
        recipe.write_text(TINY_RECIPE.replace('paths = ["audio"]', 'paths = ["empty"]'))
    elif setup == "too_few":
        recipe.write_text(TINY_RECIPE.replace('paths = ["audio"]', 'paths = ["audio/clip0.wav"]'))
    elif setup == "syntax":
        recipe.write_text("[data\n")
    else:
        args += ["--band", "1"]
    assert train_cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# --- data -------------------------------------------------------------------------------------------------


def test_scan_skips_unreadable_files_and_manifests_work(tmp_path: Path) -> None:
    write_audio(tmp_path / "audio", 3)
    with pytest.warns(UserWarning, match="broken.wav"):
        files, skipped = scan((str(tmp_path / "audio"),))
    assert skipped == 1 and len(files) == 4
    manifest = tmp_path / "audio" / "list.csv"
    manifest.write_text("path,kind\nclip0.wav,x\nclip2.wav,y\nmissing.wav,z\n")
    with pytest.warns(UserWarning, match="missing.wav"):
        listed, skipped = scan((str(manifest),))
    assert [Path(f.path).name for f in listed] == ["clip0.wav", "clip2.wav"] and skipped == 1
    with pytest.raises(DataError, match="empty"):
        split_files([], None, 1, 0)


def test_read_clip_resamples_and_downmixes(tmp_path: Path) -> None:
    write_audio(tmp_path / "audio", 1)
    with pytest.warns(UserWarning):
        files, _ = scan((str(tmp_path / "audio"),))
    stereo = [f for f in files if f.channels == 2][0]
    assert stereo.sample_rate == 48_000 and stereo.length_at(SR) == int(0.6 * SR)
    start, length = 4000, 2000
    clip = read_clip(stereo, start, length, SR)
    t = (start + np.arange(length)) / SR
    expected = torch.from_numpy(0.2 * np.sin(2 * np.pi * 440 * t)).float()
    assert clip.shape == (length,)
    assert (clip - expected).abs().max() < 1e-2
    tail = read_clip(stereo, stereo.length_at(SR) - 100, 300, SR)
    assert tail[150:].abs().max() == 0  # zero-padded past the end


def test_crop_sampler_is_seeded_and_aligned(tmp_path: Path) -> None:
    write_audio(tmp_path / "audio", 4)
    with pytest.warns(UserWarning):
        files, _ = scan((str(tmp_path / "audio"),))
    sampler = CropSampler(files, SR, 2400, align=320)
    a = sampler.draw(16, torch.Generator().manual_seed(1))
    b = sampler.draw(16, torch.Generator().manual_seed(1))
    c = sampler.draw(16, torch.Generator().manual_seed(2))
    assert a == b and a != c
    assert all(crop.start % 320 == 0 and crop.start + 2400 <= files[crop.file].length_at(SR) for crop in a)
    assert sampler.load(a[:3]).shape == (3, 1, 2400)


# --- checkpoints ------------------------------------------------------------------------------------------


def _tiny_config(recipe: Path, n_bands: int = 4) -> TrainConfig:
    config = load_recipe(recipe)
    bands = tuple(dataclasses.replace(config.band[0], index=i) for i in range(n_bands))
    return dataclasses.replace(config, n_bands=n_bands, band=bands)


def test_state_write_is_atomic(tmp_path: Path, monkeypatch, fast_run) -> None:  # noqa: ANN001
    config = _tiny_config(fast_run(tmp_path))
    model = DiffusionUNet(config.unet)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 800), 3, torch.randn(2, 128, 3)).pow(2).mean().backward()
    optimizer.step()
    path = tmp_path / "state.safetensors"
    state.save_state(path, config, 0, 7, model, model, None, optimizer)

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        state.save_state(path, config, 0, 8, model, model, None, optimizer)
    meta, tensors = state.load_state(path)
    assert meta["step"] == 7 and torch.equal(tensors["model.embedding.weight"], model.embedding.weight)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_assemble_bands_into_one_model(tmp_path: Path, capsys, fast_run) -> None:  # noqa: ANN001
    config = _tiny_config(fast_run(tmp_path), n_bands=2)
    paths = []
    for b in range(2):
        torch.manual_seed(b)
        unet = DiffusionUNet(config.unet)
        paths.append(tmp_path / f"band{b}.safetensors")
        state.export_band(paths[-1], config, b, unet, None, step=5)
    out = tmp_path / "model.safetensors"
    assert train_cli.main(["assemble", *map(str, paths), "-o", str(out)]) == 0
    model = MultiBandDiffusion.from_pretrained(out, load_codec=False)
    single = MultiBandDiffusion.from_pretrained(paths[1], load_codec=False)
    assert len(model.bands) == 2
    assert torch.equal(model.bands[1].unet.embedding.weight, single.bands[0].unet.embedding.weight)
    wav = model.generate(torch.randn(1, 128, 4), length=1280, steps=[999, 500, 0])
    assert wav.shape == (1, 1, 1280) and torch.isfinite(wav).all()
    with pytest.raises(ValueError, match="low to high"):
        assemble(paths[::-1], tmp_path / "wrong.safetensors")
    assert train_cli.main(["assemble", str(paths[0]), str(paths[0]), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "low to high" in capsys.readouterr().err


# --- validation scores ------------------------------------------------------------------------------------


def test_scores() -> None:
    torch.manual_seed(0)
    ref = torch.randn(2, 1, 4800)
    assert evaluate.si_sdr(2 * ref, ref) > 80
    assert abs(evaluate.si_sdr(ref + ref.std() * torch.randn_like(ref), ref)) < 1.0  # about 0 dB
    assert evaluate.mel_distance(ref, ref, SR) == 0 and evaluate.stft_distance(ref, ref) == 0
    band = split_bands(ref, SR, 4)[1]
    assert evaluate.stft_distance(band, ref) > 1 and not math.isnan(evaluate.mel_distance(band, ref, SR))


def test_validation_regeneration_with_an_oracle_denoiser_recovers_the_band() -> None:
    from mbd.diffusion import PowerSchedule
    from mbd.processor import BandProcessor, ProcessorConfig

    torch.manual_seed(0)
    schedule = PowerSchedule()
    target = split_bands(torch.randn(2, 1, 4800) * 0.1, SR, 4)[2]  # [2, 1, L]
    processor = BandProcessor(ProcessorConfig(num_samples=2, power_std=0.4), SR)
    processor.update(target, generator=torch.Generator().manual_seed(0))
    x0 = processor.project(target)
    alpha_bars = schedule.alpha_bars()

    def oracle(x: torch.Tensor, t: int, latents: torch.Tensor) -> torch.Tensor:
        return (x - alpha_bars[t].sqrt() * x0) / (1 - alpha_bars[t]).sqrt()

    est = evaluate.regenerate_band(oracle, processor, schedule, torch.zeros(2, 128, 15), 4800, 50, seed=0)
    assert evaluate.si_sdr(est, target) > 20  # 8-band EQ round trip is not exact
    scores, unrelated = (
        evaluate.score(est, target, SR),
        evaluate.score(torch.randn_like(target) * target.std(), target, SR),
    )
    assert scores["si_sdr"] > 20 and unrelated["si_sdr"] < 0
    assert scores["mel"] < unrelated["mel"] and scores["stft"] < unrelated["stft"]
