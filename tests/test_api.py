"""`mbd.decode`: tensors and arrays in, the same kind out; [K, T], [B, K, T], HF [1, B, K, T] and lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mbd
from mbd import checkpoint
from mbd.tokens import TokenError


@pytest.fixture(scope="module")
def model_path(tiny_token_file: Path) -> Path:
    """A tiny random token model on EnCodec 24 kHz with 4 codebooks."""
    return tiny_token_file


def _decode(tokens, model_path: Path, weights: Path, **kwargs):
    return mbd.decode(tokens, model_path, steps=2, seed=3, device="cpu", codec_weights=weights, **kwargs)


def test_shapes_and_kinds(model_path: Path, encodec_weights: Path) -> None:
    codes = torch.randint(0, 1024, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    batch, sr = _decode(codes, model_path, encodec_weights)
    assert sr == 24000 and isinstance(batch, torch.Tensor) and batch.shape == (2, 1, 6 * 320)
    single, _ = _decode(codes[0].numpy(), model_path, encodec_weights)
    assert isinstance(single, np.ndarray) and single.shape == (1, 6 * 320)
    hf, _ = _decode(codes[None], model_path, encodec_weights)
    assert hf.shape == (2, 1, 6 * 320)
    # seeded: the same call gives the same audio; each clip is equalised on its own
    again, _ = _decode(codes, model_path, encodec_weights)
    assert torch.equal(batch, again)
    assert torch.isfinite(batch).all()


def test_list_of_different_lengths(model_path: Path, encodec_weights: Path) -> None:
    g = torch.Generator().manual_seed(1)
    clips = [torch.randint(0, 1024, (4, t), generator=g) for t in (5, 8, 5)]
    outs, sr = _decode(clips, model_path, encodec_weights)
    assert [o.shape for o in outs] == [(1, 5 * 320), (1, 8 * 320), (1, 5 * 320)]
    alone, _ = _decode(clips[1], model_path, encodec_weights)
    assert torch.equal(alone, outs[1])  # each clip's own noise stream: the same alone as in a list
    first, _ = _decode(clips[0], model_path, encodec_weights)
    assert torch.equal(first, outs[0]) and not torch.equal(outs[0], outs[2])


def test_bad_tokens(model_path: Path, encodec_weights: Path) -> None:
    with pytest.raises(TokenError, match="8 codebooks"):
        _decode(np.zeros((8, 10), dtype=np.int64), model_path, encodec_weights)
    with pytest.raises(TokenError, match="integers"):
        _decode(np.zeros((4, 10), dtype=np.float32), model_path, encodec_weights)
    with pytest.raises(TokenError, match="chunks"):
        _decode(torch.zeros(2, 1, 4, 10, dtype=torch.long), model_path, encodec_weights)


# --- memory estimates and the final guard on outputs ------------------------------------------------------


def test_long_tokens_are_refused_by_the_memory_estimate_before_work(model_path: Path, encodec_weights: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """100 minutes of tokens ([4, 450000]) without chunking: refused at once, suggesting --chunk-seconds."""
    from mbd.memory import MemoryLimitError
    from mbd.pipeline import MultiBandDiffusion

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoding started")

    monkeypatch.setattr(MultiBandDiffusion, "tokens_to_wav", no_work)
    codes = torch.zeros(4, 450_000, dtype=torch.long)
    with pytest.raises(MemoryLimitError, match=r"^tokens: needs about .* GB, over the 8\.0 GB .*--chunk-seconds"):
        _decode(codes, model_path, encodec_weights, max_memory="8G")
    monkeypatch.setenv("MBD_MAX_MEMORY", "1M")  # the environment variable when no argument is given
    with pytest.raises(MemoryLimitError, match="over the 1 MB memory limit"):
        _decode(torch.zeros(4, 20, dtype=torch.long), model_path, encodec_weights)


def test_check_output_refuses_nan() -> None:
    from mbd.api import check_output
    from mbd.errors import OutputError

    wav = torch.zeros(2, 1, 10)
    assert check_output(wav, "x") is wav
    wav[1, 0, 3] = float("inf")
    with pytest.raises(OutputError, match=r"^x\.npy: the model produced 1 NaN or infinite samples"):
        check_output(wav, "x.npy")


def test_nan_weights_never_give_a_nan_output(tmp_path: Path, model_path: Path, encodec_weights: Path) -> None:
    """A model file with NaN weights is refused at load, so mbd.decode cannot return NaN."""
    config, tensors = checkpoint.load(model_path)
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    path = tmp_path / "nan.safetensors"
    checkpoint.save(path, config, tensors)
    with pytest.raises(checkpoint.CheckpointError, match=f"nan.safetensors: tensor {name} holds NaN"):
        _decode(torch.zeros(4, 5, dtype=torch.long), path, encodec_weights)


def test_cli_max_memory_refuses_a_file_before_work(tmp_path: Path, model_path: Path, encodec_weights: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    from mbd.cli import main

    np.save(tmp_path / "x.npy", np.zeros((4, 30), dtype=np.int64))
    args = ["--model", str(model_path), "--codec-weights", str(encodec_weights), "--device", "cpu", "--steps", "2"]
    code = main(["decode", str(tmp_path / "x.npy"), "-o", str(tmp_path / "out"), "--max-memory", "1M", *args])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'x.npy'}: needs about" in err and "--chunk-seconds" in err
    assert not list(tmp_path.glob("out/*"))
