"""mbd.audio: reading as mono at the codec rate, atomic writes that never overwrite by accident."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mbd.audio import AudioError, read_audio, write_audio


def _sine(freq: float, sample_rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return np.stack([0.5 / (c + 1) * np.sin(2 * math.pi * freq * t) for c in range(channels)], axis=1)  # [L, C]


def _peak_hz(wav: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wav[0]).abs()
    return float(spectrum.argmax()) * sample_rate / wav.shape[-1]


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_then_read(tmp_path: Path, suffix: str) -> None:
    wav = torch.from_numpy(_sine(440, 24000, 0.2).T).float()  # [1, L]
    path = tmp_path / f"out{suffix}"
    assert write_audio(path, wav, 24000, overwrite=False) == []
    assert soundfile.info(str(path)).format == suffix[1:].upper()
    back, notes = read_audio(path, 24000)
    assert notes == [] and back.shape == wav.shape and back.dtype == torch.float32
    assert torch.allclose(back, wav, atol=1 / 32768)  # 16-bit PCM
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    data = _sine(300, 24000, 0.1, channels=2)
    soundfile.write(str(tmp_path / "st.wav"), data, 24000, subtype="FLOAT")
    wav, notes = read_audio(tmp_path / "st.wav", 24000)
    assert notes == ["downmixed 2 channels to mono"]
    assert torch.allclose(wav[0], torch.from_numpy(data.mean(axis=1)).float(), atol=1e-6)


def test_other_rates_are_resampled(tmp_path: Path) -> None:
    soundfile.write(str(tmp_path / "cd.wav"), _sine(1000, 44100, 0.5), 44100, subtype="FLOAT")
    wav, notes = read_audio(tmp_path / "cd.wav", 24000)
    assert notes == ["resampled 44100 Hz -> 24000 Hz"]
    assert wav.shape == (1, 12000)
    assert abs(_peak_hz(wav, 24000) - 1000) <= 2  # the tone keeps its pitch


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b"RIFF nonsense"), "cannot read audio"),
        (lambda p: None, "cannot read audio"),
        (lambda p: soundfile.write(str(p), np.zeros((0, 1)), 24000), "no audio samples"),
        (lambda p: soundfile.write(str(p), np.full((10, 1), np.nan), 24000, subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_files(tmp_path: Path, make: object, match: str) -> None:
    path = tmp_path / "in.wav"
    make(path)  # type: ignore[operator]
    with pytest.raises(AudioError, match=match) as info:
        read_audio(path, 24000)
    assert str(path) in str(info.value)


def test_no_accidental_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        write_audio(path, torch.zeros(1, 100), 24000, overwrite=False)
    assert path.read_bytes() == b"precious"
    write_audio(path, torch.zeros(1, 100), 24000, overwrite=True)
    assert soundfile.info(str(path)).frames == 100


def test_clipping_is_reported(tmp_path: Path) -> None:
    notes = write_audio(tmp_path / "loud.wav", torch.tensor([[0.5, 1.5, -2.0, 0.0]]), 24000, overwrite=False)
    assert notes == ["clipped 2 samples outside [-1, 1]"]
    back, _ = read_audio(tmp_path / "loud.wav", 24000)
    assert back.abs().max() <= 1.0


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(file: object, *args: object, **kwargs: object) -> None:
        file.write(b"half a header")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    monkeypatch.setattr(soundfile, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_audio(tmp_path / "out.wav", torch.zeros(1, 100), 24000, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="can write .wav or .flac"):
        write_audio(tmp_path / "out.mp3", torch.zeros(1, 10), 24000, overwrite=False)
    with pytest.raises(AudioError, match=r"\[C, L\]"):
        write_audio(tmp_path / "out.wav", torch.zeros(1, 1, 10), 24000, overwrite=False)
    with pytest.raises(AudioError, match="does not exist"):
        write_audio(tmp_path / "no" / "out.wav", torch.zeros(1, 10), 24000, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_window_reads(tmp_path: Path) -> None:
    data = _sine(300, 24000, 0.1, channels=2).astype(np.float32)  # [2400, 2]
    soundfile.write(str(tmp_path / "st.wav"), data, 24000, subtype="FLOAT")
    mono = torch.from_numpy((data[:, 0] + data[:, 1]) / 2)
    window, notes = read_audio(tmp_path / "st.wav", 24000, start=1000, length=300)
    assert notes == ["downmixed 2 channels to mono"] and window.shape == (1, 300)
    assert torch.allclose(window[0], mono[1000:1300], atol=1e-7)
    tail, _ = read_audio(tmp_path / "st.wav", 24000, start=2300, length=300)  # 100 samples, then zeros
    assert torch.allclose(tail[0, :100], mono[2300:], atol=1e-7) and torch.equal(tail[0, 100:], torch.zeros(200))
    # At another rate the window matches the same span of the whole resampled file, away from its ends. (The
    # window's first source sample, 64 before floor(start * 1.5), falls on a target sample for odd starts;
    # for even ones the window is a third of a sample late.)
    whole, _ = read_audio(tmp_path / "st.wav", 16000)
    window, notes = read_audio(tmp_path / "st.wav", 16000, start=701, length=200)
    assert "resampled 24000 Hz -> 16000 Hz" in notes and window.shape == (1, 200)
    assert torch.allclose(window, whole[:, 701:901], atol=1e-4)


def test_one_suffix_list() -> None:
    from mbd import audio, batch, cli
    from mbd.train import data

    assert data.AUDIO_SUFFIXES is audio.AUDIO_SUFFIXES and cli.AUDIO_SUFFIXES is audio.AUDIO_SUFFIXES
    assert not hasattr(batch, "AUDIO_SUFFIXES")
    assert {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".opus"} <= set(audio.AUDIO_SUFFIXES)


def test_odd_and_absurd_sample_rates(tmp_path: Path) -> None:
    """A 0.3 s WAV at 44101 Hz is resampled in bounded time and memory (not julius' 24000 filters); a header
    claiming 2147483647 Hz is refused with one line naming the file."""
    soundfile.write(tmp_path / "odd.wav", _sine(440, 44101, 0.3), 44101)
    wav, notes = read_audio(tmp_path / "odd.wav", 24000)
    assert wav.shape == (1, int(0.3 * 44101) * 24000 // 44101) and "resampled 44101 Hz -> 24000 Hz" in notes
    assert abs(_peak_hz(wav, 24000) - 440) < 5
    data = bytearray((tmp_path / "odd.wav").read_bytes())
    data[24:28] = (2147483647).to_bytes(4, "little")  # the fmt chunk's sample rate
    (tmp_path / "absurd.wav").write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"absurd\.wav: sample rate 2147483647 Hz is not supported"):
        read_audio(tmp_path / "absurd.wav", 24000)


def test_non_finite_audio_is_never_written(tmp_path: Path) -> None:
    wav = torch.zeros(1, 100)
    wav[0, 3] = float("nan")
    with pytest.raises(AudioError, match=r"x\.wav: not written: the audio holds 1 NaN or infinite samples"):
        write_audio(tmp_path / "x.wav", wav, 24000, overwrite=False)
    assert list(tmp_path.iterdir()) == []
