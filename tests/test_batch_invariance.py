"""A clip's seeded output does not depend on its batch: `mbd.decode`, `mbd.vocode`, `generate` with per-clip
generators (chunked too) and the `mbd` command give each clip bit-identical audio on a CPU whatever it is
batched with and whatever the batch size; the same seed repeats it, another seed changes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import mbd
import mbd.fused
import mbd.pipeline
from mbd import cli
from mbd.noise import clip_generators, clip_seed
from mbd.options import RuntimeOptions
from tests.conftest import tiny_diffusion_model, tiny_mel_model

SR = 24000


@pytest.fixture(scope="module")
def mel_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "mel.safetensors"
    tiny_mel_model().save(path)
    return path


def codes(seed: int, frames: int = 6) -> torch.Tensor:
    return torch.randint(0, 1024, (4, frames), generator=torch.Generator().manual_seed(seed))


def mel(seed: int, frames: int = 12) -> torch.Tensor:
    return torch.randn(100, frames, generator=torch.Generator().manual_seed(seed)) - 4.0


def test_clip_seed_depends_on_seed_and_content_only() -> None:
    a = codes(0)
    assert clip_seed(0, a) == clip_seed(0, a.clone()) and 0 <= clip_seed(0, a) < 2**63
    assert clip_seed(0, a) != clip_seed(1, a)
    b = a.clone()
    b[0, 0] += 1
    assert clip_seed(0, a) != clip_seed(0, b)
    assert clip_seed(0, a) != clip_seed(0, a.int())  # the dtype is part of the content
    assert clip_seed(0, a) != clip_seed(0, a.reshape(2, 12))  # and so is the shape
    g0, g1 = clip_generators(5, torch.stack([a, b]), "cpu")
    want = torch.Generator().manual_seed(clip_seed(5, a))
    assert torch.equal(torch.randn(8, generator=g0), torch.randn(8, generator=want))
    (alone,) = clip_generators(5, a[None], "cpu")
    assert not torch.equal(torch.randn(8, generator=g1), torch.randn(8, generator=alone))


def test_decode_is_batch_invariant(tiny_token_file: Path, encodec_weights: Path) -> None:
    def run(tokens, seed: int = 3):  # noqa: ANN001, ANN202
        return mbd.decode(tokens, tiny_token_file, steps=2, seed=seed, device="cpu", codec_weights=encodec_weights)[0]

    a, b, c = codes(0), codes(1), codes(2)
    alone = run(a)  # [1, L]
    assert torch.equal(run(torch.stack([a, b]))[0], alone)
    assert torch.equal(run([b, c, a, codes(3, frames=9)])[2], alone)  # a list, grouped by length
    assert not torch.equal(run(a, seed=4), alone)
    pair = run(torch.stack([a, a]))  # identical content, identical output
    assert torch.equal(pair[0], pair[1])


def test_vocode_is_batch_invariant(mel_model: Path) -> None:
    def run(m, seed: int = 3):  # noqa: ANN001, ANN202
        return mbd.vocode(m, mel_model, steps=3, seed=seed, device="cpu")[0]

    a, b, c = mel(0), mel(1), mel(2)
    alone = run(a)
    assert alone.shape == (1, 12 * 256)
    assert torch.equal(run(torch.stack([a, b]))[0], alone)
    assert torch.equal(run(torch.stack([c, b, a]))[2], alone)
    assert np.array_equal(run(torch.stack([b, a]).numpy())[1], alone.numpy())
    assert torch.equal(run(a), alone) and not torch.equal(run(a, seed=4), alone)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("sampler", ["ddpm", "dpm++2m"])
def test_generate_with_clip_generators_chunked(fused: bool, sampler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked decoding draws each clip's stream chunk by chunk: still independent of the batch."""
    monkeypatch.setattr(mbd.fused, "CPU_MIN_WIDTH", 0)  # fuse this tiny model when asked (not worth it on CPU)
    fused_runs: list[int] = []
    sample_fused = mbd.pipeline.sample_fused
    monkeypatch.setattr(mbd.pipeline, "sample_fused", lambda *a, **k: fused_runs.append(1) or sample_fused(*a, **k))
    model = tiny_diffusion_model(n_bands=2)
    latents = torch.randn(3, 8, 10, generator=torch.Generator().manual_seed(0))
    options = RuntimeOptions(fused=fused, chunk_seconds=4 * 320 / SR, overlap_seconds=320 / SR)
    kw = dict(steps=model.step_list(3, sampler), sampler=sampler, options=options)
    both = model.generate(latents, generator=clip_generators(1, latents, "cpu"), **kw)
    for i in range(3):
        one = latents[i : i + 1]
        assert torch.equal(model.generate(one, generator=clip_generators(1, one, "cpu"), **kw)[0], both[i])
    pair = latents[[2, 0]]
    assert torch.equal(model.generate(pair, generator=clip_generators(1, pair, "cpu"), **kw), both[[2, 0]])
    assert not torch.equal(model.generate(latents, generator=clip_generators(2, latents, "cpu"), **kw), both)
    assert bool(fused_runs) == fused


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """The float audio the CLI writes, by file name (before the 16-bit quantisation of the file)."""
    out: dict[str, torch.Tensor] = {}
    real = cli.write_audio

    def record(path, wav, sample_rate, *, overwrite):  # noqa: ANN001, ANN202
        out[Path(path).name] = wav.clone()
        return real(path, wav, sample_rate, overwrite=overwrite)

    monkeypatch.setattr(cli, "write_audio", record)
    return out


