"""mbd.options: sampling and runtime options, and the one function that decides the runtime defaults."""

from __future__ import annotations

import pytest
import torch

from mbd.options import FAITHFUL, RuntimeOptions, SamplingOptions, runtime_options
from tests.conftest import tiny


def test_runtime_defaults_follow_the_device() -> None:
    """A pure function of its arguments: "cuda" is only parsed, so no GPU is needed."""
    cpu = runtime_options("cpu")
    assert cpu.device == "cpu" and not cpu.fused and not cpu.compile and cpu.dtype == "float32"
    assert runtime_options("cuda").fused and runtime_options("cuda").device == "cuda"
    assert runtime_options("cuda:1").fused and runtime_options("cuda:1").device == "cuda:1"
    assert runtime_options(torch.device("cuda", 0)).device == "cuda:0"
    assert not runtime_options("cuda", fused=False).fused and runtime_options("cpu", fused=True).fused
    assert runtime_options("cpu", compile=True).fused  # compile implies fused
    assert runtime_options("cpu", dtype="bfloat16", chunk_seconds=3.0).chunk_seconds == 3.0


def test_runtime_default_device_is_the_gpu_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime_options() == RuntimeOptions(device="cuda", fused=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime_options() == RuntimeOptions(device="cpu", fused=False)


def test_runtime_options_checks() -> None:
    assert FAITHFUL == RuntimeOptions() and not FAITHFUL.fused and FAITHFUL.torch_dtype == torch.float32
    assert RuntimeOptions(dtype="float16").torch_dtype == torch.float16
    with pytest.raises(ValueError, match="compile=True needs fused=True"):
        RuntimeOptions(compile=True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        RuntimeOptions(dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_seconds must be > 0"):
        RuntimeOptions(chunk_seconds=0)
    with pytest.raises(ValueError, match="overlap_seconds must be >= 0"):
        RuntimeOptions(overlap_seconds=-1)


def test_sampling_options() -> None:
    model = tiny()
    clips = torch.zeros(2, 4, 3, dtype=torch.long)
    assert SamplingOptions().step_list(model) is None and SamplingOptions().generators(model.device, clips) is None
    # every 100th of the 1000 training steps, then 0 (AudioCraft's stride for 10 evaluations)
    assert SamplingOptions(steps=10).step_list(model) == [999, *range(899, 0, -100), 0]
    assert len(SamplingOptions("ddim", steps=7).step_list(model)) == 8
    a, b = SamplingOptions(seed=3).generators(torch.device("cpu"), clips)  # identical clips, identical streams
    assert torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))
    with pytest.raises(ValueError, match="sampler must be one of"):
        SamplingOptions("euler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be >= 1"):
        SamplingOptions(steps=0)
