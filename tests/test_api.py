"""`mbd.decode`: tensors and arrays in, the same kind out; [K, T], [B, K, T], HF [1, B, K, T] and lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mbd
from mbd import checkpoint
from mbd.tokens import TokenError
from tests.conftest import GOLDEN


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "nq4.safetensors"
    checkpoint.convert(GOLDEN / "mbd_comp_4_reduced.pt", path)
    return path


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
