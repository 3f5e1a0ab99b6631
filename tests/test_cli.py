"""End-to-end CLI runs in a temp dir: encode -> decode for every token format, folders, bad inputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mbd import checkpoint
from mbd.arguments import check_steps, decoding_options
from mbd.cli import COMMANDS, build_parser, main
from mbd.errors import CheckpointError, CommandError, InputError, TokenError
from mbd.hub import DownloadError
from mbd.options import SamplingOptions
from tests.conftest import GOLDEN, tiny, tiny_mel_model

SR = 24000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "nq4.safetensors"
    checkpoint.save(path, *checkpoint.load(GOLDEN / "mbd_comp_4_reduced.pt"))  # `convert` is tested below
    return path


@pytest.fixture
def run(model_path: Path, encodec_weights: Path, capsys):
    """Run `mbd ...` in-process with the golden model and the random EnCodec; returns (code, stderr)."""

    def invoke(*args: str, model: bool = True) -> tuple[int, str]:
        extra = ["--model", str(model_path)] if model else []
        extra += ["--codec-weights", str(encodec_weights), "--steps", "1", "--seed", "0"]
        if args[0] == "encode":
            extra = ["--codec-weights", str(encodec_weights)]
        code = main([*args, *extra])
        return code, capsys.readouterr().err

    return invoke


def _tone(path: Path, seconds: float = 0.1, sr: int = SR, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None].repeat(channels, axis=1)
    soundfile.write(path, wav, sr)
    return path


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, encodec_weights: Path) -> Path:
    """A folder holding tone.wav and its `mbd encode` outputs tone.npy and tone.ecdc (encoded once per module)."""
    folder = tmp_path_factory.mktemp("encoded")
    _tone(folder / "tone.wav")
    for out in ("tone.npy", "tone.ecdc"):
        assert main(["encode", str(folder / "tone.wav"), "-o", str(folder / out), "--codec-weights",
                     str(encodec_weights)]) == 0
    return folder


@pytest.fixture
def codes(tmp_path: Path, encoded: Path) -> np.ndarray:
    """tone.wav and its encoded tone.npy copied into tmp_path; returns the codes `[1, K, T]`."""
    for name in ("tone.wav", "tone.npy"):
        shutil.copy(encoded / name, tmp_path / name)
    return np.load(tmp_path / "tone.npy")


def _check_wav(path: Path, frames: int) -> None:
    data, sr = soundfile.read(path)
    assert sr == SR and data.shape == (frames * 320,)
    assert np.isfinite(data).all() and np.abs(data).max() > 0


def test_encode_then_decode_every_format(tmp_path: Path, run, codes: np.ndarray, encoded: Path) -> None:
    assert codes.shape[:2] == (1, 4) and codes.dtype == np.int64
    frames = codes.shape[-1]
    np.savez(tmp_path / "c_npz.npz", codes=codes[0])
    torch.save({"codes": torch.from_numpy(codes)}, tmp_path / "c_pt.pt")
    shutil.copy(encoded / "tone.ecdc", tmp_path / "c_ecdc.ecdc")  # `mbd encode -o x.ecdc`
    names = ("tone.npy", "c_npz.npz", "c_pt.pt", "c_ecdc.ecdc")
    out = tmp_path / "out"
    code, err = run("decode", *(str(tmp_path / name) for name in names), "-o", str(out))
    assert code == 0, err
    wavs = {}
    for name in names:
        _check_wav(out / f"{Path(name).stem}.wav", frames)
        wavs[name] = soundfile.read(out / f"{Path(name).stem}.wav")[0]
    # every format reads the same codes: each clip's seed comes from its codes, so their audio is identical
    assert all(np.array_equal(wav, wavs["tone.npy"]) for wav in wavs.values())
    # the same seed gives the same audio, decoded alone
    code, _ = run("decode", str(tmp_path / "tone.npy"), "-o", str(tmp_path / "again.wav"))
    assert code == 0
    assert np.array_equal(soundfile.read(tmp_path / "again.wav")[0], wavs["tone.npy"])


def test_folder_and_glob_inputs(tmp_path: Path, run, codes: np.ndarray) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    np.save(tmp_path / "in" / "a.npy", codes)
    np.save(tmp_path / "in" / "sub" / "b.npy", codes[0])
    code, err = run("decode", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--format", "flac")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.flac")) == [
        "a.flac",
        "sub/b.flac",
    ]
    code, err = run("decode", str(tmp_path / "in" / "**" / "*.npy"), "-o", str(tmp_path / "globbed"))
    assert code == 0, err
    assert len(list((tmp_path / "globbed").glob("*.wav"))) == 2


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, run, codes: np.ndarray) -> None:
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    code, err = run("decode", str(tmp_path / "tone.npy"), "-o", str(out))
    assert code == 2 and "already exists" in err and out.read_bytes() == b"keep me"
    assert "out.wav" in err and "--overwrite" in err and "--force" not in err  # names the file and the real flag
    code, err = run("decode", str(tmp_path / "tone.npy"), "-o", str(out), "--overwrite")
    assert code == 0, err
    _check_wav(out, codes.shape[-1])


def test_a_full_disk_fails_that_file_in_one_line_and_the_batch_goes_on(
    tmp_path: Path, run, codes: np.ndarray, monkeypatch
) -> None:
    """ENOSPC while writing the first output: one line naming that file, no partial file, the second
    output still written, exit code 2."""
    import errno

    import mbd.audio

    np.save(tmp_path / "second.npy", codes)
    real, calls = mbd.audio.soundfile.write, []

    def full_once(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(mbd.audio.soundfile, "write", full_once)
    out = tmp_path / "out"
    code, err = run("decode", str(tmp_path / "tone.npy"), str(tmp_path / "second.npy"), "-o", str(out))
    assert code == 2 and "Traceback" not in err
    failed = [line for line in err.splitlines() if "No space left on device" in line]
    assert len(failed) >= 1 and all(str(out / "tone.wav") in line for line in failed)
    assert sorted(p.name for p in out.iterdir()) == ["second.wav"]  # nothing partial left beside it


def test_a_failing_batch_does_not_stop_the_others(tmp_path: Path, run, codes: np.ndarray, monkeypatch) -> None:
    """A batch whose output is refused (here: non-finite) fails its files in one line each; a batch of
    another length is still written, and the exit code is 2."""
    import mbd.cli
    from mbd.errors import OutputError

    np.save(tmp_path / "short.npy", codes[..., : codes.shape[-1] // 2])
    real = mbd.cli.decode_codes

    def refuse_long(model, batch, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if batch.shape[-1] == codes.shape[-1]:
            raise OutputError("tokens: the output holds NaN samples")
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(mbd.cli, "decode_codes", refuse_long)
    out = tmp_path / "out"
    code, err = run("decode", str(tmp_path / "tone.npy"), str(tmp_path / "short.npy"), "-o", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'tone.npy'}: tokens: the output holds NaN samples" in err
    assert sorted(p.name for p in out.iterdir()) == ["short.wav"]


def _bad_token_files(folder: Path, codes: np.ndarray) -> dict[str, str]:
    """file name -> expected message fragment."""
    np.save(folder / "eight.npy", np.zeros((8, 20), dtype=np.int64))
    np.save(folder / "range.npy", np.full((4, 20), 5000, dtype=np.int64))
    np.save(folder / "float.npy", codes.astype(np.float32))
    np.save(folder / "negative.npy", -np.ones((4, 20), dtype=np.int64))
    np.save(folder / "empty.npy", np.zeros((4, 0), dtype=np.int64))
    np.save(folder / "oneframe.npy", np.zeros((4, 1), dtype=np.int64))
    nan = codes.astype(np.float64)
    nan[0, 0, 0] = np.nan
    np.save(folder / "nan.npy", nan)
    (folder / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (folder / "unknown.xyz").write_bytes(b"hello")
    return {
        "eight.npy": "8 codebooks",
        "range.npy": "< 1024",
        "float.npy": "integers",
        "negative.npy": ">= 0",
        "empty.npy": "empty",
        "oneframe.npy": "frame",
        "nan.npy": "NaN",
        "corrupt.npz": "corrupt.npz",
        "unknown.xyz": "unknown token file type",
    }


def test_bad_token_inputs(tmp_path: Path, run, codes: np.ndarray, encoded: Path) -> None:
    """Each bad file fails in one line naming it (one run over all of them), nothing is written, exit code 2."""
    bad = tmp_path / "bad"
    bad.mkdir()
    expected = _bad_token_files(bad, codes)
    out = tmp_path / "out"
    code, err = run("decode", *(str(bad / name) for name in expected), "-o", str(out))
    assert code == 2 and "Traceback" not in err
    for name, fragment in expected.items():
        lines = [line for line in err.splitlines() if str(bad / name) in line]
        assert lines and all(fragment in line for line in lines), (name, err)
    assert not out.exists() or not list(out.iterdir())
    # truncated .ecdc, to one named output file
    data = (encoded / "tone.ecdc").read_bytes()
    (bad / "cut.ecdc").write_bytes(data[: len(data) // 2])
    code, err = run("decode", str(bad / "cut.ecdc"), "-o", str(out / "cut.wav"))
    assert code == 2 and "cut.ecdc" in err and "Traceback" not in err and not (out / "cut.wav").exists()


def test_batch_keeps_good_files_and_lists_failures(tmp_path: Path, run, codes: np.ndarray) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "good.npy", codes)
    np.save(folder / "bad.npy", np.full((4, 20), 9999, dtype=np.int64))
    code, err = run("decode", str(folder), "-o", str(tmp_path / "out"))
    assert code == 2
    assert (tmp_path / "out" / "good.wav").is_file() and not (tmp_path / "out" / "bad.wav").exists()
    assert "1 failed" in err and "bad.npy" in err.split("failed:")[-1]
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix != ".wav"]  # no temp files left


def test_encode_bad_audio_and_notes(tmp_path: Path, run) -> None:
    """One run: the unreadable file fails naming it, the stereo 16 kHz one is encoded with notes."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    _tone(tmp_path / "in" / "stereo.wav", sr=16000, channels=2)
    out = tmp_path / "out"
    code, err = run("encode", str(tmp_path / "in" / "broken.wav"), str(tmp_path / "in" / "stereo.wav"), "-o", str(out))
    assert code == 2 and "Traceback" not in err
    failed = [line for line in err.splitlines() if "broken.wav" in line]
    assert failed and not any("stereo.wav" in line for line in failed)
    assert not (out / "broken.npy").exists()
    assert "stereo.wav: downmixed 2 channels" in err and "stereo.wav: resampled 16000 Hz -> 24000 Hz" in err
    assert np.load(out / "stereo.npy").shape[1] == 4