def _cli(*args: str) -> None:
    assert cli.main([*args, "--steps", "2", "--device", "cpu"]) == 0


def test_cli_decode_batch_size(tmp_path: Path, tiny_token_file: Path, encodec_weights: Path, written) -> None:  # noqa: ANN001
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        np.save(tmp_path / f"{name}.npy", codes(seed).numpy())
    np.save(tmp_path / "copy.npy", codes(0).numpy())  # a's content under another name
    model = ["--model", str(tiny_token_file), "--codec-weights", str(encodec_weights)]
    results = {}
    for run, (names, batch) in enumerate([(["a"], 1), (["a", "b", "copy"], 2), (["c", "a"], 3)]):
        out = tmp_path / f"out{run}"
        _cli("decode", *(str(tmp_path / f"{n}.npy") for n in names), "-o", str(out), "--seed", "0",
             "--batch-size", str(batch), *model)
        results[run] = {name: written[f"{name}.wav"].clone() for name in names}
    a = results[0]["a"]
    assert all(torch.equal(r["a"], a) for r in results.values())
    assert torch.equal(results[1]["copy"], a)  # identical content, identical output, whatever its name
    assert not torch.equal(results[1]["b"], a)
    chunked = tmp_path / "chunked"
    for batch in (1, 2):
        _cli("decode", str(tmp_path / "b.npy"), str(tmp_path / "a.npy"), "-o", str(chunked / str(batch)),
             "--seed", "0", "--batch-size", str(batch), "--chunk-seconds", str(3 * 320 / SR), *model)
        results[f"chunked{batch}"] = written["a.wav"].clone()
    assert torch.equal(results["chunked1"], results["chunked2"])


def test_cli_vocode_batch_size(tmp_path: Path, mel_model: Path, written) -> None:  # noqa: ANN001
    for name, seed in (("a", 0), ("b", 1)):
        np.save(tmp_path / f"{name}.npy", mel(seed).numpy())
    outs = []
    for batch, names in ((1, ["a"]), (2, ["b", "a"])):
        out = tmp_path / f"out{batch}"
        _cli("vocode", *(str(tmp_path / f"{n}.npy") for n in names), "-o", str(out), "--seed", "0",
             "--batch-size", str(batch), "--model", str(mel_model))
        outs.append(written["a.wav"].clone())
    assert torch.equal(outs[0], outs[1])


def _tones(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.2 * SR)) / SR
    for name, freq in (("x", 220), ("y", 330)):
        soundfile.write(folder / f"{name}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


@pytest.mark.parametrize("kind", ["tokens", "mel"])
def test_cli_regenerate_companions(tmp_path: Path, tiny_token_file: Path, mel_model: Path, encodec_weights: Path,
                                   kind: str, written) -> None:  # noqa: ANN001
    """`mbd regenerate x.wav y.wav --seed 0` gives the y that `mbd regenerate y.wav --seed 0` gives."""
    _tones(tmp_path)
    model = ["--model", str(mel_model)] if kind == "mel" else ["--model", str(tiny_token_file), "--codec-weights",
                                                                str(encodec_weights)]
    _cli("regenerate", str(tmp_path / "y.wav"), "-o", str(tmp_path / "alone"), "--seed", "0", *model)
    alone = written["y.wav"].clone()
    _cli("regenerate", str(tmp_path / "x.wav"), str(tmp_path / "y.wav"), "-o", str(tmp_path / "both"), "--seed", "0",
         *model)
    assert torch.equal(written["y.wav"], alone)
    assert not torch.equal(written["x.wav"], alone)
    _cli("regenerate", str(tmp_path / "y.wav"), "-o", str(tmp_path / "seed1"), "--seed", "1", *model)
    assert not torch.equal(written["y.wav"], alone)


def test_flow_bands_with_clip_generators() -> None:
    """Flow-matching bands pass one time per clip to the network: split with the clips as well."""
    import dataclasses

    model = tiny_diffusion_model(n_bands=2)
    for band in model.bands:
        band.config = dataclasses.replace(band.config, objective="flow")
    latents = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(0))
    both = model.generate(latents, steps=[999, 500, 0], generator=clip_generators(0, latents, "cpu"))
    for i in range(3):
        one = latents[i : i + 1]
        alone = model.generate(one, steps=[999, 500, 0], generator=clip_generators(0, one, "cpu"))
        assert torch.equal(alone[0], both[i])
