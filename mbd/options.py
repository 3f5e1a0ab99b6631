"""How to decode: what to sample (`SamplingOptions`) and how to run the network (`RuntimeOptions`).

`runtime_options` is the one place that decides the runtime defaults (the device, and fusion on a GPU);
`mbd.decode`, `mbd.vocode` and the `mbd` command all go through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from .diffusion import SAMPLERS, Sampler
from .errors import InputError
from .noise import clip_generators

if TYPE_CHECKING:
    from .pipeline import MultiBandDiffusion

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class SamplingOptions:
    """Args:
    sampler: "ddpm" (AudioCraft's ancestral loop), or the deterministic fewer-step solvers "ddim"
        (Song et al., 2021) and "dpm++2m" (Lu et al., 2022), which draw only the initial noise.
    steps: sampler evaluations; None is AudioCraft's 20-step list for "ddpm", 10 for the others
        (see `MultiBandDiffusion.step_list`).
    seed: seed of every random draw, combined with each clip's content into that clip's own stream
        (`generators`); None draws from torch's global generator.
    """

    sampler: Sampler = "ddpm"
    steps: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")

    def step_list(self, model: MultiBandDiffusion) -> list[int] | None:
        """The step list for `model`; None for the model's default."""
        return None if self.steps is None else model.step_list(self.steps, self.sampler)

    def generators(self, device: torch.device | str, clips: torch.Tensor) -> list[torch.Generator] | None:
        """One generator on `device` per clip of `clips` `[B, ...]` (the input as the model reads it: codes,
        log-mels or audio), each seeded from `seed` and the clip's content (`mbd.noise.clip_seed`), so that a
        clip's output depends on neither its file name nor its batch; None (torch's global generator) without
        a seed."""
        return None if self.seed is None else clip_generators(self.seed, clips, device)


@dataclass(frozen=True)
class RuntimeOptions:
    """Args:
    device: where `mbd.decode`, `mbd.vocode` and the CLI load the model ("cpu", "cuda", "cuda:1", ...); None
        is the model's device (a model's own methods always run where the model is).
    dtype: precision of the network ("float32", "bfloat16", "float16"); the sampler state stays float32.
        Fused: the weights are cast once; band by band: autocast.
    fused: run all bands as one grouped network (`mbd.fused`) with the conditioning and step embeddings
        computed once per call; the same function as the band-by-band path up to float rounding. Falls back
        to the band-by-band path when the bands' U-Net configs differ. Keeps a second, fused copy of the
        weights after first use.
    compile: `torch.compile` the fused network (needs `fused`; compiles once per shape).
    chunk_seconds: decode in chunks of this many seconds (overlap included) and crossfade them, so that
        memory stays bounded on long audio; None decodes in one go. Noise is drawn chunk by chunk, so a seed
        reproduces the output for a given chunk size.
    overlap_seconds: overlap (context and crossfade) between chunks, rounded to latent frames.

    The defaults are the faithful path: AudioCraft's computation, float32, band by band; `runtime_options`
    gives the defaults for a device.
    """

    device: str | None = None
    dtype: DType = "float32"
    fused: bool = False
    compile: bool = False
    chunk_seconds: float | None = None
    overlap_seconds: float = 0.25

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.compile and not self.fused:
            raise InputError("compile=True needs fused=True")
        if self.chunk_seconds is not None and not (math.isfinite(self.chunk_seconds) and self.chunk_seconds > 0):
            raise InputError(f"chunk_seconds must be > 0 and finite, got {self.chunk_seconds}")
        if not (math.isfinite(self.overlap_seconds) and self.overlap_seconds >= 0):
            raise InputError(f"overlap_seconds must be >= 0 and finite, got {self.overlap_seconds}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


FAITHFUL = RuntimeOptions()


def runtime_options(
    device: str | torch.device | None = None,
    *,
    fused: bool | None = None,
    compile: bool = False,
    dtype: DType = "float32",
    chunk_seconds: float | None = None,
) -> RuntimeOptions:
    """The runtime defaults, decided here only: the first GPU when there is one, else the CPU; bands fused on
    a GPU and not on a CPU (where the fused copy of the weights costs memory and gains little:
    benchmarks/README.md); `compile` implies `fused`.

    Args:
        device: "cpu", "cuda", "cuda:1", ...; None picks the GPU when torch sees one.
        fused: None for the device's default.
        compile, dtype, chunk_seconds: as in `RuntimeOptions`.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    fused = compile or (device.type == "cuda" if fused is None else fused)
    return RuntimeOptions(
        device=str(device), dtype=dtype, fused=fused, compile=compile, chunk_seconds=chunk_seconds
    )
