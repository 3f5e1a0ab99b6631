"""The `mbd` command: decode, vocode, encode, regenerate, convert, info, models and train."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from . import __version__
from .api import DEFAULT_MEL_MODEL, DEFAULT_MODEL, decode_codes, load_model, vocode_mels
from .arrays import ArrayTooLarge, load_npy
from .audio import AUDIO_SUFFIXES, read_audio, write_audio
from .batch import MEL_SUFFIXES, TOKEN_SUFFIXES, Item, Report, expand_inputs, output_path
from .codec import validate_codes
from .errors import AudioError, CommandError, InputError, MBDError, MelError, TokenError
from .hub import DownloadError, LicenceNotice
from .memory import MemoryLimitError, check_job, check_memory, encode_bytes, memory_limit
from .options import RuntimeOptions, SamplingOptions, runtime_options
from .tokens import read_tokens, write_tokens

OUTPUT_AUDIO = (".wav", ".flac")


def _model_options(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL, codec: bool = True) -> None:
    parser.add_argument("--model", default=default, help=f"pretrained name or checkpoint path ({default})")
    if codec:
        parser.add_argument("--codec-weights", help="local codec weights file instead of the cached download")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if present)")


def _decode_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, help="sampler steps (default 20 for ddpm, 10 otherwise)")
    parser.add_argument("--seed", type=int, help="seed for reproducible output")
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


def _outputs(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", required=True, type=Path, help=f"output {what} file, or folder")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbd", description="Multi-Band Diffusion: codec tokens to audio.")
    parser.add_argument("--version", action="version", version=f"mbd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decode", help="token files (.npy, .npz, .pt, .ecdc) to audio")
    p.add_argument("inputs", nargs="+", help="files, folders (recursive) or globs")
    _outputs(p, "audio")
    p.add_argument("--format", choices=["wav", "flac"], default="wav", help="audio format for folder output")
    p.add_argument("--batch-size", type=int, default=1, help="clips of equal length decoded together")
    _model_options(p)
    _decode_options(p)

    p = sub.add_parser("vocode", help="log-mel spectrograms (.npy, [n_mels, T] or [B, n_mels, T]) to audio")
    p.add_argument("inputs", nargs="+", help="files, folders (recursive) or globs")
    _outputs(p, "audio")
    p.add_argument("--format", choices=["wav", "flac"], default="wav", help="audio format for folder output")
    p.add_argument("--batch-size", type=int, default=1, help="mels of equal length vocoded together")
    _model_options(p, DEFAULT_MEL_MODEL, codec=False)
    _decode_options(p)

    p = sub.add_parser("regenerate", help="audio -> codec tokens (or log-mel with a mel model) -> MBD audio")
    p.add_argument("inputs", nargs="+", help="audio files, folders or globs")
    _outputs(p, "audio")
    p.add_argument("--format", choices=["wav", "flac"], default="wav")
    _model_options(p)
    _decode_options(p)

    p = sub.add_parser("encode", help="audio to EnCodec 24 kHz tokens (.npy or .ecdc)")
    p.add_argument("inputs", nargs="+", help="audio files, folders or globs")
    _outputs(p, "token")
    p.add_argument("--format", choices=["npy", "ecdc"], default="npy")
    p.add_argument("--bandwidth", type=float, default=3.0, help="kbps: 1.5, 3, 6, 12 or 24 (default 3)")
    p.add_argument("--codec-weights", help="local EnCodec weights file instead of the cached download")
    _memory_option(p)

    p = sub.add_parser("convert", help="AudioCraft .pt/.th checkpoint to our .safetensors format")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("info", help="what a token file, checkpoint or audio file holds")
    p.add_argument("files", nargs="+", type=Path)

    sub.add_parser("models", help="pretrained models, their licences and whether they are cached")
    sub.add_parser("train", help="train band models from a TOML recipe (see `mbd train --help`)", add_help=False)
    return parser


def _options(args: argparse.Namespace) -> tuple[SamplingOptions, RuntimeOptions]:
    """The sampling and runtime options of a decoding command (defaults from `runtime_options`)."""
    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps must be >= 1, got {args.steps}")
    runtime = runtime_options(
        args.device, fused=args.fused, compile=args.compile, dtype=args.dtype, chunk_seconds=args.chunk_seconds
    )
    return SamplingOptions(args.sampler, args.steps, args.seed), runtime


def _audio_suffix(args: argparse.Namespace, single: bool) -> str:
    if single and args.output.suffix.lower() in OUTPUT_AUDIO:
        return args.output.suffix.lower()
    return f".{args.format}"


def _free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (use --overwrite to replace it)")


def _planned_outputs(args: argparse.Namespace, item: Item, single: bool, suffix: str, count: int) -> list[Path]:
    """The output paths of an input holding `count` clips (numbered when more than one), each free to write."""
    outs = [output_path(args.output, item, single, suffix, b if count > 1 else None) for b in range(count)]
    for out in outs:
        _free(out, args.overwrite)
    return outs


def cmd_decode(args: argparse.Namespace) -> int:
    report = Report()
    sampling, runtime = _options(args)
    items = expand_inputs(args.inputs, TOKEN_SUFFIXES, report)
    if not items:
        return report.summary("decoded")
    mbd = load_model(args.model, runtime.device, args.codec_weights)
    if mbd.codec is None:
        raise CommandError(f"{args.model} is a mel model: use `mbd vocode` for mel spectrograms")

    def read(item: Item) -> torch.Tensor:
        token_file = read_tokens(item.path)
        codes = validate_codes(
            token_file.codes, n_q=mbd.config.codec.n_q, cardinality=mbd.codec.cardinality, name=str(item.path)
        )
        if token_file.sample_rate is not None and token_file.sample_rate != mbd.sample_rate:
            raise TokenError(
                f"{item.path}: tokens of a {token_file.sample_rate} Hz codec, but the model runs at "
                f"{mbd.sample_rate} Hz"
            )
        check_job(mbd, len(codes), codes.shape[-1] * mbd.hop_length, runtime, args.max_memory, str(item.path))
        return codes

    def run(codes: torch.Tensor) -> torch.Tensor:
        return decode_codes(mbd, codes, sampling, runtime, args.max_memory)

    _convert_files(mbd, items, read, TokenError, run, args, report)
    return report.summary("decoded")


def _read_mel(path: Path, mbd, report: Report) -> torch.Tensor:  # noqa: ANN001
    """A `.npy` log-mel as a checked `[B, n_mels, T]` tensor; value warnings become notes."""
    try:
        array = load_npy(path)
    except ArrayTooLarge as err:
        raise MelError(str(err)) from None
    except (OSError, ValueError) as err:
        raise MelError(f"{path}: not a readable .npy array ({err})") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mel = mbd.features.check(array, name=str(path))
    for warning in caught:
        report.note(path, str(warning.message).removeprefix(f"{path}: "))
    return mel


def cmd_vocode(args: argparse.Namespace) -> int:
    report = Report()
    sampling, runtime = _options(args)
    items = expand_inputs(args.inputs, MEL_SUFFIXES, report)
    if not items:
        return report.summary("vocoded")
    mbd = load_model(args.model, runtime.device, None)
    if mbd.features is None:
        raise CommandError(f"{args.model} is a codec-token model: use `mbd decode`, or a mel model such as mel24k")

    def run(mel: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # value warnings were already reported per file
            warnings.simplefilter("ignore", UserWarning)
            return vocode_mels(mbd, mel, sampling, runtime, args.max_memory)

    def read(item: Item) -> torch.Tensor:
        mel = _read_mel(item.path, mbd, report)
        check_job(mbd, len(mel), mel.shape[-1] * mbd.hop_length, runtime, args.max_memory, str(item.path))
        return mel

    _convert_files(mbd, items, read, MelError, run, args, report)
    return report.summary("vocoded")


def _convert_files(
    mbd,  # noqa: ANN001
    items: list[Item],
    read: Callable[[Item], torch.Tensor],
    error: type[Exception],
    run: Callable[[torch.Tensor], torch.Tensor],
    args: argparse.Namespace,
    report: Report,
) -> None:
    """Read every input (`read` gives `[B, ...]`; `error` marks a bad file), check its outputs are free, then
    run and write the good ones in batches; bad files are reported and skipped."""
    single = len(items) == 1 and not Path(args.inputs[0]).is_dir()
    suffix = _audio_suffix(args, single)
    ready: list[tuple[Item, torch.Tensor, list[Path]]] = []
    for item in items:
        try:
            data = read(item)
            ready.append((item, data, _planned_outputs(args, item, single, suffix, len(data))))
        except (error, FileExistsError, MemoryLimitError) as err:
            report.fail(str(err))
    _decode_batches(mbd, ready, run, args, report)


def _decode_batches(mbd, ready, run: Callable[[torch.Tensor], torch.Tensor], args: argparse.Namespace, report: Report) -> None:  # noqa: ANN001, E501
    """Run `run` on batches of equal-length inputs (`[B, ...]` each) and write every clip of its output."""
    from tqdm import tqdm

    groups: dict[int, list[tuple[Item, torch.Tensor, list[Path]]]] = {}
    for entry in ready:
        groups.setdefault(entry[1].shape[-1], []).append(entry)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), max(1, args.batch_size)):
            batches.append(group[start : start + max(1, args.batch_size)])
    with tqdm(total=len(ready), unit="file", disable=None, file=sys.stderr) as progress:
        for batch in batches:
            wav = run(torch.cat([codes for _, codes, _ in batch])).cpu()
            offset = 0
            for item, _codes, outs in batch:
                for out in outs:
                    try:
                        _write(out, wav[offset], mbd.sample_rate, args.overwrite, report)
                    except (AudioError, FileExistsError) as err:
                        report.fail(str(err))
                    offset += 1
                report.done.append(item.path)
                progress.update(1)


def _write(path: Path, wav: torch.Tensor, sample_rate: int, overwrite: bool, report: Report) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for note in write_audio(path, wav, sample_rate, overwrite=overwrite):
        report.note(path, note)


def cmd_regenerate(args: argparse.Namespace) -> int:
    report = Report()
    sampling, runtime = _options(args)
    items = expand_inputs(args.inputs, AUDIO_SUFFIXES, report)
    if not items:
        return report.summary("regenerated")
    mbd = load_model(args.model, runtime.device, args.codec_weights)
    if args.codec_weights is not None and mbd.codec is None:
        raise CommandError(f"--codec-weights: {args.model} is a mel model, it uses no codec")
    single = len(items) == 1 and not Path(args.inputs[0]).is_dir()
    suffix = _audio_suffix(args, single)
    steps, generator = sampling.step_list(mbd), sampling.generator(mbd.device)  # one generator for all the files
    for item in items:
        out = output_path(args.output, item, single, suffix)
        try:
            _free(out, args.overwrite)
            wav, notes = read_audio(item.path, mbd.sample_rate)
            for note in notes:
                report.note(item.path, note)
            if wav.shape[-1] < mbd.min_samples:
                raise AudioError(f"{item.path}: too short ({wav.shape[-1]} samples); need at least {mbd.min_samples}")
            check_job(mbd, 1, wav.shape[-1], runtime, args.max_memory, str(item.path), encode=mbd.codec is not None,
                      re_eq=False)
            result = mbd.regenerate(
                wav[None], mbd.sample_rate, steps=steps, generator=generator, sampler=sampling.sampler, options=runtime
            )
            _write(out, result[0].cpu(), mbd.sample_rate, args.overwrite, report)
            report.done.append(item.path)
        except (AudioError, FileExistsError, MemoryLimitError) as err:
            report.fail(str(err))
    return report.summary("regenerated")


def cmd_encode(args: argparse.Namespace) -> int:
    from .codec import bandwidth_to_n_q, load_codec

    report = Report()
    try:
        n_q = bandwidth_to_n_q(args.bandwidth)
    except InputError as err:
        raise CommandError(f"--bandwidth: {err}") from None
    items = expand_inputs(args.inputs, AUDIO_SUFFIXES, report)
    if not items:
        return report.summary("encoded")
    codec = load_codec("encodec_24khz", n_q, weights=args.codec_weights)
    single = len(items) == 1 and not Path(args.inputs[0]).is_dir()
    suffix = args.output.suffix.lower() if single and args.output.suffix.lower() in (".npy", ".ecdc") else None
    for item in items:
        out = output_path(args.output, item, single, suffix or f".{args.format}")
        try:
            _free(out, args.overwrite)
            wav, notes = read_audio(item.path, codec.sample_rate)
            for note in notes:
                report.note(item.path, note)
            check_memory(encode_bytes(1, wav.shape[-1]), memory_limit(args.max_memory), str(item.path))
            codes = codec.encode(wav[None])
            out.parent.mkdir(parents=True, exist_ok=True)
            write_tokens(out, codes, overwrite=args.overwrite, audio_length=wav.shape[-1])
            report.done.append(item.path)
        except (AudioError, FileExistsError, TokenError, MemoryLimitError) as err:
            report.fail(str(err))
    return report.summary("encoded")


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert

    if args.output.exists() and not args.overwrite:
        raise CommandError(f"{args.output}: already exists (use --overwrite to replace it)")
    convert(args.input, args.output)
    print(f"mbd: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .describe import describe

    report = Report()
    for path in args.files:
        try:
            print(describe(path))
        except (MBDError, OSError) as err:
            report.fail(str(err))
    return 2 if report.failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import hub

    print(f"{'name':22s} {'input':15s} {'n_q':>3s} {'rate':>6s}  {'cached':7s}  licence")
    for entry in hub.list_models():
        cached = "bundled" if entry.bundled else "yes" if entry.is_cached else "no"
        source = entry.codec if entry.codec is not None else f"{entry.input}"
        n_q = "-" if entry.n_q is None else str(entry.n_q)
        print(f"{entry.name:22s} {source:15s} {n_q:>3s} {entry.sample_rate:6d}  {cached:7s}  {entry.license}")
    print(f"caches: models {hub.hf_cache_dir()} (HF_HUB_CACHE), EnCodec {hub.codec_dir()} (TORCH_HOME), "
          f"placed by hand {hub.cache_dir()} (MBD_CACHE); MBD_OFFLINE=1 never downloads")
    print("The AudioCraft MBD weights are CC-BY-NC 4.0: non-commercial use only. mel24k ships with mbd: "
          "see its model card (checkpoints/mel24k.md) for its training data's licences.")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "decode": cmd_decode,
    "vocode": cmd_vocode,
    "regenerate": cmd_regenerate,
    "encode": cmd_encode,
    "convert": cmd_convert,
    "info": cmd_info,
    "models": cmd_models,
}


def _show_notice(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"mbd: note: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from .train.cli import main as train_main  # training code loads only for this command

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", LicenceNotice)
            warnings.showwarning = _show_notice
            return COMMANDS[args.command](args)
    except (MBDError, DownloadError, OSError) as err:  # the user can fix these; anything else is a bug
        print(f"mbd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mbd: interrupted", file=sys.stderr)
        return 130
