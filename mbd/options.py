"""How to run the decoder: sampler, precision, band fusion, compilation and chunking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .diffusion import SAMPLERS, Sampler
from .errors import InputError

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class InferenceOptions:
    """Args:
    sampler: "ddpm" (AudioCraft's ancestral loop), or the deterministic fewer-step solvers "ddim"
        (Song et al., 2021) and "dpm++2m" (Lu et al., 2022), which draw only the initial noise.
    fused: run all bands as one grouped network (`mbd.fused`) with the conditioning and step embeddings
        computed once per call; the same function as the band-by-band path up to float rounding. Falls back
        to the band-by-band path when the bands' U-Net configs differ. Keeps a second, fused copy of the
        weights after first use.
    dtype: precision of the network ("float32", "bfloat16", "float16"); the sampler state stays float32.
        Fused: the weights are cast once; band by band: autocast.
    compile: `torch.compile` the fused network (needs `fused`; compiles once per shape).
    chunk_seconds: decode in chunks of this many seconds (overlap included) and crossfade them, so that
        memory stays bounded on long audio; None decodes in one go. Noise is drawn chunk by chunk, so a seed
        reproduces the output for a given chunk size.
    overlap_seconds: overlap (context and crossfade) between chunks, rounded to latent frames.

    The defaults are the faithful path: AudioCraft's computation, float32, band by band.
    """

    sampler: Sampler = "ddpm"
    fused: bool = False
    dtype: DType = "float32"
    compile: bool = False
    chunk_seconds: float | None = None
    overlap_seconds: float = 0.25

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.compile and not self.fused:
            raise InputError("compile=True needs fused=True")
        if self.chunk_seconds is not None and self.chunk_seconds <= 0:
            raise InputError(f"chunk_seconds must be > 0, got {self.chunk_seconds}")
        if self.overlap_seconds < 0:
            raise InputError(f"overlap_seconds must be >= 0, got {self.overlap_seconds}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


FAITHFUL = InferenceOptions()
