"""Quality of a mel vocoder on held-out clips, against the ground truth and a Griffin-Lim baseline.

For each held-out clip (the first `--seconds` of it, cut to a whole number of mel frames) the log-mel is
computed with the model's own definition (`mbd.mel`) and turned back into audio by:

- `griffin-lim`: librosa's `mel_to_audio` with the same mel (HTK scale, no norm, magnitude, centred,
  reflect padding), `--gl-iters` iterations (default 32);
- `ddpm-20`: the model with AudioCraft's 20-step DDPM list; `ddim-10` and `dpm++2m-10`: the fewer-step
  samplers with 10 steps. Each raw (`raw`: the sum of the bands, `mel_eq=0`) and re-EQ'd against the mel
  per frame and mel band (`mel-eq`: `MelSpectrogram.equalize`, the default of `vocode`);
- `ddpm-20 band-eq`: the alternative re-EQ, MBD's 32-band whole-clip `re_eq` against a cheap random-phase
  reference with the mel's band energies;
- `noise mel-eq`: a control, white noise re-EQ'd against the mel: what the re-EQ alone achieves.

Metrics against the ground truth (all clips): log-mel L1 (mean |log-mel difference|, the model's mel),
multi-resolution STFT distance (mean over FFT sizes 512/1024/2048, hop n_fft/4, of spectral convergence plus
mean |log-magnitude difference|), SI-SDR (dB). Speech clips only: PESQ (wide band, at 16 kHz; `pip install
pesq`) and STOI (`pip install pystoi`). Lower is better for the distances, higher for the rest.

    python benchmarks/mel_quality.py [--model mel24k] [--clips 21] [--seconds 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import julius
import librosa
import numpy as np
import soundfile as sf
import torch

from mbd import MultiBandDiffusion
from mbd.eq import re_eq
from mbd.mel import MelSpectrogram
from mbd.options import InferenceOptions

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = [
    "griffin-lim", "ddpm-20 raw", "ddim-10 raw", "dpm++2m-10 raw", "ddpm-20 mel-eq", "ddim-10 mel-eq",
    "dpm++2m-10 mel-eq", "ddpm-20 band-eq", "noise mel-eq",
]  # fmt: skip
METRICS = ["mel_l1", "mrstft", "si_sdr", "pesq", "stoi"]


def log_mel_l1(features: MelSpectrogram, est: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean |log-mel(est) - log-mel(ref)| for audio `[1, 1, L]`."""
    return (features(est) - features(ref)).abs().mean().item()


def mrstft(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Multi-resolution STFT distance (spectral convergence + log-magnitude L1, mean over 3 resolutions)."""
    total = 0.0
    for n_fft in (512, 1024, 2048):
        window = torch.hann_window(n_fft)
        e = torch.stft(est.flatten(), n_fft, n_fft // 4, window=window, return_complex=True).abs()
        r = torch.stft(ref.flatten(), n_fft, n_fft // 4, window=window, return_complex=True).abs()
        convergence = torch.linalg.norm(r - e) / torch.linalg.norm(r).clamp(min=1e-8)
        log_l1 = (torch.log(e + 1e-5) - torch.log(r + 1e-5)).abs().mean()
        total += (convergence + log_l1).item()
    return total / 3


def si_sdr(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019) of `[..., L]` signals, zero-mean."""
    est, ref = est.flatten().double(), ref.flatten().double()
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref).clamp(min=1e-12) * ref
    return (10 * torch.log10((target @ target) / ((est - target) @ (est - target)).clamp(min=1e-12))).item()


def speech_scores(est: torch.Tensor, ref: torch.Tensor, sr: int) -> dict[str, float]:
    """PESQ (wb, 16 kHz) and STOI, NaN when the package is missing or the clip is refused."""
    scores = {"pesq": math.nan, "stoi": math.nan}
    e16 = julius.resample_frac(est.flatten(), sr, 16000).numpy().astype(np.float64)
    r16 = julius.resample_frac(ref.flatten(), sr, 16000).numpy().astype(np.float64)
    try:
        from pesq import pesq

        scores["pesq"] = float(pesq(16000, r16, e16, "wb"))
    except Exception as err:  # noqa: BLE001  (missing package, or pesq's NoUtterancesError)
        print(f"  pesq: {err}")
    try:
        from pystoi import stoi

        scores["stoi"] = float(stoi(r16, e16, 16000, extended=False))
    except Exception as err:  # noqa: BLE001
        print(f"  stoi: {err}")
    return scores


def griffin_lim(mel: torch.Tensor, features: MelSpectrogram, length: int, iters: int) -> torch.Tensor:
    """Griffin-Lim from a log-mel `[1, n_mels, length // hop + 1]` (same mel definition); audio `[1, 1, length]`."""
    c = features.config
    np.random.seed(0)  # librosa's random initial phases
    wav = librosa.feature.inverse.mel_to_audio(
        np.exp(mel[0].double().numpy()), sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, center=True,
        pad_mode="reflect", power=1.0, n_iter=iters, htk=True, norm=None, fmin=c.f_min, fmax=c.f_max,
        length=length,
    )  # fmt: skip
    return torch.from_numpy(wav).float()[None, None]


