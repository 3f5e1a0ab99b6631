"""Training audio: finding files, seeded random crops and fixed validation clips (AudioCraft's
audiocraft/solvers/diffusion.py).

Files come from folders (searched recursively) or manifests. Anything soundfile can read works; audio is
downmixed to mono and resampled to the training rate on the fly. Unreadable files are skipped with a
warning and counted. Crops are drawn from an explicit `torch.Generator`: files are picked with probability
proportional to their duration (as AudioCraft's `sample_on_duration`), then a uniform start; files shorter
than a crop are zero-padded.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch

from ..audio import AUDIO_SUFFIXES, read_audio
from ..errors import DataError


@dataclass(frozen=True)
class AudioFile:
    """One readable audio file: its path, native rate, length in native frames and channels."""

    path: str
    sample_rate: int
    frames: int
    channels: int

    def length_at(self, sample_rate: int) -> int:
        """Length in samples once resampled to `sample_rate`."""
        return self.frames * sample_rate // self.sample_rate


@dataclass(frozen=True)
class Crop:
    """A training example: file index into the training set and start sample at the training rate."""

    file: int
    start: int


def _manifest_entries(path: Path) -> list[Path]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise DataError(f"{path}: a manifest .csv needs a 'path' column, got {reader.fieldnames}")
            return [path.parent / row["path"] for row in reader if row["path"].strip()]
    lines = path.read_text().splitlines()
    return [path.parent / line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _candidates(paths: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file() and p.suffix.lower() in (".csv", ".txt"):
            found += _manifest_entries(p)
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"data path {p} does not exist (relative paths are resolved against the recipe's folder)")
    return found


def scan(paths: tuple[str, ...]) -> tuple[list[AudioFile], int]:
    """Index the audio files under `paths`.

    Returns:
        `(files, skipped)`: the readable, non-empty files sorted by path, and how many were skipped
        (each skipped file gets a warning).
    """
    files, skipped = {}, 0
    for path in _candidates(paths):
        try:
            info = sf.info(str(path))
            if info.frames <= 0 or info.samplerate <= 0:
                raise RuntimeError("no audio frames")
        except Exception as err:  # soundfile raises several types for unreadable or missing files
            warnings.warn(f"skipping unreadable audio file {path}: {err}", stacklevel=2)
            skipped += 1
            continue
        key = str(path.resolve())
        files[key] = AudioFile(key, int(info.samplerate), int(info.frames), int(info.channels))
    return [files[k] for k in sorted(files)], skipped


def read_clip(file: AudioFile, start: int, length: int, sample_rate: int) -> torch.Tensor:
    """Read `length` samples from `start` (both at `sample_rate`), mono, zero-padded past the end.

    Returns:
        `[length]` float32.

    Raises:
        AudioError: the file cannot be read (anymore) or holds non-finite samples.
    """
    return read_audio(file.path, sample_rate, start=start, length=length)[0][0]


def split_files(
    files: list[AudioFile], valid_files: list[AudioFile] | None, valid_clips: int, seed: int
) -> tuple[list[AudioFile], list[AudioFile]]:
    """Split into training and validation files.

    Without explicit validation files, `valid_clips` training files chosen by a seeded permutation are
    held out. Raises `DataError` when too few files remain.
    """
    if not files:
        raise DataError("the training data set is empty: no readable audio files were found")
    if valid_files is not None:
        if len(valid_files) < valid_clips:
            raise DataError(f"data.valid_paths has {len(valid_files)} readable files, fewer than valid_clips")
        return files, valid_files[:valid_clips]
    if len(files) <= valid_clips:
        raise DataError(
            f"only {len(files)} readable files: need more than data.valid_clips = {valid_clips} "
            "(one is held out per validation clip)"
        )
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:valid_clips])
    return [f for i, f in enumerate(files) if i not in held], [files[i] for i in sorted(held)]


class CropSampler:
    """Draws random training crops from a list of files.

    Args:
        files: the training files.
        sample_rate: training sample rate.
        length: crop length in samples.
        align: crop starts are multiples of this (the codec hop when latents are cached; 1 otherwise).
    """

    def __init__(self, files: list[AudioFile], sample_rate: int, length: int, align: int = 1) -> None:
        self.files, self.sample_rate, self.length, self.align = files, sample_rate, length, align
        self.weights = torch.tensor([f.length_at(sample_rate) for f in files], dtype=torch.float64)

    def draw(self, batch: int, generator: torch.Generator) -> list[Crop]:
        """`batch` crops: file ~ duration-weighted, start ~ uniform over the valid (aligned) range."""
        index = torch.multinomial(self.weights, batch, replacement=True, generator=generator)
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
        crops = []
        for i, ui in zip(index.tolist(), u.tolist()):
            slots = max(0, self.files[i].length_at(self.sample_rate) - self.length) // self.align + 1
            crops.append(Crop(i, min(int(ui * slots), slots - 1) * self.align))
        return crops

    def load(self, crops: list[Crop]) -> torch.Tensor:
        """Read crops as a batch `[B, 1, length]`."""
        if not crops:
            return torch.zeros(0, 1, self.length)
        clips = [read_clip(self.files[c.file], c.start, self.length, self.sample_rate) for c in crops]
        return torch.stack(clips)[:, None]


def validation_clips(files: list[AudioFile], sample_rate: int, length: int) -> torch.Tensor:
    """The first `length` samples of each validation file, `[N, 1, length]`."""
    return torch.stack([read_clip(f, 0, length, sample_rate) for f in files])[:, None]
