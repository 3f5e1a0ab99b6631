"""The `mbd` command: decode, vocode, encode, regenerate, convert, info, models and train.

The flags and their checks live in `mbd.arguments`; every flag, output name and input path is checked before
any model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .api import decode_codes, load_model, vocode_mels
from .arguments import build_parser, check_codec_weights, check_steps, decoding_options
from .arrays import ArrayTooLarge, load_npy
from .audio import AUDIO_SUFFIXES, read_audio, write_audio
from .batch import MEL_SUFFIXES, TOKEN_SUFFIXES, Item, OutputPlan, Report, expand_inputs, printable
from .codec import validate_codes
from .errors import AudioError, CommandError, InputError, MBDError, MelError, OutputError, TokenError
from .hub import DownloadError, LicenceNotice
from .memory import MemoryLimitError, check_job, check_memory, encode_bytes, memory_limit
from .tokens import read_tokens, write_tokens

OUTPUT_AUDIO = (".wav", ".flac")


def _plan(args: argparse.Namespace, items: list[Item], suffixes: tuple[str, ...]) -> OutputPlan:
    """The batch's output names (`-o`, `--format`), checked for collisions and writability before any work."""
    single = len(items) == 1 and not Path(args.inputs[0]).is_dir()
    return OutputPlan(args.output, suffixes, f".{args.format}", items, single)


def _free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (use --overwrite to replace it)")
    if path.is_dir():
        raise FileExistsError(f"{path}: is a folder; --overwrite replaces files only")


def _planned_outputs(args: argparse.Namespace, plan: OutputPlan, item: Item, count: int) -> list[Path]:
    """The output paths of an input holding `count` clips (numbered when more than one), each free to write."""
    outs = [plan.path(item, b if count > 1 else None) for b in range(count)]
    plan.claim(item, outs)
    for out in outs:
        _free(out, args.overwrite)
    return outs


@contextlib.contextmanager
def _naming_codec_weights(value: str | None) -> Iterator[None]:
    """Name `--codec-weights` when the codec refuses its tensors (a dict of tensors that are not EnCodec's)."""
    try:
        yield
    except RuntimeError as err:
        if value is None or "state_dict for EncodecModel" not in str(err):
            raise
        raise CommandError(f"--codec-weights {value}: not EnCodec 24 kHz weights (names or shapes differ)") from None


def _failure(path: Path, err: Exception) -> str:
    """A one-line message for a failed read or write of `path` (an OSError's text without its errno)."""
    if isinstance(err, OSError) and not isinstance(err, FileExistsError) and err.strerror:
        return f"{path}: {err.strerror}"
    return str(err)


def _start(args: argparse.Namespace, suffixes: tuple[str, ...], codec_weights: str | None) -> tuple:
    """What every decoding command does first: check the flags, find the inputs, plan the outputs, load the
    model and check `--steps` against it. Returns `(report, sampling, runtime, items, plan, model)`, the model
    None when no input was found."""
    report = Report()
    sampling, runtime = decoding_options(args)
    items = expand_inputs(args.inputs, suffixes, report)
    if not items:
        return report, sampling, runtime, items, None, None
    plan = _plan(args, items, OUTPUT_AUDIO)
    with _naming_codec_weights(codec_weights):
        mbd = load_model(args.model, runtime.device, codec_weights)
    check_steps(sampling, mbd)
    return report, sampling, runtime, items, plan, mbd


def cmd_decode(args: argparse.Namespace) -> int:
    report, sampling, runtime, items, plan, mbd = _start(args, TOKEN_SUFFIXES, args.codec_weights)
    if mbd is None:
        return report.summary("decoded")
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

    _convert_files(mbd, items, plan, read, TokenError, run, args, report)
    return report.summary("decoded")


