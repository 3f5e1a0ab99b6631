"""Bad command lines, one table row each: a one-line error (exit 2) naming the flag or file, no traceback,
nothing written, and the check made before any model loads.

Every row runs `mbd` in-process with `--model` naming a checkpoint that does not exist: a check made only
after loading would fail on the missing model instead, without the row's expected words. Rows that need a
loaded model live in tests/test_cli.py. Add rows to `CASES`; each setup writes its inputs under `tmp` and
returns the arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mbd.arguments import check_codec_weights
from mbd.batch import printable
from mbd.cli import main
from mbd.errors import CommandError

NO_MODEL = "never-loaded.safetensors"


@dataclass(frozen=True)
class Case:
    """Args:
    name: the row's id.
    setup: writes the inputs under a temp folder and returns the arguments after `mbd`.
    words: what the error message must contain (the flag as typed, the file's name).
    env: environment variables for the run.
    """

    name: str
    setup: Callable[[Path], list[str]]
    words: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def tokens(folder: Path, name: str = "x.npy") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros((4, 10), dtype=np.int64))
    return path


def tone(folder: Path, name: str = "a.wav") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, 0.1 * np.sin(np.arange(4800) / 10), 24000)
    return path


def decode(*extra: str, inputs: tuple[str, ...] = ("x.npy",), out: str = "out/x.wav") -> Callable[[Path], list[str]]:
    """`mbd decode` of token files named `inputs` (written under tmp) with one bad flag."""

    def setup(tmp: Path) -> list[str]:
        paths = [str(tokens(tmp, name)) for name in inputs]
        return ["decode", *paths, "-o", str(tmp / out), "--model", NO_MODEL, *extra]

    return setup


def weights(content: bytes | None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        if content is not None:
            (tmp / "weights.th").write_bytes(content)
        return decode("--codec-weights", str(tmp / "weights.th"))(tmp)

    return setup


def pickled_list(tmp: Path) -> list[str]:
    torch.save([torch.zeros(2)], tmp / "weights.th")
    return decode("--codec-weights", str(tmp / "weights.th"))(tmp)


def encode_to_wav(tmp: Path) -> list[str]:
    return ["encode", str(tone(tmp)), "-o", str(tmp / "out" / "t.wav")]


def collide_npz(tmp: Path) -> list[str]:
    np.savez(tmp / "x.npz", codes=np.zeros((4, 10), dtype=np.int64))
    return ["decode", str(tokens(tmp)), str(tmp / "x.npz"), "-o", str(tmp / "out"), "--model", NO_MODEL]


def collide_folders(*extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        tokens(tmp / "in" / "a", "y.npy"), tokens(tmp / "in" / "b", "y.npy")
        return ["decode", str(tmp / "in" / "*" / "y.npy"), "-o", str(tmp / "out"), "--model", NO_MODEL, *extra]

    return setup


def collide_wav_flac(*extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        a, b = tone(tmp, "a.wav"), tone(tmp, "a.flac")
        return ["regenerate", str(a), str(b), "-o", str(tmp / "out"), "--model", NO_MODEL, *extra]

    return setup


def in_place(tmp: Path) -> list[str]:
    return ["regenerate", str(tone(tmp, "in/a.wav")), "-o", str(tmp / "in"), "--overwrite", "--model", NO_MODEL]


def other_input(tmp: Path) -> list[str]:
    a, b = tone(tmp, "in/a.flac"), tone(tmp, "in/a.wav")
    return ["regenerate", str(a), str(b), "-o", str(tmp / "in"), "--model", NO_MODEL]


def under_file(tmp: Path) -> list[str]:
    (tmp / "file.txt").write_text("a file, not a folder")
    return decode(out="file.txt/sub")(tmp)


def escape_name(tmp: Path) -> list[str]:
    return ["decode", str(tmp / "bad\x1b[31mred\x07.npy"), "-o", str(tmp / "out"), "--model", NO_MODEL]


def fifo(command: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        os.mkfifo(tmp / "x.npy")
        if command == "info":
            return ["info", str(tmp / "x.npy")]
        return ["decode", str(tmp / "x.npy"), "-o", str(tmp / "out"), "--model", NO_MODEL]

    return setup


def folder_to_one_file(tmp: Path) -> list[str]:
    tokens(tmp / "in")
    return ["decode", str(tmp / "in"), "-o", str(tmp / "out.wav"), "--model", NO_MODEL]


def convert(out: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        torch.save({"x": torch.zeros(1)}, tmp / "m.pt")
        if out.endswith("/"):
            (tmp / out).mkdir()
        return ["convert", str(tmp / "m.pt"), str(tmp / out)]

    return setup


def manifest_missing(tmp: Path) -> list[str]:
    np.save(tmp / "m.npy", np.zeros((100, 20), dtype=np.float32))
    return ["vocode", str(tmp / "m.npy"), "-o", str(tmp / "out"), "--model", "mel24k"]


CASES = [
    Case("device_bogus", decode("--device", "bogus"), ("--device bogus", "not a device")),
    Case("device_cuda_index_absent", decode("--device", "cuda:99"), ("--device cuda:99",)),
    Case("chunk_seconds_inf", decode("--chunk-seconds", "inf"), ("--chunk-seconds", "inf")),
    Case("chunk_seconds_nan", decode("--chunk-seconds", "nan"), ("--chunk-seconds", "nan")),
    Case("chunk_seconds_0", decode("--chunk-seconds", "0"), ("--chunk-seconds",)),
    Case("batch_size_0", decode("--batch-size", "0"), ("--batch-size", "got 0")),
    Case("batch_size_negative", decode("--batch-size", "-3"), ("--batch-size", "got -3")),
    Case("seed_negative", decode("--seed", "-1"), ("--seed", "got -1")),
    Case("seed_too_big", decode("--seed", str(2**64)), ("--seed",)),
    Case("steps_0", decode("--steps", "0"), ("--steps", "got 0")),
    Case("codec_weights_missing", weights(None), ("--codec-weights", "weights.th", "no such file")),
    Case("codec_weights_garbage", weights(os.urandom(4096)), ("--codec-weights", "weights.th")),
    Case("codec_weights_empty_file", weights(b""), ("--codec-weights", "weights.th")),
    Case("codec_weights_not_a_dict", pickled_list, ("--codec-weights", "weights.th", "state dict")),
    Case("out_mp3", decode(out="out/out.mp3"), ("out.mp3", ".wav or .flac")),
    Case("out_npy_for_audio", decode(out="out/y.npy"), ("y.npy", ".wav or .flac")),
    Case("encode_to_wav", encode_to_wav, ("t.wav", ".npy or .ecdc")),
    Case("one_file_for_two_inputs", decode(inputs=("x.npy", "y.npy")), ("x.wav", "2 inputs", "folder")),
    Case("out_under_file", under_file, ("file.txt", "not a folder")),
    Case("collide_npy_npz", collide_npz, ("x.npy", "x.npz", "x.wav")),
    Case("collide_folders", collide_folders(), ("a/y.npy", "b/y.npy")),
    Case("collide_folders_overwrite", collide_folders("--overwrite"), ("a/y.npy", "b/y.npy")),
    Case("collide_wav_flac", collide_wav_flac(), ("a.wav", "a.flac")),
    Case("collide_wav_flac_overwrite", collide_wav_flac("--overwrite"), ("a.wav", "a.flac")),
    Case("output_is_the_input", in_place, ("a.wav", "replace the input")),
    Case("output_is_another_input", other_input, ("a.flac", "a.wav", "replace the input")),
    Case("escape_in_name", escape_name, ("\\x1b[31mred\\x07.npy",)),
    Case("info_fifo", fifo("info"), ("x.npy", "not a regular file")),
    Case("decode_fifo", fifo("decode"), ("x.npy", "not a regular file")),
    Case("folder_to_one_file", folder_to_one_file, ("out.wav", "the input is a folder")),
    Case("convert_not_safetensors", convert("out.pt"), ("out.pt", ".safetensors")),
    Case("convert_onto_folder", convert("d.safetensors/"), ("d.safetensors", "is a folder")),
    Case("manifest_missing", manifest_missing, ("manifest.toml",), {"MBD_MANIFEST": "nowhere/manifest.toml"}),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_command_line(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MBD_OFFLINE", "1")
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "cache"))
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    argv = case.setup(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mbd: error:")]
    assert code == 2, err
    assert "Traceback" not in err and "\x1b" not in err and "\x07" not in err
    assert errors and all(len(line) < 300 for line in errors), err
    assert all(word in errors[0] for word in case.words), err
    assert {p for p in tmp_path.rglob("*") if p.is_file()} <= before  # nothing written


def test_cuda_without_a_gpu_is_refused_up_front(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(decode("--device", "cuda")(tmp_path)) == 2
    assert capsys.readouterr().err == "mbd: error: --device cuda: no CUDA GPU is available\n"


def test_unwritable_output_folder_is_refused_up_front(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "out").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path / "out" and real_access(p, mode))
    assert main(decode(out="out")(tmp_path)) == 2
    assert capsys.readouterr().err == f"mbd: error: {tmp_path / 'out'}: folder is not writable\n"


def test_unreadable_subfolder_is_a_warning(tmp_path: Path, capsys, monkeypatch) -> None:
    tokens(tmp_path / "in" / "locked")
    real_scandir = os.scandir

    def scandir(path):  # noqa: ANN001, ANN202 - root reads any folder, so the refusal is simulated
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["decode", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", NO_MODEL]) == 2
    err = capsys.readouterr().err
    assert f"mbd: warning: {tmp_path / 'in' / 'locked'}: folder skipped, cannot be listed (Permission denied)" in err


def test_printable_escapes_control_characters_only() -> None:
    assert printable("a\x1b[31mb\n\t\x07\x9b\udcff.npy") == "a\\x1b[31mb\\n\\t\\x07\\x9b\\udcff.npy"
    assert printable("chœur été 声.wav") == "chœur été 声.wav"  # printable non-ASCII names stay as they are


def test_codec_weights_folder_is_left_to_its_loader(tmp_path: Path) -> None:
    check_codec_weights(str(tmp_path))  # a Hugging Face codec folder (MusicGen's 32 kHz EnCodec)


@pytest.mark.parametrize("zipped", [True, False])
def test_codec_weights_are_checked_in_both_torch_formats(tmp_path: Path, zipped: bool) -> None:
    path = tmp_path / "codec.th"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=zipped)  # zip (memory-mapped) or legacy
    check_codec_weights(str(path))
    path.write_bytes(path.read_bytes()[:-40])  # cut short: the check reads the file, not just its name
    with pytest.raises(CommandError, match="not a PyTorch weights file"):
        check_codec_weights(str(path))
