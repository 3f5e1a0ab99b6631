"""Bad and hostile inputs through the `mbd` command: exit codes, tracebacks, bad outputs, leftovers, memory.

    python benchmarks/bad_inputs.py                      # every case: a table, then the acceptance summary
    python benchmarks/bad_inputs.py --list               # the cases, one line each
    python benchmarks/bad_inputs.py --only mel_nan       # one case (repeat --only for more)
    python benchmarks/bad_inputs.py --json results.json  # also write the rows as JSON

Each case builds its inputs in its own folder of a temp dir and runs `python -m mbd ...` once, as a subprocess,
with tiny random models built here (a 4-band MBD of hidden-4 U-Nets and a random EnCodec 24 kHz) or the
bundled mel24k, and `--steps 2`. The child runs under a wrapper process that caps its data segment at 4 GiB
(`RLIMIT_DATA`: `RLIMIT_AS` cannot be used, as PyTorch's CUDA libraries map about 4.5 GB of address space at
import) and reports the child's peak RSS (`getrusage(RUSAGE_CHILDREN)`), so a runaway allocation fails instead
of swapping the machine. Per run it records: the exit code; whether stderr holds a Python traceback; whether a
new audio or array file holds NaN/inf or is constant or mostly DC; whether anything new other than the expected
outputs was left in the case folder or the cache (partial `*.part`/`*.tmp`/`tmp*` files, stray outputs);
whether an input was modified; the peak RSS; and whether the error message is one line that names the
offending file (or option) and holds no raw escape bytes.

Expectations: `error` (a bad input: exit 2 with such a message, nothing written), `ok` (must work: exit 0, the
expected outputs exist and are finite, non-constant audio), `either` (exit 0 with good outputs, or exit 2 with
a good message). The summary counts the acceptance targets; the script exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEL_MODEL = REPO / "checkpoints" / "mel24k.safetensors"
MEMORY_LIMIT = 4 << 30  # bytes of data segment a run may allocate
BIG_RSS = 2 << 30  # target: no run above this for inputs under SMALL_INPUT
SMALL_INPUT = 10 << 20
SR, HOP, N_Q, CARD = 24000, 320, 4, 1024
N_MELS = 100
LONG_MESSAGE = 300  # characters; a longer one-line message is reported as too long
TRACEBACK = "Traceback (most recent call last)"
TEMP_NAME = re.compile(r"(\.part$|\.tmp$|^tmp|^\.[^/]*\.tmp)", re.IGNORECASE)
SUMMARY_LINE = re.compile(r"^mbd: \w+ \d+ file\(s\)")
AUDIO = (".wav", ".flac")

# The wrapper: caps the child's data segment, runs it, writes the child's peak RSS (KiB) to a file.
WRAPPER = r"""
import resource, subprocess, sys
limit, rss_file, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def cap():
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
rc = subprocess.call(argv, preexec_fn=cap, stdin=subprocess.DEVNULL)
with open(rss_file, "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc if rc >= 0 else 128 - rc)
"""


# --- the shared assets: tiny models -----------------------------------------------------------------------


@dataclass(frozen=True)
class Assets:
    """Files every case may use, built once per harness run."""

    model: Path  # tiny random 4-band MBD (EnCodec 24 kHz, 4 codebooks), our safetensors format
    codec: Path  # random EnCodec 24 kHz weights (torch.save of its state_dict)
    mel_model: Path  # the bundled mel24k
    cache: Path  # MBD_CACHE of every run (offline)
    immutable: list[Path] = field(default_factory=list)  # folders made immutable, to undo at the end


def tiny_mbd(nan: bool = False):  # noqa: ANN201
    """A 4-band MBD of hidden-4 U-Nets with fitted-looking EQ statistics (as `decode_speed.py` builds)."""
    import torch

    from mbd.config import BandConfig, CodecConfig, MBDConfig
    from mbd.diffusion import PowerSchedule
    from mbd.pipeline import MultiBandDiffusion
    from mbd.processor import ProcessorConfig
    from mbd.unet import UNetConfig

    torch.manual_seed(0)
    unet = UNetConfig(hidden=4, growth=2, depth=3, res_blocks=1, kernel=8, stride=4, codec_dim=128)
    band = BandConfig(unet, PowerSchedule(), ProcessorConfig())
    model = MultiBandDiffusion(MBDConfig(SR, CodecConfig(n_q=N_Q), (band,) * 4))
    for b in model.bands:
        b.processor.counts.fill_(1.0)
        b.processor.sum_x2.fill_(0.01)
        b.processor.sum_target_x2.fill_(0.1)
    if nan:
        with torch.no_grad():
            next(model.bands[0].parameters()).fill_(float("nan"))
    return model.eval()


def random_encodec(path: Path) -> None:
    """EnCodec 24 kHz from the encodec package's factory with random (non-zero) codebooks, saved as weights."""
    import warnings

    import torch
    from encodec import EncodecModel

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    for layer in model.quantizer.vq.layers:  # k-means init leaves the codebooks at zero until training
        layer._codebook.embed.normal_()
        layer._codebook.inited.fill_(1)
    torch.save(model.state_dict(), path)


def build_assets(root: Path) -> Assets:
    (root / "assets").mkdir()
    (root / "cache").mkdir()
    model = root / "assets" / "tiny.safetensors"
    tiny_mbd().save(model)
    codec = root / "assets" / "encodec_random.th"
    random_encodec(codec)
    return Assets(model, codec, MEL_MODEL, root / "cache")


# --- what a case sets up --------------------------------------------------------------------------------


@dataclass
class Run:
    """One invocation: `python -m mbd *argv`, and what to check about it.

    Args:
        argv: arguments after `python -m mbd`.
        names: strings the error message must contain (the offending file's name, or the option's).
        outputs: files that must exist after a successful run (and may exist after a failed one only if listed
            in `outputs_on_error`).
        outputs_on_error: files a failing run is still expected to write (the good files of a batch).
        env: extra environment variables.
        timeout: seconds before the run is killed and counted as a failure.
        silent_ok: an all-zero output is correct (a silent input).
        check: extra check on (run, rc, stderr) returning problems.
        max_lines: lines the error message may take.
        any_audio: the run may write audio files of any name in the output folder (collisions: with exit 0 both
            must be there, with exit 2 the message must name both inputs).
    """

    argv: list[str]
    names: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    outputs_on_error: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0
    silent_ok: bool = False
    check: Callable[[Run, int, str], list[str]] | None = None
    max_lines: int = 1
    any_audio: bool = False


@dataclass
class Ws:
    """A case's workspace: `dir/in` for inputs, `dir/out` for outputs, and the shared assets."""

    dir: Path
    assets: Assets

    @property
    def inp(self) -> Path:
        return self.dir / "in"

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def decode(self, *inputs: Path, out: Path | None = None, extra: tuple[str, ...] = (), model: Path | None = None,
               codec: bool = True) -> list[str]:
        argv = ["decode", *map(str, inputs), "-o", str(out or self.out), "--model", str(model or self.assets.model)]
        argv += ["--codec-weights", str(self.assets.codec)] if codec else []
        return argv + ["--device", "cpu", "--steps", "2", "--seed", "0", *extra]

    def vocode(self, *inputs: Path, out: Path | None = None, extra: tuple[str, ...] = (),
               model: Path | str | None = None) -> list[str]:
        argv = ["vocode", *map(str, inputs), "-o", str(out or self.out), "--model", str(model or self.assets.mel_model)]
        return argv + ["--device", "cpu", "--steps", "2", "--seed", "0", *extra]

    def regenerate(self, *inputs: Path, out: Path | None = None, extra: tuple[str, ...] = (),
                   mel: bool = False) -> list[str]:
        argv = ["regenerate", *map(str, inputs), "-o", str(out or self.out), "--device", "cpu"]
        argv += ["--model", str(self.assets.mel_model)] if mel else [
            "--model", str(self.assets.model), "--codec-weights", str(self.assets.codec)]
        return argv + ["--steps", "2", "--seed", "0", *extra]


# --- input makers -----------------------------------------------------------------------------------------


def tokens(frames: int = 25, n_q: int = N_Q, seed: int = 0) -> np.ndarray:
    """Valid codes `[K, T]` int64."""
    return np.random.default_rng(seed).integers(0, CARD, (n_q, frames), dtype=np.int64)


def log_mel(frames: int = 40, n_mels: int = N_MELS) -> np.ndarray:
    """A plausible natural-log mel `[n_mels, T]` float32 (values around -11..2)."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n_mels, frames)) * 1.5 - 4.0).astype(np.float32)


def tone(seconds: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data, sr, subtype=subtype)
    return path


def raw_wav(path: Path, sample_rate: int, samples: np.ndarray) -> Path:
    """A 16-bit mono PCM WAV written byte by byte, so the header may claim anything."""
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, (sample_rate * 2) & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def save_npy(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def zip_bomb(path: Path, shape: tuple[int, int], dtype: str = "<i8") -> Path:
    """A `.npz` holding `codes` of zeros, deflated while streamed (the array is never held in memory)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), dtype=dtype))
    header["shape"] = shape
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open("codes.npy", "w",
                                                                                          force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        remaining = int(np.prod(shape)) * np.dtype(dtype).itemsize
        chunk = bytes(1 << 24)
        while remaining:
            n = min(remaining, len(chunk))
            f.write(chunk[:n])
            remaining -= n
    return path


def safetensors_file(path: Path, metadata: dict[str, str], tensors: dict | None = None) -> Path:
    """A safetensors file with arbitrary metadata (and by default one tiny tensor)."""
    import torch
    from safetensors.torch import save_file

    save_file(tensors if tensors is not None else {"x": torch.zeros(1)}, str(path), metadata=metadata)
    return path


def mbd_config() -> dict:
    return tiny_mbd().config.to_dict()


def mel_config() -> dict:
    from mbd import checkpoint

    return checkpoint.load(MEL_MODEL)[0]


def our_checkpoint(path: Path, config: dict | str | None, tensors: dict | None = None) -> Path:
    """A checkpoint in our format whose config JSON is `config` (a dict, raw JSON text, or absent)."""
    metadata = {"format": "mbd", "format_version": "1"}
    if config is not None:
        metadata["config"] = config if isinstance(config, str) else json.dumps(config)
    return safetensors_file(path, metadata, tensors)


def edited(config: dict, edit: Callable[[dict], None]) -> dict:
    config = json.loads(json.dumps(config))
    edit(config)
    return config


def real_tensors(path: Path) -> dict:
    from mbd import checkpoint

    return checkpoint.load(path)[1]


class Payload:
    """A pickle whose loading creates a marker file (a stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


# --- checks shared by cases -------------------------------------------------------------------------------


def no_marker(marker: Path) -> Callable[[Run, int, str], list[str]]:
    def check(run: Run, rc: int, err: str) -> list[str]:
        return [f"pickle payload ran ({marker.name} exists)"] if marker.exists() else []

    return check


def quiet_output(path: Path) -> Callable[[Run, int, str], list[str]]:
    def check(run: Run, rc: int, err: str) -> list[str]:
        if rc != 0 or not path.is_file():
            return []
        import soundfile

        level = float(np.abs(soundfile.read(path, dtype="float32")[0]).mean())
        return [] if level < 1e-3 else [f"silence in, mean |x| = {level:.2e} out (>= 1e-3)"]

    return check


def collision(inputs: list[Path]) -> Callable[[Run, int, str], list[str]]:
    """Both inputs' outputs must survive (2 audio files), or the error must name both inputs."""

    def check(run: Run, rc: int, err: str) -> list[str]:
        if rc == 0:
            made = [p for p in run_outputs(run) if p.suffix in AUDIO]
            return [] if len(made) >= 2 else [f"collision: {len(made)} output(s) for 2 inputs"]
        names = [p.name for p in inputs]
        labels = [p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in inputs]
        missing = [label for label in labels if label not in err]
        return [f"collision error does not name {missing}"] if missing else []

    return check


def run_outputs(run: Run) -> list[Path]:
    return [Path(p) for p in getattr(run, "_new", [])]


def short_message(run: Run, rc: int, err: str) -> list[str]:
    run._message_length = max((len(line) for line in err.splitlines()), default=0)  # type: ignore[attr-defined]
    return [] if rc == 0 or run._message_length <= LONG_MESSAGE else [f"message {run._message_length} chars"]


def no_escape(run: Run, rc: int, err: str) -> list[str]:
    return ["raw ESC byte in stderr"] if "\x1b" in err else []


# --- the cases --------------------------------------------------------------------------------------------
# Each setup function writes the case's inputs under ws.inp and returns the Run.


def _tok(ws: Ws, array: np.ndarray, name: str = "x.npy", **kw) -> Run:  # noqa: ANN003
    path = save_npy(ws.inp / name, array)
    return Run(ws.decode(path), names=[path.name], outputs=[ws.out / f"{path.stem}.wav"], **kw)


def _mel(ws: Ws, array: np.ndarray, name: str = "m.npy") -> Run:
    path = save_npy(ws.inp / name, array)
    return Run(ws.vocode(path), names=[path.name], outputs=[ws.out / "m.wav"])


def control_decode(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens())
    return Run(ws.decode(path, out=ws.out / "x.wav"), outputs=[ws.out / "x.wav"])


def control_vocode(ws: Ws) -> Run:
    path = save_npy(ws.inp / "m.npy", log_mel())
    return Run(ws.vocode(path, out=ws.out / "m.wav"), outputs=[ws.out / "m.wav"])


def control_regenerate(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", tone())
    return Run(ws.regenerate(path, out=ws.out / "a.wav"), outputs=[ws.out / "a.wav"])


def tokens_big_endian(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens().astype(">i8"))
    return Run(ws.decode(path, out=ws.out / "x.wav"), names=[path.name], outputs=[ws.out / "x.wav"])


def tokens_sparse_pt(ws: Ws) -> Run:
    import torch

    index = torch.tensor([[0, 1, 2, 3], [0, 5, 10, 10**9 - 1]])
    sparse = torch.sparse_coo_tensor(index, torch.tensor([1, 2, 3, 4]), (4, 10**9))  # 32 GB if made dense
    path = ws.inp / "x.pt"
    torch.save(sparse, path)
    return Run(ws.decode(path), names=[path.name], timeout=60)


def tokens_hostile_pickle(ws: Ws) -> Run:
    import torch

    marker = ws.dir / "PWNED"
    path = ws.inp / "x.pt"
    torch.save({"codes": Payload(marker)}, path)
    return Run(ws.decode(path), names=[path.name], check=no_marker(marker))


def tokens_zip_bomb_small(ws: Ws) -> Run:
    path = ws.inp / "x.npz"
    np.savez_compressed(path, codes=np.zeros((4, 450000), dtype=np.int64))
    return Run(ws.decode(path), names=[path.name], timeout=60)


def tokens_zip_bomb_large(ws: Ws) -> Run:
    path = zip_bomb(ws.inp / "x.npz", (4, 100_000_000))  # 3.2 GB of int64 zeros in about 3 MB
    return Run(ws.decode(path), names=[path.name], timeout=60)


def tokens_450000_frames(ws: Ws) -> Run:
    array = np.random.default_rng(0).integers(0, CARD, (4, 450000)).astype(np.int16)  # 3.6 MB, 100 minutes
    path = save_npy(ws.inp / "x.npy", array)
    return Run(ws.decode(path), names=[path.name], timeout=60)


def tokens_escape_name(ws: Ws) -> Run:
    path = ws.inp / "bad\x1b[31mred\x1b]0;title\x07.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a numpy file")
    return Run(ws.decode(path), names=["red"], check=no_escape)


def tokens_truncated(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens(200))
    path.write_bytes(path.read_bytes()[:300])
    return Run(ws.decode(path), names=[path.name])


def tokens_ecdc_garbage(ws: Ws) -> Run:
    path = ws.inp / "x.ecdc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ECDC\x00" + os.urandom(200))
    return Run(ws.decode(path), names=[path.name])