def _read_mel(path: Path, mbd, report: Report) -> torch.Tensor:  # noqa: ANN001
    """A `.npy` log-mel as a checked `[B, n_mels, T]` tensor; value warnings become notes."""
    if path.suffix.lower() not in MEL_SUFFIXES:
        raise MelError(f"{path}: not a .npy file; `mbd vocode` reads log-mels saved with numpy.save")
    try:
        if zipfile.is_zipfile(path):  # np.load would open a zip archive (.npz) whatever its name
            raise MelError(f"{path}: an .npz archive, not a .npy array; save the log-mel with numpy.save")
        array = load_npy(path)
    except ArrayTooLarge as err:
        raise MelError(str(err)) from None
    except (OSError, ValueError, EOFError) as err:
        raise MelError(f"{path}: not a readable .npy array ({err})") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise MelError(f"{path}: expected floating-point log-mel values, got {array.dtype}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mel = mbd.features.check(array, name=str(path))
    for warning in caught:
        report.note(path, str(warning.message).removeprefix(f"{path}: "))
    return mel


def cmd_vocode(args: argparse.Namespace) -> int:
    report, sampling, runtime, items, plan, mbd = _start(args, MEL_SUFFIXES, None)
    if mbd is None:
        return report.summary("vocoded")
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

    _convert_files(mbd, items, plan, read, MelError, run, args, report)
    return report.summary("vocoded")


def _convert_files(
    mbd,  # noqa: ANN001
    items: list[Item],
    plan: OutputPlan,
    read: Callable[[Item], torch.Tensor],
    error: type[Exception],
    run: Callable[[torch.Tensor], torch.Tensor],
    args: argparse.Namespace,
    report: Report,
) -> None:
    """Read every input (`read` gives `[B, ...]`; `error` marks a bad file), check its outputs are free, then
    run and write the good ones in batches; bad files are reported and skipped."""
    ready: list[tuple[Item, torch.Tensor, list[Path]]] = []
    for item in items:
        try:
            data = read(item)
            ready.append((item, data, _planned_outputs(args, plan, item, len(data))))
        except (error, CommandError, FileExistsError, MemoryLimitError) as err:
            report.fail(str(err))
        except OSError as err:
            report.fail(_failure(item.path, err))
    _decode_batches(mbd, ready, run, args, report)


def _decode_batches(mbd, ready, run: Callable[[torch.Tensor], torch.Tensor], args: argparse.Namespace, report: Report) -> None:  # noqa: ANN001, E501
    """Run `run` on batches of equal-length inputs (`[B, ...]` each) and write every clip of its output."""
    from tqdm import tqdm

    groups: dict[int, list[tuple[Item, torch.Tensor, list[Path]]]] = {}
    for entry in ready:
        groups.setdefault(entry[1].shape[-1], []).append(entry)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), args.batch_size):
            batches.append(group[start : start + args.batch_size])
    with tqdm(total=len(ready), unit="file", disable=None, file=sys.stderr) as progress:
        for batch in batches:
            try:
                wav = run(torch.cat([codes for _, codes, _ in batch])).cpu()
            except (MemoryLimitError, OutputError) as err:  # this batch fails; the others still run
                for item, _codes, _outs in batch:
                    report.fail(f"{item.path}: {err}")
                progress.update(len(batch))
                continue
            offset = 0
            for item, _codes, outs in batch:
                written = True
                for out in outs:
                    written &= _write(out, wav[offset], mbd.sample_rate, args.overwrite, report)
                    offset += 1
                if written:
                    report.done.append(item.path)
                progress.update(1)


def _read(path: Path, sample_rate: int, report: Report) -> torch.Tensor:
    """An audio file at `sample_rate`, `[C, L]`; what reading it changed (rate, channels) is noted."""
    wav, notes = read_audio(path, sample_rate)
    for note in notes:
        report.note(path, note)
    return wav


