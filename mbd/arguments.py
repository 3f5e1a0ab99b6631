"""The `mbd` command's flags: the parser, and the checks of every flag, done before any model loads.

Each check raises `CommandError` with a one-line message naming the flag as it is typed (`--chunk-seconds`).
"""

from __future__ import annotations

import argparse
import math
import zipfile
from pathlib import Path

import torch

from . import __version__
from .api import DEFAULT_MEL_MODEL, DEFAULT_MODEL
from .errors import CommandError, InputError
from .options import RuntimeOptions, SamplingOptions, runtime_options

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes seeds in [0, 2**64)


def _model_options(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL, codec: bool = True) -> None:
    parser.add_argument("--model", default=default, help=f"pretrained name or checkpoint path ({default})")
    if codec:
        parser.add_argument("--codec-weights", help="local codec weights file instead of the cached download")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if present)")


def _decode_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps", type=int, help="sampler steps (default 20 for ddpm, 10 otherwise; the model's step count "
        "for the full chain)"
    )
    parser.add_argument(
        "--seed", type=int, help=f"seed for reproducible output, 0 to {SEED_LIMIT - 1}; each file's noise comes from "
        "the seed and its content, so its output does not depend on the other files or --batch-size"
    )
    parser.add_argument("--sampler", choices=["ddpm", "ddim", "dpm++2m"], default="ddpm")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument(
        "--fused",
        action=argparse.BooleanOptionalAction,
        help="run the bands as one grouped network (default: on a GPU yes; on CPU no, as it holds a second copy "
        "of the weights)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the fused network (implies --fused)")
    parser.add_argument("--chunk-seconds", type=float, help="decode long audio in crossfaded chunks")
    _memory_option(parser)


def _memory_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-memory", help="refuse jobs estimated to need more memory, e.g. 8G or 512M (default: $MBD_MAX_MEMORY, "
        "else 90%% of the available memory)"
    )


def _outputs(parser: argparse.ArgumentParser, what: str, suffixes: str) -> None:
    parser.add_argument(
        "-o", "--output", required=True, type=Path,
        help=f"output {what} file ({suffixes}, one input only), or folder (an existing one, or a name without "
        "an extension)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbd", description="Multi-Band Diffusion: codec tokens to audio.")
    parser.add_argument("--version", action="version", version=f"mbd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decode", help="token files (.npy, .npz, .pt, .ecdc) to audio")
    p.add_argument("inputs", nargs="+", help="files, folders (recursive) or globs")
    _outputs(p, "audio", ".wav or .flac")
    p.add_argument("--format", choices=["wav", "flac"], default="wav", help="audio format for folder output")
    p.add_argument("--batch-size", type=int, default=1, help="clips of equal length decoded together")
    _model_options(p)
    _decode_options(p)

    p = sub.add_parser("vocode", help="log-mel spectrograms (.npy, [n_mels, T] or [B, n_mels, T]) to audio")
    p.add_argument("inputs", nargs="+", help="files, folders (recursive) or globs")
    _outputs(p, "audio", ".wav or .flac")
    p.add_argument("--format", choices=["wav", "flac"], default="wav", help="audio format for folder output")
    p.add_argument("--batch-size", type=int, default=1, help="mels of equal length vocoded together")
    _model_options(p, DEFAULT_MEL_MODEL, codec=False)
    _decode_options(p)

    p = sub.add_parser("regenerate", help="audio -> codec tokens (or log-mel with a mel model) -> MBD audio")
    p.add_argument("inputs", nargs="+", help="audio files, folders or globs")
    _outputs(p, "audio", ".wav or .flac")
    p.add_argument("--format", choices=["wav", "flac"], default="wav")
    _model_options(p)
    _decode_options(p)

    p = sub.add_parser("encode", help="audio to EnCodec 24 kHz tokens (.npy or .ecdc)")
    p.add_argument("inputs", nargs="+", help="audio files, folders or globs")
    _outputs(p, "token", ".npy or .ecdc")
    p.add_argument("--format", choices=["npy", "ecdc"], default="npy")
    p.add_argument("--bandwidth", type=float, default=3.0, help="kbps: 1.5, 3, 6, 12 or 24 (default 3)")
    p.add_argument("--codec-weights", help="local EnCodec weights file instead of the cached download")
    _memory_option(p)

    p = sub.add_parser("convert", help="AudioCraft .pt/.th checkpoint to our .safetensors format")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path, help="a .safetensors file (missing folders are created)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("info", help="what a token file, checkpoint or audio file holds")
    p.add_argument("files", nargs="+", type=Path)

    sub.add_parser("models", help="pretrained models, their licences and whether they are cached")
    sub.add_parser("train", help="train band models from a TOML recipe (see `mbd train --help`)", add_help=False)
    return parser