def tokens_pt_huge_size_claim(ws: Ws) -> Run:
    import torch

    path = ws.inp / "x.pt"
    torch.save({"codes": torch.zeros(4, 2, dtype=torch.int64), "sample_rate": 10**30}, path)
    return Run(ws.decode(path), names=[path.name])


def mel_npz(ws: Ws) -> Run:
    path = ws.inp / "x.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mel=log_mel())
    return Run(ws.vocode(path), names=[path.name])


def mel_pickled_object(ws: Ws) -> Run:
    path = ws.inp / "m.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return Run(ws.vocode(path), names=[path.name])


def wav_rate(rate: int) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        path = write_wav(ws.inp / "a.wav", tone(0.3, rate), rate)
        return Run(ws.regenerate(path, out=ws.out / "a.wav"), names=[path.name], outputs=[ws.out / "a.wav"])

    return setup


def wav_header_2g(ws: Ws) -> Run:
    ws.inp.mkdir(parents=True, exist_ok=True)
    path = raw_wav(ws.inp / "a.wav", 2147483647, tone(0.3))
    return Run(ws.regenerate(path), names=[path.name], timeout=60)


def wav_empty(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", np.zeros(0, dtype=np.float32))
    return Run(ws.regenerate(path), names=[path.name])


def wav_truncated_header(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", tone())
    path.write_bytes(path.read_bytes()[:30])
    return Run(ws.regenerate(path), names=[path.name])


def wav_truncated_data(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", tone(0.5))
    path.write_bytes(path.read_bytes()[: 44 + 2 * 9000])  # the header still claims 12000 samples
    return Run(ws.regenerate(path, out=ws.out / "a.wav"), names=[path.name], outputs=[ws.out / "a.wav"])


def wav_not_audio(ws: Ws) -> Run:
    path = ws.inp / "a.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is a text file, not audio\n" * 20)
    return Run(ws.regenerate(path), names=[path.name])


def wav_512_samples(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", tone(512 / SR))
    return Run(ws.regenerate(path, out=ws.out / "a.wav"), names=[path.name], outputs=[ws.out / "a.wav"])


def wav_nan_float(ws: Ws) -> Run:
    data = tone()
    data[100:200] = np.nan
    path = write_wav(ws.inp / "a.wav", data, subtype="FLOAT")
    return Run(ws.regenerate(path), names=[path.name])


def silence_mel24k(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", np.zeros(SR, dtype=np.float32))
    out = ws.out / "a.wav"
    return Run(ws.regenerate(path, out=out, mel=True), names=[path.name], outputs=[out], silent_ok=True,
               check=quiet_output(out))


def batch_one_bad(ws: Ws) -> Run:
    good = [save_npy(ws.inp / f"good{i}.npy", tokens(seed=i)) for i in range(2)]
    bad = save_npy(ws.inp / "bad.npy", tokens() + CARD)
    outs = [ws.out / f"good{i}.wav" for i in range(2)]
    return Run(ws.decode(*good, bad), names=["bad.npy"], outputs_on_error=outs,
               check=lambda run, rc, err: [f"missing good output {p.name}" for p in outs if not p.is_file()])


def collide_npy_npz(overwrite: bool) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        a = save_npy(ws.inp / "x.npy", tokens(seed=1))
        b = ws.inp / "x.npz"
        np.savez(b, codes=tokens(seed=2))
        extra = ("--overwrite",) if overwrite else ()
        return Run(ws.decode(a, b, extra=extra), names=[], outputs=[], check=collision([a, b]), any_audio=True)

    return setup


def collide_same_name(overwrite: bool) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        a = save_npy(ws.inp / "a" / "y.npy", tokens(seed=1))
        b = save_npy(ws.inp / "b" / "y.npy", tokens(seed=2))
        extra = ("--overwrite",) if overwrite else ()
        return Run(ws.decode(a, b, extra=extra), check=collision([a, b]), any_audio=True)

    return setup


def collide_wav_flac(overwrite: bool) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        a = write_wav(ws.inp / "a.wav", tone())
        b = write_wav(ws.inp / "a.flac", tone() * 0.5)
        extra = ("--overwrite",) if overwrite else ()
        return Run(ws.regenerate(a, b, extra=extra), check=collision([a, b]), any_audio=True)

    return setup


def out_unwritable(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens())
    ws.out.mkdir(parents=True)
    os.chmod(ws.out, 0o555)
    subprocess.run(["chattr", "+i", str(ws.out)], capture_output=True)  # read-only even for root
    ws.assets.immutable.append(ws.out)
    return Run(ws.decode(path), names=["out"])


def out_under_file(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens())
    blocker = ws.dir / "file.txt"
    blocker.write_text("a file, not a folder")
    return Run(ws.decode(path, out=blocker / "sub"), names=["file.txt"])


def out_existing_dir_overwrite(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens())
    target = ws.out / "x.wav"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("must survive")
    return Run(ws.decode(path, out=target, extra=("--overwrite",)), names=["x.wav"], outputs=[target / "x.wav"],
               check=lambda run, rc, err: [] if (target / "keep.txt").is_file() else ["folder contents destroyed"])


def out_mp3(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens())
    return Run(ws.decode(path, out=ws.out / "out.mp3"), names=["out.mp3"])


def encode_to_wav(ws: Ws) -> Run:
    path = write_wav(ws.inp / "a.wav", tone())
    out = ws.out / "t.wav"
    return Run(["encode", str(path), "-o", str(out), "--codec-weights", str(ws.assets.codec)], names=["t.wav"])


def vocode_in_place(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", log_mel())
    return Run(ws.vocode(path, out=path), names=["x.npy"])


def convert_missing_folder(ws: Ws) -> Run:
    out = ws.out / "missing" / "deeper" / "m.safetensors"
    return Run(["convert", str(ws.assets.model), str(out)], names=["missing"], outputs=[out])


def option(extra: tuple[str, ...], name: str, kind: str = "decode") -> Callable[[Ws], Run]:
    """A good input with one bad option; the message must name the option."""

    def setup(ws: Ws) -> Run:
        if kind == "vocode":
            path = save_npy(ws.inp / "m.npy", log_mel())
            return Run(ws.vocode(path, extra=extra), names=[name], outputs=[ws.out / "m.wav"])
        path = save_npy(ws.inp / "x.npy", tokens())
        return Run(ws.decode(path, extra=extra), names=[name], outputs=[ws.out / "x.wav"])

    return setup


def device(value: str) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        path = save_npy(ws.inp / "x.npy", tokens())
        argv = ws.decode(path)
        argv[argv.index("--device") + 1] = value
        return Run(argv, names=[value], outputs=[ws.out / "x.wav"])

    return setup


def steps_1000(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens(5))
    argv = ws.decode(path)
    argv[argv.index("--steps") + 1] = "1000"
    return Run(argv, names=["--steps"], outputs=[ws.out / "x.wav"], check=short_message, timeout=180)


def codec_weights(content: bytes | None) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        path = save_npy(ws.inp / "x.npy", tokens())
        weights = ws.dir / "weights.th"
        if content is not None:
            weights.write_bytes(content)
        argv = ws.decode(path)
        argv[argv.index("--codec-weights") + 1] = str(weights)
        return Run(argv, names=["weights.th"])

    return setup


def manifest_missing(ws: Ws) -> Run:
    path = save_npy(ws.inp / "m.npy", log_mel())
    manifest = ws.dir / "nowhere" / "manifest.toml"
    return Run(ws.vocode(path, model="mel24k"), names=["manifest.toml"], env={"MBD_MANIFEST": str(manifest)})


def cache_unwritable(ws: Ws) -> Run:
    path = save_npy(ws.inp / "x.npy", tokens())
    cache = ws.dir / "cache"
    cache.mkdir()
    os.chmod(cache, 0o555)
    subprocess.run(["chattr", "+i", str(cache)], capture_output=True)
    ws.assets.immutable.append(cache)
    return Run(ws.decode(path, codec=False), names=["cache"], env={"MBD_CACHE": str(cache), "MBD_OFFLINE": "1"})


def checkpoint_case(config: Callable[[], dict | str | None], command: str, tensors: str = "none",
                    timeout: float = 60) -> Callable[[Ws], Run]:
    """A malformed checkpoint used as `--model` (`decode`/`vocode`), or given to `info` or `convert`.

    Args:
        tensors: "none" (a 1 KB file with one dummy tensor), "mbd" or "mel" (the real tensors of that model).
    """

    def setup(ws: Ws) -> Run:
        ws.inp.mkdir(parents=True, exist_ok=True)
        real = {"mbd": ws.assets.model, "mel": ws.assets.mel_model}.get(tensors)
        ckpt = our_checkpoint(ws.inp / "bad.safetensors", config(), None if real is None else real_tensors(real))
        return _checkpoint_run(ws, ckpt, command, timeout)

    return setup


def _checkpoint_run(ws: Ws, ckpt: Path, command: str, timeout: float = 60) -> Run:
    if command == "info":
        return Run(["info", str(ckpt)], names=[ckpt.name], timeout=timeout)
    if command == "convert":
        ws.out.mkdir(exist_ok=True)
        return Run(["convert", str(ckpt), str(ws.out / "c.safetensors")], names=[ckpt.name], timeout=timeout)
    if command == "vocode":
        mel = save_npy(ws.inp / "m.npy", log_mel())
        return Run(ws.vocode(mel, model=ckpt), names=[ckpt.name], timeout=timeout)
    path = save_npy(ws.inp / "x.npy", tokens())
    return Run(ws.decode(path, model=ckpt), names=[ckpt.name], timeout=timeout)


def ckpt_nan_weights(ws: Ws) -> Run:
    ckpt = ws.inp / "nan.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tiny_mbd(nan=True).save(ckpt)
    return _checkpoint_run(ws, ckpt, "decode")


def ckpt_hostile_pickle(command: str) -> Callable[[Ws], Run]:
    def setup(ws: Ws) -> Run:
        import torch

        marker = ws.dir / "PWNED"
        ckpt = ws.inp / "evil.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"xp.cfg": Payload(marker), "model": {}}, ckpt)
        run = _checkpoint_run(ws, ckpt, command)
        run.check = no_marker(marker)
        return run

    return setup


def ckpt_truncated(ws: Ws) -> Run:
    ckpt = ws.inp / "cut.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(ws.assets.model.read_bytes()[:2000])
    return _checkpoint_run(ws, ckpt, "decode")


def info_fifo(ws: Ws) -> Run:
    fifo = ws.inp / "x.npy"
    os.mkfifo(fifo)
    return Run(["info", str(fifo)], names=[fifo.name], timeout=20)


def _set(path: str, value: object) -> Callable[[], dict]:
    """The tiny MBD's config (or mel24k's, path starting "mel:") with one entry replaced."""

    def make() -> dict:
        base = mel_config() if path.startswith("mel:") else mbd_config()
        keys = path.removeprefix("mel:").split(".")

        def edit(config: dict) -> None:
            node = config
            for key in keys[:-1]:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[keys[-1]] = value

        return edited(base, edit)

    return make


def _deep_json() -> str:
    return '{"sample_rate": 24000, "codec": ' + "[" * 200_000 + "]" * 200_000 + ', "bands": []}'


HUGE_UNET = _set("bands.0.unet", {"hidden": 1_000_000, "depth": 8, "growth": 4.0, "codec_dim": 128})
STEPS_1E9 = _set("bands.0.unet.num_steps", 1_000_000_000)


@dataclass(frozen=True)
class Case:
    """Args:
    name: the case's name (`--only`).
    setup: writes the inputs into the workspace and returns the run.
    expect: "error" (a bad input: exit 2, one-line message naming the file), "ok" (must work) or "either".
    about: what the input is.
    """

    name: str
    setup: Callable[[Ws], Run]
    expect: str
    about: str


CASES: list[Case] = [
    # controls: the harness itself works
    Case("control_decode", control_decode, "ok", "valid tokens decode"),
    Case("control_vocode", control_vocode, "ok", "valid log-mel with mel24k"),
    Case("control_regenerate", control_regenerate, "ok", "valid 0.3 s WAV regenerate"),
    # mel spectrograms (mel24k)
    Case("mel_db_scaled", lambda ws: _mel(ws, (log_mel() + 4) * 10 + 60), "either", "dB-scaled mel, values 20..100"),
    Case("mel_1e30", lambda ws: _mel(ws, np.full((N_MELS, 40), 1e30, np.float32)), "error", "values 1e30"),
    Case("mel_float64_huge", lambda ws: _mel(ws, np.full((N_MELS, 40), 1e300)), "error", "float64 beyond float32"),
    Case("mel_nan", lambda ws: _mel(ws, np.where(np.eye(N_MELS, 40) > 0, np.nan, log_mel())), "error", "NaN values"),
    Case("mel_inf", lambda ws: _mel(ws, np.where(np.eye(N_MELS, 40) > 0, -np.inf, log_mel())), "error", "-inf"),
    Case("mel_2_frames", lambda ws: _mel(ws, log_mel(2)), "either", "[100, 2]"),
    Case("mel_1_frame", lambda ws: _mel(ws, log_mel(1)), "error", "[100, 1]"),
    Case("mel_empty_batch", lambda ws: _mel(ws, np.zeros((0, N_MELS, 40), np.float32)), "error", "[0, 100, 40]"),
    Case("mel_transposed", lambda ws: _mel(ws, log_mel().T.copy()), "error", "[40, 100]"),
    Case("mel_wrong_n_mels", lambda ws: _mel(ws, log_mel(40, 80)), "error", "80 mel bins"),
    Case("mel_int", lambda ws: _mel(ws, np.zeros((N_MELS, 40), np.int32)), "error", "integer mel"),
    Case("mel_4d", lambda ws: _mel(ws, log_mel()[None, None]), "error", "[1, 1, 100, 40]"),
    Case("mel_npz", mel_npz, "error", "`mbd vocode x.npz`"),
    Case("mel_pickled_object", mel_pickled_object, "error", "object-dtype .npy (pickle)"),
    # token files (tiny MBD, random EnCodec)
    Case("tokens_big_endian", tokens_big_endian, "ok", ">i8 .npy tokens must decode"),
    Case("tokens_out_of_range", lambda ws: _tok(ws, tokens() + CARD), "error", "codes >= 1024"),
    Case("tokens_negative", lambda ws: _tok(ws, -tokens() - 1), "error", "negative codes"),
    Case("tokens_float", lambda ws: _tok(ws, tokens().astype(np.float32) + 0.5), "error", "float codes"),
    Case("tokens_1d", lambda ws: _tok(ws, tokens()[0]), "error", "[T]"),
    Case("tokens_2d_transposed", lambda ws: _tok(ws, tokens(25).T.copy()), "error", "[T, K]"),
    Case("tokens_4d", lambda ws: _tok(ws, tokens()[None, None]), "either", "[1, 1, K, T]"),
    Case("tokens_4d_batched", lambda ws: _tok(ws, np.stack([tokens()] * 4).reshape(2, 2, N_Q, -1)), "error",
         "[2, 2, K, T]"),
    Case("tokens_too_few_codebooks", lambda ws: _tok(ws, tokens(25, 2)), "error", "2 codebooks, model has 4"),
    Case("tokens_0_frames", lambda ws: _tok(ws, tokens(0)), "error", "[4, 0]"),
    Case("tokens_1_frame", lambda ws: _tok(ws, tokens(1)), "error", "[4, 1]"),
    Case("tokens_truncated_npy", tokens_truncated, "error", ".npy cut mid-data"),
    Case("tokens_ecdc_garbage", tokens_ecdc_garbage, "error", "random bytes as .ecdc"),
    Case("tokens_sparse_pt", tokens_sparse_pt, "error", ".pt of a sparse [4, 1e9] tensor"),
    Case("tokens_hostile_pickle", tokens_hostile_pickle, "error", ".pt whose pickle opens a file"),
    Case("tokens_pt_bad_sample_rate", tokens_pt_huge_size_claim, "error", ".pt with sample_rate 1e30"),
    Case("tokens_zip_bomb_14MB", tokens_zip_bomb_small, "either", "savez_compressed zeros [4, 450000]"),
    Case("tokens_zip_bomb_3GB", tokens_zip_bomb_large, "error", ".npz inflating to 3.2 GB"),
    Case("tokens_450000_frames", tokens_450000_frames, "either", "3.6 MB int16 [4, 450000] (100 min)"),
    Case("tokens_escape_name", tokens_escape_name, "error", "file name with terminal escapes"),
    # audio files (regenerate)
    Case("wav_44101hz", wav_rate(44101), "ok", "0.3 s at 44101 Hz"),
    Case("wav_7919hz", wav_rate(7919), "ok", "0.3 s at 7919 Hz"),
    Case("wav_header_2147483647hz", wav_header_2g, "error", "header claims 2147483647 Hz"),
    Case("wav_empty", wav_empty, "error", "0 samples"),
    Case("wav_truncated_header", wav_truncated_header, "error", "first 30 bytes of a WAV"),
    Case("wav_truncated_data", wav_truncated_data, "either", "data shorter than the header says"),
    Case("wav_not_audio", wav_not_audio, "error", "text file named .wav"),
    Case("wav_512_samples", wav_512_samples, "either", "512 samples"),
    Case("wav_nan_float", wav_nan_float, "error", "float WAV with NaN"),
    Case("silence_mel24k", silence_mel24k, "ok", "1 s digital silence through mel24k: output mean |x| < 1e-3"),
    # batches and output names
    Case("batch_one_bad", batch_one_bad, "error", "2 good + 1 bad: good outputs written, exit 2"),
    Case("collide_npy_npz", collide_npy_npz(False), "either", "x.npy + x.npz into one folder"),
    Case("collide_npy_npz_overwrite", collide_npy_npz(True), "either", "same, --overwrite"),
    Case("collide_same_name", collide_same_name(False), "either", "a/y.npy + b/y.npy"),
    Case("collide_same_name_overwrite", collide_same_name(True), "either", "same, --overwrite"),
    Case("collide_wav_flac", collide_wav_flac(False), "either", "regenerate a.wav + a.flac"),
    Case("collide_wav_flac_overwrite", collide_wav_flac(True), "either", "same, --overwrite"),
    Case("out_unwritable", out_unwritable, "error", "output folder not writable"),
    Case("out_under_file", out_under_file, "error", "-o below a regular file"),
    Case("out_existing_dir_overwrite", out_existing_dir_overwrite, "either", "-o x.wav is a folder, --overwrite"),
    Case("out_mp3", out_mp3, "error", "-o out.mp3"),
    Case("encode_to_wav", encode_to_wav, "error", "encode -o t.wav"),
    Case("vocode_in_place", vocode_in_place, "error", "vocode x.npy -o x.npy"),
    Case("convert_missing_folder", convert_missing_folder, "either", "convert into a missing folder"),
    # options
    Case("device_cuda_without_gpu", device("cuda"), "gpu", "--device cuda (error without a GPU)"),
    Case("device_bogus", device("bogus"), "error", "--device bogus"),
    Case("chunk_seconds_inf", option(("--chunk-seconds", "inf"), "--chunk-seconds"), "either", "inf"),
    Case("chunk_seconds_nan", option(("--chunk-seconds", "nan"), "--chunk-seconds"), "error", "nan"),
    Case("chunk_seconds_0", option(("--chunk-seconds", "0"), "--chunk-seconds"), "error", "0"),
    Case("chunk_seconds_negative", option(("--chunk-seconds", "-1"), "--chunk-seconds"), "error", "-1"),
    Case("steps_0", option(("--steps", "0"), "--steps"), "error", "--steps 0"),
    Case("steps_negative", option(("--steps", "-1"), "--steps"), "error", "--steps -1"),
    Case("steps_1000", steps_1000, "either", "--steps 1000: works or a short message"),
    Case("steps_0_vocode", option(("--steps", "0"), "--steps", "vocode"), "error", "vocode --steps 0"),
    Case("batch_size_0", option(("--batch-size", "0"), "--batch-size"), "error", "--batch-size 0"),
    Case("seed_negative", option(("--seed", "-1"), "--seed"), "either", "--seed -1"),
    Case("codec_weights_missing", codec_weights(None), "error", "--codec-weights of a missing file"),
    Case("codec_weights_garbage", codec_weights(os.urandom(4096)), "error", "--codec-weights of random bytes"),
    Case("codec_weights_empty_dict", codec_weights(b""), "error", "--codec-weights of an empty file"),
    Case("manifest_missing", manifest_missing, "error", "MBD_MANIFEST names a missing file"),
    Case("cache_unwritable_offline", cache_unwritable, "error", "MBD_CACHE read-only, MBD_OFFLINE=1, no weights"),
    # malformed checkpoints
    Case("ckpt_nan_weights", ckpt_nan_weights, "error", "a U-Net weight is NaN"),
    Case("ckpt_n_bands_0", checkpoint_case(_set("bands", []), "decode"), "error", "bands: []"),
    Case("ckpt_n_bands_0_convert", checkpoint_case(_set("bands", []), "convert"), "error", "convert, bands: []"),
    Case("ckpt_bands_5", checkpoint_case(_set("bands", 5), "decode"), "error", "bands: 5"),
    Case("ckpt_bands_5_info", checkpoint_case(_set("bands", 5), "info"), "error", "info, bands: 5"),
    Case("ckpt_missing_config", checkpoint_case(lambda: None, "decode"), "error", "no config metadata"),
    Case("ckpt_missing_config_convert", checkpoint_case(lambda: None, "convert"), "error", "convert, no config"),
    Case("ckpt_null_config", checkpoint_case(lambda: "null", "decode"), "error", "config: null"),
    Case("ckpt_null_config_info", checkpoint_case(lambda: "null", "info"), "error", "info, config: null"),
    Case("ckpt_deep_json", checkpoint_case(_deep_json, "decode"), "error", "200000-deep nested JSON config"),
    Case("ckpt_deep_json_info", checkpoint_case(_deep_json, "info"), "error", "info, deep JSON"),
    Case("ckpt_negative_width", checkpoint_case(_set("bands.0.unet.hidden", -4), "decode"), "error", "hidden -4"),
    Case("ckpt_stride_0", checkpoint_case(_set("bands.0.unet.stride", 0), "decode"), "error", "U-Net stride 0"),
    Case("ckpt_huge_unet", checkpoint_case(HUGE_UNET, "decode"), "error", "1 KB file, hidden 1e6 U-Net"),
    Case("ckpt_huge_unet_info", checkpoint_case(HUGE_UNET, "info"), "error", "info, hidden 1e6 U-Net"),
    Case("ckpt_huge_unet_convert", checkpoint_case(HUGE_UNET, "convert"), "error", "convert, hidden 1e6"),
    Case("ckpt_num_steps_1e9", checkpoint_case(STEPS_1E9, "decode"), "error", "1 KB file, num_steps 1e9"),
    Case("ckpt_mel_n_bands_0", checkpoint_case(_set("mel:spectral.n_bands", 0), "vocode"), "error", "spectral 0"),
    Case("ckpt_mel_n_bands_negative", checkpoint_case(_set("mel:spectral.n_bands", -2), "vocode"), "error", "bands -2"),
    Case("ckpt_mel_hop_0", checkpoint_case(_set("mel:mel.hop_length", 0), "vocode", "mel"), "error", "mel hop 0"),
    Case("ckpt_mel_hop_0_info", checkpoint_case(_set("mel:mel.hop_length", 0), "info", "mel"), "error", "info"),
    Case("ckpt_mel_negative_width", checkpoint_case(_set("mel:net.dim", -256), "vocode"), "error", "-256"),
    Case("ckpt_mel_huge_net", checkpoint_case(_set("mel:net.dim", 1_000_000), "vocode"), "error", "dim 1e6"),
    Case("ckpt_mel_steps_1e9", checkpoint_case(_set("mel:steps", 1_000_000_000), "vocode", "mel"), "error",
         "default steps 1e9 (refuse, or --steps 2 must win)"),
    Case("ckpt_hostile_pickle", ckpt_hostile_pickle("decode"), "error", "--model .pt whose pickle opens a file"),
    Case("ckpt_hostile_pickle_info", ckpt_hostile_pickle("info"), "error", "info on it"),
    Case("ckpt_truncated", ckpt_truncated, "error", "first 2000 bytes of a checkpoint"),
    # misc
    Case("info_fifo", info_fifo, "error", "`mbd info` on a FIFO (20 s timeout)"),
]


# --- the runner -------------------------------------------------------------------------------------------


@dataclass
class Result:
    case: str
    expect: str
    rc: int | None
    traceback: bool
    bad_output: list[str]
    stale: list[str]
    peak_mib: float | None
    input_mib: float
    message: str  # "ok", "multi-line", "unnamed", "-" (no error) or "timeout"
    problems: list[str]
    seconds: float
    stderr_tail: str
    passed: bool = False


def snapshot(*roots: Path) -> dict[Path, tuple[int, int]]:
    files = {}
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                files[path] = (st.st_size, st.st_mtime_ns)
    return files


def message_lines(stderr: str) -> list[str]:
    """The error message proper: stderr without notes, summaries, argparse usage and indented detail."""
    lines = []
    for line in stderr.splitlines():
        if not line.strip() or line[0] in " \t" or line.startswith(("usage:", "mbd: note:", "mbd: wrote ")):
            continue
        if SUMMARY_LINE.match(line) or line.startswith("mbd: the '"):  # batch summary, licence notice
            continue
        lines.append(line)
    return lines


def output_problems(path: Path, silent_ok: bool) -> list[str]:
    """NaN/inf, constant or mostly-DC content of a new audio or array file."""
    try:
        if path.suffix in AUDIO:
            import soundfile

            data = soundfile.read(path, dtype="float64")[0]
        elif path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
            if not np.issubdtype(data.dtype, np.floating):
                return []
        else:
            return []
    except Exception as err:  # noqa: BLE001
        return [f"{path.name}: unreadable ({type(err).__name__})"]
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return [f"{path.name}: empty"]
    if not np.isfinite(data).all():
        return [f"{path.name}: NaN/inf"]
    level, offset = np.abs(data).mean(), abs(data.mean())
    if np.ptp(data) == 0 and not (silent_ok and level == 0):
        return [f"{path.name}: constant {data.flat[0]:.3g}"]
    if level > 1e-3 and offset > 0.5 * level:
        return [f"{path.name}: mostly DC (mean {data.mean():.3g}, mean |x| {level:.3g})"]
    return []


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a run: this checkout's `mbd` first on the path, one thread unless told otherwise."""
    env = {**os.environ, **extra}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return env


def run_case(case: Case, root: Path, assets: Assets, slack: float = 0.0) -> Result:
    """Set up and run one case; `slack` seconds (the command's start-up time) are added to its timeout."""
    ws = Ws(root / "cases" / case.name, assets)
    ws.inp.mkdir(parents=True)
    try:
        run = case.setup(ws)
    except Exception as err:  # noqa: BLE001 - a broken case is a failed row, not a crashed harness
        return Result(case.name, case.expect, None, False, [], [], None, 0.0, "-",
                      [f"harness setup failed: {type(err).__name__}: {err}"], 0.0, "")
    expect = case.expect
    if expect == "gpu":
        import torch

        expect = "ok" if torch.cuda.is_available() else "error"
    inputs = snapshot(ws.inp)
    input_mib = sum(size for size, _ in inputs.values()) / 2**20
    before = snapshot(ws.dir, assets.cache)
    env = child_env({"MBD_CACHE": str(assets.cache), "MBD_OFFLINE": "1", **run.env})
    rss_file = root / f"{case.name}.rss"
    cmd = [sys.executable, "-c", WRAPPER, str(MEMORY_LIMIT), str(rss_file), sys.executable, "-m", "mbd", *run.argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ws.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=run.timeout + slack)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the wrapper's own process group: it and the mbd child
        out, err = proc.communicate()
        timed_out = True
    seconds = time.perf_counter() - t0
    stderr = err.decode("utf-8", "replace")
    rc = None if timed_out else proc.returncode
    peak = int(rss_file.read_text()) / 1024 if rss_file.is_file() else None

    after = snapshot(ws.dir, assets.cache)
    new = sorted(p for p in after if p not in before or after[p] != before[p])
    run._new = [str(p) for p in new]  # type: ignore[attr-defined]
    allowed = set(run.outputs if rc == 0 else run.outputs_on_error)
    if rc in (0, 2) and run.any_audio:
        allowed |= {p for p in new if p.is_relative_to(ws.out) and p.suffix in AUDIO}
    stale = [str(p.relative_to(root)) + (" (temp)" if TEMP_NAME.search(p.name) else "")
             for p in new if p not in allowed and p not in inputs]
    bad_output = [problem for p in new if p.is_file() for problem in output_problems(p, run.silent_ok)]

    problems = []
    changed = [p.name for p, state in inputs.items() if snapshot(ws.inp).get(p) != state]
    if changed:
        problems.append(f"input modified or deleted: {changed}")
    if timed_out:
        problems.append(f"timed out after {run.timeout:.0f} s")
    traceback = TRACEBACK in stderr
    message = "-"
    if rc not in (0, None):
        lines = message_lines(stderr)
        text = "\n".join(lines)
        if len(lines) > run.max_lines or not lines:
            message = "multi-line" if lines else "empty"
        elif not all(name in text for name in run.names):
            message = "unnamed"
        elif "\x1b" in text:
            message = "escape"
        else:
            message = "ok"
    elif timed_out:
        message = "timeout"
    if rc == 0:
        problems += [f"missing output {p.name}" for p in run.outputs if not p.is_file()]
    if run.check is not None:
        problems += run.check(run, rc if rc is not None else -1, stderr)
    wanted = {"error": (2,), "ok": (0,), "either": (0, 2)}[expect]
    if rc not in wanted:
        problems.append(f"exit {rc}, expected {' or '.join(map(str, wanted))}")
    if peak is not None and peak * 2**20 > BIG_RSS and input_mib * 2**20 < SMALL_INPUT:
        problems.append(f"peak RSS {peak:.0f} MiB for {input_mib:.2f} MiB of input")
    result = Result(case.name, expect, rc, traceback, bad_output, stale, peak, input_mib, message, problems,
                    seconds, "\n".join(stderr.strip().splitlines()[-3:])[-300:])
    result.passed = (not traceback and not bad_output and not stale and not problems
                     and message in ("ok", "-"))
    return result


def summary(results: list[Result]) -> tuple[list[str], bool]:
    """The acceptance counts; True when every target is met."""
    targets = [
        ("tracebacks", [r.case for r in results if r.traceback]),
        ("files with NaN/inf or constant/DC audio", [r.case for r in results if r.bad_output]),
        ("partial, temp or stale files left", [r.case for r in results if r.stale]),
        ("runs above 2 GB for inputs under 10 MB",
         [r.case for r in results if r.peak_mib is not None and r.peak_mib > BIG_RSS / 2**20
          and r.input_mib < SMALL_INPUT / 2**20]),
        ("error messages not one line naming the file",
         [r.case for r in results if r.message not in ("ok", "-")]),
        ("bad inputs without exit code 2", [r.case for r in results if r.expect == "error" and r.rc != 2]),
        ("timeouts", [r.case for r in results if r.rc is None]),
        ("other failures (must-work cases, custom checks, modified inputs)",
         [r.case for r in results if any(not p.startswith(("exit ", "timed out", "peak RSS")) for p in r.problems)]),
    ]
    lines = [f"{len(results)} cases, {sum(r.passed for r in results)} passed, "
             f"{sum(not r.passed for r in results)} failed"]
    for label, cases in targets:
        lines.append(f"  {label}: {len(cases)} (target 0){': ' + ', '.join(cases) if cases else ''}")
    return lines, all(r.passed for r in results)


def row(r: Result) -> str:
    peak = "-" if r.peak_mib is None else f"{r.peak_mib:.0f}"
    notes = "; ".join(r.bad_output + r.problems + [f"left {s}" for s in r.stale[:3]])
    return (f"| {r.case} | {r.expect} | {r.rc} | {'YES' if r.traceback else ''} | {'YES' if r.bad_output else ''} | "
            f"{'YES' if r.stale else ''} | {peak} | {r.message} | {'pass' if r.passed else 'FAIL'} | "
            f"{r.seconds:.1f} | {notes[:160]} |")


HEADER = """\
| case | expect | exit | traceback | NaN/DC out | stale files | peak MiB | message | result | s | notes |
|---|---|---:|---|---|---|---:|---|---|---:|---|"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run only this case (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    parser.add_argument("--verbose", "-v", action="store_true", help="print each failing run's stderr tail")
    args = parser.parse_args(argv)
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    if args.list:
        for c in CASES:
            print(f"{c.name:32s} {c.expect:7s} {c.about}")
        return 0
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; see --list")
    cases = [c for c in CASES if not args.only or c.name in args.only]
    root = Path(tempfile.mkdtemp(prefix="mbd-bad-inputs-"))
    assets = build_assets(root)
    results = []
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mbd", "--version"], capture_output=True, env=child_env({}))
    slack = time.perf_counter() - t0  # start-up time (imports), added to every timeout
    print(f"start-up {slack:.1f} s; {len(cases)} cases, {args.jobs} at a time\n", flush=True)
    try:
        print(HEADER, flush=True)
        pool = ThreadPoolExecutor(args.jobs)
        for result in pool.map(lambda case: run_case(case, root, assets, slack), cases):
            results.append(result)
            print(row(result), flush=True)
            if args.verbose and not result.passed:
                print("    " + result.stderr_tail.replace("\n", "\n    "), flush=True)
    finally:
        for path in assets.immutable:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
            os.chmod(path, 0o755)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    lines, ok = summary(results)
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