def _write(path: Path, wav: torch.Tensor, sample_rate: int, overwrite: bool, report: Report) -> bool:
    """Write one output file; a failure is reported (not raised) so that the batch goes on."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for note in write_audio(path, wav, sample_rate, overwrite=overwrite):
            report.note(path, note)
    except (AudioError, OSError) as err:
        report.fail(_failure(path, err))
        return False
    return True


def cmd_regenerate(args: argparse.Namespace) -> int:
    report, sampling, runtime, items, plan, mbd = _start(args, AUDIO_SUFFIXES, args.codec_weights)
    if mbd is None:
        return report.summary("regenerated")
    if args.codec_weights is not None and mbd.codec is None:
        raise CommandError(f"--codec-weights: {args.model} is a mel model, it uses no codec")
    steps = sampling.step_list(mbd)
    for item in items:
        out = plan.path(item)
        try:
            _free(out, args.overwrite)
            wav = _read(item.path, mbd.sample_rate, report)
            if wav.shape[-1] < mbd.min_samples:
                raise AudioError(f"{item.path}: too short ({wav.shape[-1]} samples); need at least {mbd.min_samples}")
            check_job(mbd, 1, wav.shape[-1], runtime, args.max_memory, str(item.path), encode=mbd.codec is not None,
                      re_eq=False)
            generator = sampling.generators(mbd.device, wav[None])  # the file's own stream, from seed and audio
            result = mbd.regenerate(
                wav[None], mbd.sample_rate, steps=steps, generator=generator, sampler=sampling.sampler, options=runtime
            )
        except (AudioError, FileExistsError, MemoryLimitError) as err:
            report.fail(str(err))
            continue
        except OSError as err:
            report.fail(_failure(item.path, err))
            continue
        if _write(out, result[0].cpu(), mbd.sample_rate, args.overwrite, report):
            report.done.append(item.path)
    return report.summary("regenerated")


def cmd_encode(args: argparse.Namespace) -> int:
    from .codec import bandwidth_to_n_q, load_codec

    report = Report()
    try:
        n_q = bandwidth_to_n_q(args.bandwidth)
    except InputError as err:
        raise CommandError(f"--bandwidth: {err}") from None
    check_codec_weights(args.codec_weights)
    items = expand_inputs(args.inputs, AUDIO_SUFFIXES, report)
    if not items:
        return report.summary("encoded")
    plan = _plan(args, items, (".npy", ".ecdc"))
    with _naming_codec_weights(args.codec_weights):
        codec = load_codec("encodec_24khz", n_q, weights=args.codec_weights)
    for item in items:
        out = plan.path(item)
        try:
            _free(out, args.overwrite)
            wav = _read(item.path, codec.sample_rate, report)
            needed = encode_bytes(1, wav.shape[-1], codec.sample_rate)
            check_memory(needed, memory_limit(args.max_memory), str(item.path))
            codes = codec.encode(wav[None])
            out.parent.mkdir(parents=True, exist_ok=True)
            write_tokens(out, codes, overwrite=args.overwrite, audio_length=wav.shape[-1])
            report.done.append(item.path)
        except (AudioError, FileExistsError, TokenError, MemoryLimitError) as err:
            report.fail(str(err))
        except OSError as err:
            report.fail(_failure(Path(err.filename) if err.filename else item.path, err))
    return report.summary("encoded")


def cmd_convert(args: argparse.Namespace) -> int:
    from .batch import writable_folder
    from .checkpoint import convert

    source, target = args.input, args.output
    if not source.is_file():
        raise CommandError(f"{source}: {'not a regular file' if source.exists() else 'no such file'}")
    if target.suffix.lower() != ".safetensors":
        raise CommandError(f"{target}: the converted checkpoint is a .safetensors file; name it *.safetensors")
    if target.is_dir():
        raise CommandError(f"{target}: is a folder; name the .safetensors file to write")
    if target.exists() and target.resolve() == source.resolve():
        raise CommandError(f"{target}: the output would replace the input")
    if target.exists() and not args.overwrite:
        raise CommandError(f"{target}: already exists (use --overwrite to replace it)")
    writable_folder(target.parent)
    created = [folder for folder in target.parents if not folder.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        convert(source, target)
    except BaseException:
        for folder in created:  # a failed conversion leaves no new empty folders
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    print(f"mbd: wrote {printable(target)}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .describe import describe

    report = Report()
    for path in args.files:
        try:
            print("\n".join(printable(line) for line in describe(path).splitlines()))
        except (MBDError, OSError) as err:
            report.fail(_failure(path, err))
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
    print(f"mbd: note: {printable(message)}", file=sys.stderr)


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
        text = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.filename and err.strerror else err
        print(f"mbd: error: {printable(text)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mbd: interrupted", file=sys.stderr)
        return 130