def test_regenerate(tmp_path: Path, run) -> None:
    audio = _tone(tmp_path / "voice.wav", seconds=0.2)
    code, err = run("regenerate", str(audio), "-o", str(tmp_path / "voice_mbd.wav"))
    assert code == 0, err
    data, sr = soundfile.read(tmp_path / "voice_mbd.wav")
    assert sr == SR and data.shape == (int(0.2 * SR),) and np.isfinite(data).all()


def test_convert_info_models(tmp_path: Path, capsys, codes: np.ndarray) -> None:
    out = tmp_path / "new" / "deeper" / "m.safetensors"  # convert makes the missing folders
    assert main(["convert", str(GOLDEN / "mbd_comp_2_reduced.pt"), str(out)]) == 0
    assert main(["convert", str(GOLDEN / "mbd_comp_2_reduced.pt"), str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(out), str(tmp_path / "tone.npy")]) == 0
    text = capsys.readouterr().out
    assert "4 band(s)" in text and "encodec_24khz with 2 codebooks" in text and "K=4" in text
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "encodec24k-3kbps" in text and "CC-BY-NC" in text
    assert main(["info", str(tmp_path / "nothing.bin")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "junk.pt"), str(tmp_path / "other" / "m.safetensors")]) == 2
    assert "junk.pt" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_missing_model_is_one_clear_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MBD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MBD_OFFLINE", "1")
    np.save(tmp_path / "c.npy", np.zeros((4, 10), dtype=np.int64))
    assert main(["decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.wav")]) == 2
    err = capsys.readouterr().err
    assert "mbd_comp_4.pt" in err and "huggingface.co" in err and "Traceback" not in err
    assert not (tmp_path / "c.wav").exists()