def random_phase_reference(mel: torch.Tensor, features: MelSpectrogram, length: int, seed: int) -> torch.Tensor:
    """Audio `[1, 1, length]` with the band energies of a log-mel `[1, n_mels, T]`: the least-squares linear
    magnitude with random phases, one inverse STFT (scaled by sqrt(1.5), the energy lost to incoherent
    overlap-add of Hann frames at 4x overlap)."""
    c = features.config
    fb = features.mel.mel_scale.fb  # [n_freqs, n_mels]
    magnitude = (torch.linalg.pinv(fb.T.double()) @ mel[0].exp().double()).clamp(min=0).float()  # [n_freqs, T']
    frames = magnitude.shape[-1] + 1  # the centred STFT of `length` samples
    magnitude = torch.nn.functional.pad(magnitude, (0, frames - magnitude.shape[-1]), mode="replicate")
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    spec = torch.polar(magnitude, phase)
    wav = torch.istft(spec, c.n_fft, c.hop_length, window=torch.hann_window(c.n_fft), center=True, length=length)
    return wav[None, None] * math.sqrt(1.5)


def held_out(manifest: Path, n: int) -> list[dict[str, str]]:
    """The first `n` clips in a fixed kind-interleaved order (speech, music, other, speech, ...)."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    by_kind: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    order = []
    while any(by_kind.values()):
        for kind in ("speech", "music", "other"):
            if by_kind.get(kind):
                order.append(by_kind[kind].pop(0))
    return order[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mel24k")
    parser.add_argument("--manifest", type=Path, default=REPO / "recipes" / "mel24k_heldout.csv")
    parser.add_argument("--clips", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--gl-iters", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = MultiBandDiffusion.from_pretrained(args.model)
    features, sr, hop = model.features, model.sample_rate, model.hop_length
    assert features is not None, "a mel model is needed"
    rows = held_out(args.manifest, args.clips)
    results: list[dict] = []
    tic = time.perf_counter()
    for i, row in enumerate(rows):
        wav, file_sr = sf.read(args.manifest.parent / row["path"], dtype="float32")
        assert file_sr == sr, f"{row['path']}: {file_sr} Hz"
        length = min(len(wav), int(args.seconds * sr)) // hop * hop
        ref = torch.from_numpy(wav[:length])[None, None]  # [1, 1, L]
        full = features(ref)  # [1, n_mels, T + 1]: the centred STFT's frames, all given to Griffin-Lim
        mel = full[..., : length // hop]  # [1, n_mels, T], T * hop = L: the model's input
        outs = {"griffin-lim": griffin_lim(full, features, length, args.gl_iters)}
        for name, sampler, n in [("ddpm-20", "ddpm", 20), ("ddim-10", "ddim", 10), ("dpm++2m-10", "dpm++2m", 10)]:
            options = InferenceOptions(sampler=sampler)
            generator = torch.Generator().manual_seed(i)
            steps = model.step_list(n, sampler)
            raw = model.vocode(mel, steps=steps, generator=generator, options=options, mel_eq=0.0)
            outs[f"{name} raw"], outs[f"{name} mel-eq"] = raw, features.equalize(raw, mel)
        reference = random_phase_reference(mel, features, length, i)
        outs["ddpm-20 band-eq"] = re_eq(outs["ddpm-20 raw"], reference, sr, 32)
        noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(i)) * 0.01
        outs["noise mel-eq"] = features.equalize(noise, mel)
        for system, est in outs.items():
            scores = {"mel_l1": log_mel_l1(features, est, ref), "mrstft": mrstft(est, ref), "si_sdr": si_sdr(est, ref)}
            scores.update(speech_scores(est, ref, sr) if row["kind"] == "speech" else {"pesq": None, "stoi": None})
            results.append({"clip": row["path"], "kind": row["kind"], "system": system, **scores})
        print(
            f"[{i + 1}/{len(rows)}] {row['path']} ({row['kind']}, {length / sr:.2f} s) "
            f"{time.perf_counter() - tic:.0f} s",
            flush=True,
        )
    print_table(results, rows, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def print_table(results: list[dict], rows: list[dict], args: argparse.Namespace) -> None:
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("speech", "music", "other")}
    seconds = f"first {args.seconds:g} s of each"
    print(
        f"\n{len(rows)} held-out clips ({', '.join(f'{v} {k}' for k, v in kinds.items())}; {seconds}), "
        f"model {args.model}, Griffin-Lim {args.gl_iters} iterations"
    )
    print("| system | log-mel L1 ↓ | MR-STFT ↓ | SI-SDR (dB) ↑ | PESQ wb ↑ (speech) | STOI ↑ (speech) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for system in SYSTEMS:
        mine = [r for r in results if r["system"] == system]
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in mine if r[metric] is not None and not math.isnan(r[metric])]
            cells.append(f"{np.mean(values):.3f}" if values else "n/a")
        print(f"| {system} | " + " | ".join(cells) + " |")
    print("\nlog-mel L1 by kind:")
    for kind in (k for k, v in kinds.items() if v):
        line = [
            f"{s} {np.mean([r['mel_l1'] for r in results if r['system'] == s and r['kind'] == kind]):.3f}"
            for s in SYSTEMS
        ]
        print(f"  {kind}: " + ", ".join(line))


if __name__ == "__main__":
    main()