def check_device(value: str | None) -> None:
    """`--device` must parse as a torch device of a kind that is present (a CUDA index that exists)."""
    if value is None:
        return
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise CommandError(f"--device {value}: not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CommandError(f"--device {value}: no CUDA GPU is available")
        if (device.index or 0) >= count:
            raise CommandError(f"--device {value}: there are {count} CUDA GPU(s), numbered from 0")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CommandError(f"--device {value}: Apple's MPS device is not available")
    elif device.type != "cpu":
        raise CommandError(f"--device {value}: unsupported device type; use cpu, cuda or mps")


def check_codec_weights(value: str | None) -> None:
    """`--codec-weights` must name a file holding a dict of tensors (loaded with `weights_only`, so no pickle
    code runs), or a folder (a Hugging Face codec such as MusicGen's 32 kHz EnCodec, checked by its loader)."""
    if value is None:
        return
    path = Path(value)
    if path.is_dir():
        return
    if not path.is_file():
        raise CommandError(f"--codec-weights {value}: {'not a regular file' if path.exists() else 'no such file'}")
    try:
        # Memory-mapped where the format allows (zip, not legacy pickles), so that checking does not read the
        # whole file before the loader reads it again.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - torch.load raises many types on damaged or foreign bytes
        raise CommandError(f"--codec-weights {value}: not a PyTorch weights file ({type(err).__name__})") from None
    if not isinstance(state, dict) or not state or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CommandError(f"--codec-weights {value}: not a state dict of codec weights (name -> tensor)")


def decoding_options(args: argparse.Namespace) -> tuple[SamplingOptions, RuntimeOptions]:
    """The sampling and runtime options of a decoding command (defaults from `runtime_options`), every flag
    checked: `--steps`, `--seed`, `--batch-size`, `--chunk-seconds`, `--device` and `--codec-weights`."""
    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps must be >= 1, got {args.steps}")
    if args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
        raise CommandError(f"--seed must be in [0, 2**64), got {args.seed}")
    if getattr(args, "batch_size", 1) < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.chunk_seconds is not None and not (math.isfinite(args.chunk_seconds) and args.chunk_seconds > 0):
        raise CommandError(f"--chunk-seconds must be > 0 and finite, got {args.chunk_seconds}")
    check_device(args.device)
    check_codec_weights(getattr(args, "codec_weights", None))
    try:
        runtime = runtime_options(
            args.device, fused=args.fused, compile=args.compile, dtype=args.dtype, chunk_seconds=args.chunk_seconds
        )
        return SamplingOptions(args.sampler, args.steps, args.seed), runtime
    except InputError as err:
        raise CommandError(f"bad options: {err}") from None


def check_steps(sampling: SamplingOptions, model: object) -> None:
    """`--steps` against the loaded model (a step count above its diffusion steps is refused)."""
    try:
        sampling.step_list(model)  # type: ignore[arg-type]
    except InputError as err:
        raise CommandError(f"--steps {sampling.steps}: {err}") from None