def test_python_dash_m(tmp_path: Path, capsys) -> None:
    """`python -m mbd` runs the command: a user error is one line on stderr and exit code 2."""
    result = subprocess.run(
        [sys.executable, "-m", "mbd", "decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.wav"),
         "--chunk-seconds", "-1"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "mbd: error: --chunk-seconds must be > 0 and finite, got -1.0\n"
    with pytest.raises(SystemExit) as done:  # --help lists the commands
        main(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and "decode" in text and "regenerate" in text


def test_flags_become_sampling_and_runtime_options(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # parsing only: no GPU needed
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    def options(*flags: str):  # noqa: ANN202
        return decoding_options(build_parser().parse_args(["decode", "in.npy", "-o", "out.wav", *flags]))

    def fused(*flags: str) -> bool:
        return options(*flags)[1].fused

    assert not fused("--device", "cpu") and fused("--device", "cpu", "--fused")
    assert fused("--device", "cuda") and not fused("--device", "cuda", "--no-fused")  # parsing only: no GPU needed
    assert fused("--device", "cpu", "--compile")
    sampling, runtime = options("--device", "cuda:1", "--sampler", "ddim", "--steps", "5", "--seed", "3",
                                "--dtype", "bfloat16", "--chunk-seconds", "2")
    assert (sampling.sampler, sampling.steps, sampling.seed) == ("ddim", 5, 3)
    assert (runtime.device, runtime.dtype, runtime.chunk_seconds, runtime.fused) == ("cuda:1", "bfloat16", 2.0, True)


@pytest.mark.parametrize(
    "error",
    [
        InputError("bad option"),
        TokenError("x.npy: bad codes"),
        CheckpointError("m.pt: bad checkpoint"),
        DownloadError("no network"),
        FileNotFoundError("x.npy: no such file"),
        PermissionError("out.wav: permission denied"),
    ],
)
def test_user_errors_are_one_line(error: Exception, capsys, monkeypatch) -> None:
    def command(args: object) -> int:
        raise error

    monkeypatch.setitem(COMMANDS, "models", command)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == f"mbd: error: {error}\n"


@pytest.mark.parametrize("error", [ValueError("a bug"), TypeError("a bug"), KeyError("a bug"), RuntimeError("a bug")])
def test_bugs_keep_their_traceback(error: Exception, monkeypatch) -> None:
    def command(args: object) -> int:
        raise error

    monkeypatch.setitem(COMMANDS, "models", command)
    with pytest.raises(type(error), match="a bug"):
        main(["models"])


def test_bad_options_are_user_errors(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "c.npy", np.zeros((4, 10), dtype=np.int64))
    # Validated by RuntimeOptions before any model loads.
    assert main(["decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.wav"), "--chunk-seconds", "-1"]) == 2
    assert capsys.readouterr().err == "mbd: error: --chunk-seconds must be > 0 and finite, got -1.0\n"
    assert main(["encode", str(_tone(tmp_path / "t.wav")), "-o", str(tmp_path / "t.npy"), "--bandwidth", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbd: error: --bandwidth: EnCodec 24 kHz has no 2.0 kbps mode") and err.count("\n") == 1


def test_unknown_model_name_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MBD_OFFLINE", "1")
    np.save(tmp_path / "c.npy", np.zeros((4, 10), dtype=np.int64))
    assert main(["decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.wav"), "--model", "nosuchmodel"]) == 2
    assert "nosuchmodel" in capsys.readouterr().err


def test_too_many_steps_is_one_line(tmp_path: Path, model_path: Path, encodec_weights: Path, capsys) -> None:
    np.save(tmp_path / "c.npy", np.zeros((4, 10), dtype=np.int64))
    args = ["--model", str(model_path), "--codec-weights", str(encodec_weights), "--steps", "5000"]
    assert main(["decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.wav"), *args]) == 2
    assert "5000" in capsys.readouterr().err


def test_full_chain_steps_accepted_and_too_many_refused_briefly() -> None:
    model = tiny()  # 1000 diffusion steps
    assert SamplingOptions("ddpm", 1000).step_list(model) == list(range(999, -1, -1))  # every step, once
    check_steps(SamplingOptions("ddpm", 1000), model)
    with pytest.raises(CommandError, match="^--steps 5000: ") as caught:
        check_steps(SamplingOptions("ddpm", 5000), model)
    assert len(str(caught.value)) < 200


def test_batched_file_to_one_named_file_is_refused(tmp_path: Path, run, codes: np.ndarray) -> None:
    np.save(tmp_path / "two.npy", np.concatenate([codes, codes]))  # [2, K, T]: two clips
    code, err = run("decode", str(tmp_path / "two.npy"), "-o", str(tmp_path / "m.wav"))
    assert code == 2 and "-o " in err and "m.wav" in err and "two.npy holds several clips" in err
    assert not (tmp_path / "m.wav").exists()


def test_numbered_outputs_that_collide_name_both_inputs(tmp_path: Path, run, codes: np.ndarray) -> None:
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "x.npy", np.concatenate([codes, codes]))  # writes x_0.wav and x_1.wav
    np.save(tmp_path / "in" / "x_0.npy", codes)  # writes x_0.wav
    code, err = run("decode", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--overwrite")
    assert code == 2 and "x.npy" in err and "x_0.npy" in err and "x_0.wav" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_0.wav"]  # one input kept, not replaced


def test_existing_folder_named_like_a_file_is_a_folder(tmp_path: Path, run, codes: np.ndarray) -> None:
    target = tmp_path / "x.wav"
    target.mkdir()
    (target / "keep.txt").write_text("kept")
    code, err = run("decode", str(tmp_path / "tone.npy"), "-o", str(target), "--overwrite")
    assert code == 0, err
    _check_wav(target / "tone.wav", codes.shape[-1])
    assert (target / "keep.txt").read_text() == "kept"


@pytest.fixture(scope="module")
def mel_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mel") / "mel.safetensors"
    tiny_mel_model().save(path)
    return path


def test_vocode_refuses_npz_and_batched_mel_to_one_file(tmp_path: Path, mel_model_path: Path, capsys) -> None:
    mel = np.random.default_rng(0).uniform(-8, 1, (100, 12)).astype(np.float32)
    np.savez(tmp_path / "x.npz", mel=mel)
    (tmp_path / "zip.npy").write_bytes((tmp_path / "x.npz").read_bytes())  # an archive under a .npy name
    np.save(tmp_path / "two.npy", np.stack([mel, mel]))
    model = ["--model", str(mel_model_path), "--steps", "2", "--seed", "0"]
    expected = {"x.npz": "not a .npy file", "zip.npy": ".npz archive", "two.npy": "two.npy holds several clips"}
    for name, words in expected.items():
        assert main(["vocode", str(tmp_path / name), "-o", str(tmp_path / "m.wav"), *model]) == 2
        err = capsys.readouterr().err
        assert name in err and words in err and "Traceback" not in err, err
        assert not (tmp_path / "m.wav").exists()


def test_codec_weights_that_are_not_encodec_name_the_file(tmp_path: Path, model_path: Path, capsys) -> None:
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.th")
    np.save(tmp_path / "c.npy", np.zeros((4, 10), dtype=np.int64))
    _tone(tmp_path / "t.wav")
    for argv in (["decode", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.wav"), "--model", str(model_path)],
                 ["encode", str(tmp_path / "t.wav"), "-o", str(tmp_path / "t.npy")]):
        assert main([*argv, "--codec-weights", str(tmp_path / "other.th")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mbd: error: --codec-weights {tmp_path / 'other.th'}: not EnCodec"), err
        assert err.count("\n") == 1
