"""Speed of a mel vocoder on CPU: seconds to turn `--seconds` of log-mel into audio, against Griffin-Lim.

The log-mel is that of a real clip (`examples/speech.flac`, tiled and cropped to the length). Systems: the
model's default `vocode(mel)`, the model at each of `--steps`, and librosa's Griffin-Lim (`mel_to_audio`,
`--gl-iters` iterations, the same mel definition as `mel_quality.py`). Model loading is excluded, each
system gets one untimed warm-up call, then `--repeats` interleaved timed runs (system order rotated each
round); the median is reported with x real time (audio seconds / wall seconds) and the time relative to
Griffin-Lim. Peak RSS is the process's `ru_maxrss` (model and every run included).

    python benchmarks/mel_speed.py [--model mel24k] [--seconds 10] [--threads 2] [--steps 4,8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import julius
import soundfile as sf
import torch
from mel_quality import griffin_lim

from mbd.api import load_model

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def clip(path: Path, sample_rate: int, seconds: float, hop: int) -> torch.Tensor:
    """`path` at `sample_rate`, mono, tiled and cropped to `seconds` (a whole number of hops): `[1, 1, L]`."""
    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = torch.from_numpy(wav.mean(axis=1))
    if sr != sample_rate:
        audio = julius.resample_frac(audio, sr, sample_rate)
    length = int(seconds * sample_rate) // hop * hop
    return audio.repeat(-(-length // audio.numel()))[:length][None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mel24k", help="a bundled name or a .safetensors path")
    parser.add_argument("--audio", type=Path, default=REPO / "examples" / "speech.flac")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=lambda t: [int(x) for x in t.split(",") if x.strip()], default=[])
    parser.add_argument("--gl-iters", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(str(args.model), "cpu")
    features = model.features
    assert features is not None, "a mel model is needed"
    wav = clip(args.audio, model.sample_rate, args.seconds, model.hop_length)
    length = wav.shape[-1]
    mel = features.frame_aligned(wav)  # [1, n_mels, L / hop]: the model's input
    full = features(wav)  # [1, n_mels, L / hop + 1]: the centred STFT's frames, for Griffin-Lim
    rss_loaded = peak_rss_mib()

    def vocode(n: int | None) -> Callable[[], object]:
        steps = None if n is None else model.step_list(n)
        return lambda: model.vocode(mel, steps=steps, generator=torch.Generator().manual_seed(0))

    systems: dict[str, Callable[[], object]] = {"default": vocode(None)}
    systems.update({f"steps {n}": vocode(n) for n in args.steps})
    gl = f"griffin-lim {args.gl_iters}"
    systems[gl] = lambda: griffin_lim(full, features, length, args.gl_iters)
    with torch.inference_mode():
        for fn in systems.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in systems}
        names = list(systems)
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                tic = time.perf_counter()
                systems[name]()
                times[name].append(time.perf_counter() - tic)
    audio_s = length / model.sample_rate
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"\n{audio_s:.2f} s of log-mel ({args.audio.name}), model {args.model}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} runs"
    )
    print("| system | seconds | x real time | time / Griffin-Lim |\n| --- | ---: | ---: | ---: |")
    for name, s in median.items():
        print(f"| {name} | {s:.3f} | {audio_s / s:.2f} | {s / median[gl]:.2f} |")
    spread = {name: f"{min(t):.3f}-{max(t):.3f}" for name, t in times.items()}
    print(f"\nrange (s): {spread}")
    print(f"peak RSS: {rss_loaded:.0f} MiB after loading, {peak_rss_mib():.0f} MiB at the end")


if __name__ == "__main__":
    main()
