"""mbd.options: InferenceOptions accepts the documented values, rejects the rest with clear errors, and is frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mbd.options import FAITHFUL, InferenceOptions


def test_defaults_are_the_faithful_path() -> None:
    assert FAITHFUL == InferenceOptions()
    assert (FAITHFUL.sampler, FAITHFUL.fused, FAITHFUL.dtype, FAITHFUL.compile) == ("ddpm", False, "float32", False)
    assert FAITHFUL.chunk_seconds is None and FAITHFUL.overlap_seconds == 0.25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": "ddim"},
        {"sampler": "dpm++2m", "dtype": "bfloat16"},
        {"fused": True, "compile": True, "dtype": "float16"},
        {"chunk_seconds": 0.01, "overlap_seconds": 0.0},
        {"chunk_seconds": 30.0, "overlap_seconds": 5.0},
    ],
)
def test_valid_options(kwargs: dict) -> None:
    options = InferenceOptions(**kwargs)
    assert all(getattr(options, key) == value for key, value in kwargs.items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "euler"}, r"sampler must be one of ddpm, ddim, dpm\+\+2m, got 'euler'"),
        ({"sampler": "DDPM"}, "sampler must be one of"),
        ({"dtype": "float64"}, "dtype must be one of float32, bfloat16, float16, got 'float64'"),
        ({"dtype": torch.float16}, "dtype must be one of"),
        ({"compile": True}, "compile=True needs fused=True"),
        ({"chunk_seconds": 0.0}, "chunk_seconds must be > 0, got 0.0"),
        ({"chunk_seconds": -1.0}, "chunk_seconds must be > 0"),
        ({"overlap_seconds": -0.1}, "overlap_seconds must be >= 0, got -0.1"),
    ],
    ids=["sampler", "sampler-case", "dtype", "dtype-torch", "compile", "chunk-zero", "chunk-negative", "overlap"],
)
def test_invalid_options_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InferenceOptions(**kwargs)


def test_replace_is_validated_too() -> None:
    with pytest.raises(ValueError, match="compile=True needs fused=True"):
        dataclasses.replace(InferenceOptions(fused=True, compile=True), fused=False)


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAITHFUL.fused = True  # type: ignore[misc]


@pytest.mark.parametrize(
    "dtype, want", [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]
)
def test_torch_dtype(dtype: str, want: torch.dtype) -> None:
    assert InferenceOptions(dtype=dtype).torch_dtype is want
