"""How much memory a job will need, checked against a limit before any work is done.

The estimates are linear in the audio a step holds at once (a chunk with `--chunk-seconds`, else the whole
clip) and were fitted to the peak resident memory of CPU runs (benchmarks/long_audio.py re-measures them):
per output sample and clip, EnCodec's decoder holds about 1.2 kB and its encoder 0.55 kB, a U-Net band model
about 40 bytes per hidden channel (10 float32 activations of the first level), the 32-band re-EQ 0.3 kB
and the spectral vocoder 0.3 kB. They are rounded up by `MARGIN`.

The limit is `--max-memory`, else the environment variable `MBD_MAX_MEMORY`, else 90 % of the memory the
system reports as available.
"""

from __future__ import annotations

import os
import re

from .codec import ENCODE_CHUNK_SECONDS
from .errors import InputError

MARGIN = 1.5
CODEC_DECODE = 1200
CODEC_ENCODE = 550
UNET_PER_CHANNEL = 40
RE_EQ = 300
SPECTRAL = 300
BUFFERS = 16
"""Bytes per output sample and clip: the output, the reference decode and a copy on the way to the file."""

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class MemoryLimitError(InputError):
    """A job would need more memory than the limit allows."""


def parse_size(text: str) -> int:
    """`"8G"`, `"512M"`, `"1.5GiB"`, `"2000000000"` -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", text.upper())
    if match is None or float(match[1]) <= 0:
        raise MemoryLimitError(f"cannot read memory size {text!r} (say e.g. 8G, 512M or a byte count)")
    return int(float(match[1]) * _UNITS[match[2]])


def available_bytes() -> int:
    """Memory the system can give this process now (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(option: str | None = None) -> int:
    """The limit in bytes: `option`, else `$MBD_MAX_MEMORY`, else 90 % of `available_bytes()`."""
    text = option if option is not None else os.environ.get("MBD_MAX_MEMORY")
    return parse_size(text) if text else int(0.9 * available_bytes())


def format_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def check_memory(needed: float, limit: int, what: str, advice: str = "") -> None:
    """Raise `MemoryLimitError` naming `what` if `needed` bytes exceed `limit`."""
    if needed > limit:
        hint = f"; {advice}" if advice else ""
        raise MemoryLimitError(
            f"{what}: needs about {format_bytes(needed)}, over the {format_bytes(limit)} memory limit{hint} "
            "(or raise the limit with --max-memory or MBD_MAX_MEMORY)"
        )


def unet_bytes(batch: int, span: int, hidden: int, n_bands: int, fused: bool) -> float:
    """Activations of the band U-Nets for `batch` clips of `span` samples (bands one at a time unless fused)."""
    return MARGIN * batch * span * UNET_PER_CHANNEL * hidden * (n_bands if fused else 1)


def pipeline_bytes(batch: int, samples: int, span: int, *, codec_decode: bool, re_eq: bool) -> float:
    """What surrounds the diffusion: output buffers for `samples`, the codec decode and re-EQ per `span`."""
    per_span = (CODEC_DECODE if codec_decode else 0) + (RE_EQ if re_eq else 0)
    return MARGIN * batch * (samples * BUFFERS + span * per_span)


def encode_bytes(batch: int, samples: int, sample_rate: int) -> float:
    """EnCodec's encoder on `batch` clips of `samples` samples, which it encodes in pieces of at most
    `mbd.codec.ENCODE_CHUNK_SECONDS`."""
    return MARGIN * batch * min(samples, int(ENCODE_CHUNK_SECONDS * sample_rate)) * CODEC_ENCODE


def spectral_bytes(batch: int, span: int) -> float:
    """The spectral vocoder (`mbd.spectral_mbd`) on `batch` clips of `span` samples."""
    return MARGIN * batch * span * SPECTRAL


def job_bytes(model: object, batch: int, samples: int, runtime: object, *, encode: bool = False,
              re_eq: bool = True) -> float:
    """The estimated peak of running `model` on `batch` clips of `samples` output samples.

    Args:
        model: a `MultiBandDiffusion` (its bands' U-Net widths, `runtime.fused`, `runtime.chunk_seconds`
            bound the U-Net's span) or a `SpectralMBD` (no chunking: the whole clip).
        runtime: the `RuntimeOptions` of the job.
        encode: the job first encodes the audio with the codec (`regenerate` of a token model).
        re_eq: the output is re-EQ'd (against the codec decode for token models); `regenerate` is not.
    """
    bands = getattr(model.config, "bands", None)
    if bands is None:  # a spectral model vocodes the whole clip at once
        total = spectral_bytes(batch, samples) + pipeline_bytes(batch, samples, samples, codec_decode=False,
                                                                re_eq=False)
    else:
        chunk = runtime.chunk_seconds
        span = samples if chunk is None else min(samples, max(1, int(chunk * model.sample_rate)))
        hidden = max(band.unet.hidden for band in bands)
        total = unet_bytes(batch, span, hidden, len(bands), runtime.fused)
        total += pipeline_bytes(batch, samples, span, codec_decode=re_eq and model.codec is not None, re_eq=re_eq)
    return total + (encode_bytes(batch, samples, model.sample_rate) if encode else 0)


def check_job(model: object, batch: int, samples: int, runtime: object, max_memory: str | None, what: str, *,
              encode: bool = False, re_eq: bool = True) -> None:
    """Refuse (`MemoryLimitError` naming `what`) a job whose `job_bytes` exceed `memory_limit(max_memory)`."""
    chunkable = getattr(model.config, "bands", None) is not None and runtime.chunk_seconds is None
    advice = ("decode it in chunks: --chunk-seconds 30 (chunk_seconds=30 in the API)" if chunkable
              else "split the input into shorter pieces")
    needed = job_bytes(model, batch, samples, runtime, encode=encode, re_eq=re_eq)
    check_memory(needed, memory_limit(max_memory), what, advice)
