"""Quality of a mel vocoder on held-out clips, against the ground truth and a Griffin-Lim baseline.

Each held-out clip (fixed speech/music/other interleaved order; its first `--seconds`, cut to whole mel
frames) is turned into the model's log-mel (`mbd.mel`) and back into audio by these systems (table rows):

- `ground truth`: the clip itself (the ceiling of the no-reference scores);
- `griffin-lim`: librosa's `mel_to_audio` with the same mel (HTK, no norm, magnitude, centred, reflect
  padding), `--gl-iters` iterations (default 32) from seeded random phases;
- `noise + mel-eq`: a control, white noise re-EQ'd against the mel (what the re-EQ alone achieves);
- the model, from the same seed per clip: `raw` (`vocode(mel_eq=0, griffin_lim=0)`), `mel-eq` (`mel_eq=1,
  griffin_lim=0`),
  `mel-eq + GL k w=W` for k in `--polish` and w in `--weights` (k Griffin-Lim iterations from the model's
  phase on the magnitudes A_model^w A_mel^(1-w), `vocode(griffin_lim=k, model_magnitude=w)`; spectral models
  only) and its control `control: GL k w=0 random phase` (the same iterations on the mel's least-squares
  magnitudes from random phases: no network at all, what the network's phase has to beat), `default`
  (`vocode(mel)`, only the generator given); `--steps 4,8` adds raw/mel-eq/default `@4`, `@8`.

Metrics against the ground truth, all clips: log-mel L1 (mean |log-mel difference|), MR-STFT (mean over FFT
sizes 512/1024/2048, hop n_fft/4, of spectral convergence plus mean |log-magnitude difference|), SI-SDR (dB).
Speech clips only, at 16 kHz (julius): PESQ wb, STOI, DNSMOS OVRL (Microsoft's P.835 DNSMOS via speechmos,
its bundled non-personalised ONNX models, no reference; speechmos tiles clips shorter than 9 s), and the
pitch metrics of CARGAN (Morrison et al., ICLR 2022; repo descriptinc/cargan): torchcrepe "full" model,
viterbi decoding (torchcrepe's default, as CARGAN), fmin 50, fmax 550 Hz, hop 10 ms (CARGAN: 256 samples at
22.05 kHz), centred frames, periodicity zeroed below -60 dB A-weighted loudness (`threshold.Silence`, as
CARGAN). Periodicity RMSE: between the periodicity sequences of estimate and reference, pooled over all
frames. V/UV F1: voiced = periodicity passes CARGAN's threshold, torchcrepe's `Hysteresis()` (0.19 lower,
0.31 upper bound); F1 of the estimate's voicing against the reference's, counts pooled over clips. PESQ,
STOI, torchcrepe, speechmos, matplotlib are imported lazily (`pip install mbd[bench]`); missing: "n/a".
CREPE full costs about 0.1 s per frame on one busy CPU core (`--crepe tiny` for quick looks).

Under the table the `default` row is checked against targets (PASS/FAIL; `--check`: exit 1 on any FAIL or
unmeasured target). A PNG shows log-magnitude spectrograms of one speech clip.

    python benchmarks/mel_quality.py [--model mel24k] [--clips 21] [--seconds 4] [--steps 4,8] [--polish 32]
        [--weights 1,0] [--skip SYSTEMS] [--crepe full|tiny] [--json out.json] [--png benchmarks/mel_quality.png]
        [--check]
    python benchmarks/mel_quality.py --merge a.json b.json [--default-polishes] [--check]
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import julius
import librosa
import numpy as np
import soundfile as sf
import torch

from mbd.api import load_model
from mbd.griffin_lim import polish as polish_stft
from mbd.mel import MelSpectrogram
from mbd.pipeline import MultiBandDiffusion
from mbd.spectral_mbd import SpectralMBD

REPO = Path(__file__).resolve().parents[1]
METRICS = ["mel_l1", "mrstft", "si_sdr", "pesq", "stoi", "periodicity", "vuv_f1", "dnsmos"]
HEADERS = ["log-mel L1 ↓", "MR-STFT ↓", "SI-SDR dB ↑", "PESQ ↑", "STOI ↑", "period. RMSE ↓", "V/UV F1 ↑", "DNSMOS ↑"]
CALIBRATION = {"griffin-lim": {"mel_l1": 0.112, "mrstft": 0.82, "pesq": 3.80, "periodicity": 0.115,
                               "vuv_f1": 0.939, "dnsmos": 2.96}, "ground truth": {"dnsmos": 3.01}}  # fmt: skip
_failed: set[str] = set()
Vocoder = MultiBandDiffusion | SpectralMBD


def report(name: str, err: Exception) -> None:
    """Say once per metric why it is n/a."""
    if name not in _failed:
        print(f"  {name}: n/a ({type(err).__name__}: {err})")
        _failed.add(name)


def optional(name: str, fn: Callable[[], float]) -> float:
    """`fn()`, or NaN when its package is missing or it refuses the clip."""
    try:
        return float(fn())
    except Exception as err:  # noqa: BLE001  (ImportError, pesq's NoUtterancesError, ...)
        report(name, err)
        return math.nan


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


def crepe(x16: torch.Tensor, model: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    """CARGAN's pitch analysis of 16 kHz audio `[L]`: (periodicity `[frames]`, voiced `[frames]` bool)."""
    import torchcrepe

    audio = x16[None].float()
    pitch, periodicity = torchcrepe.predict(
        audio, 16000, 160, 50, 550, model, decoder=torchcrepe.decode.viterbi, return_periodicity=True,
        batch_size=256, device="cpu", pad=True,
    )  # fmt: skip
    periodicity = torchcrepe.threshold.Silence(-60.0)(periodicity, audio, 16000, 160, pad=True)
    with warnings.catch_warnings():  # all-unvoiced clips: nanmean of an empty slice
        warnings.simplefilter("ignore")
        voiced = ~torch.isnan(torchcrepe.threshold.Hysteresis()(pitch, periodicity))
    return periodicity[0], voiced[0]


def speech_scores(e16: torch.Tensor, r16: torch.Tensor, ref_pitch: tuple | None, est_pitch: tuple | None) -> dict:
    """PESQ wb, STOI, DNSMOS OVRL and the pitch metrics (with their pooling counts), NaN when unavailable."""
    e, r = e16.double().numpy(), r16.double().numpy()

    def pesq() -> float:
        from pesq import pesq as wb

        return wb(16000, r, e, "wb")

    def stoi() -> float:
        from pystoi import stoi as score

        return score(r, e, 16000, extended=False)

    def dnsmos() -> float:
        from speechmos import dnsmos as model

        return model.run(np.clip(e, -1.0, 1.0), 16000)["ovrl_mos"]

    scores = {"pesq": optional("pesq", pesq), "stoi": optional("stoi", stoi), "dnsmos": optional("dnsmos", dnsmos)}
    scores.update(periodicity=math.nan, vuv_f1=math.nan)
    if ref_pitch is not None and est_pitch is not None:
        (p_ref, v_ref), (p_est, v_est) = ref_pitch, est_pitch
        counts = {"per_sq": (p_est - p_ref).pow(2).sum().item(), "frames": p_ref.numel()}
        for key, hits in (("tp", v_est & v_ref), ("fp", v_est & ~v_ref), ("fn", ~v_est & v_ref)):
            counts[key] = hits.sum().item()
        scores.update(pooled(counts), counts=counts)
    return scores


def optional_pitch(x16: torch.Tensor, model: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    try:
        return crepe(x16, model)
    except Exception as err:  # noqa: BLE001
        report("torchcrepe", err)
        return None


def pooled(c: dict[str, float]) -> dict[str, float]:
    """Periodicity RMSE and V/UV F1 from (summed) counts."""
    f1 = 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) if c["tp"] + c["fp"] + c["fn"] else 1.0
    return {"periodicity": math.sqrt(c["per_sq"] / max(c["frames"], 1)), "vuv_f1": f1}


def griffin_lim(mel: torch.Tensor, features: MelSpectrogram, length: int, iters: int) -> torch.Tensor:
    """Griffin-Lim from a log-mel `[1, n_mels, length // hop + 1]` (same mel definition); audio `[1, 1, length]`.
    librosa's `mel_to_audio` in its two steps, to seed the random initial phases (it cannot pass a seed)."""
    c = features.config
    stft = librosa.feature.inverse.mel_to_stft(
        np.exp(mel[0].double().numpy()), sr=c.sample_rate, n_fft=c.n_fft, power=1.0, htk=True, norm=None,
        fmin=c.f_min, fmax=c.f_max,
    )  # fmt: skip
    wav = librosa.griffinlim(stft, n_iter=iters, hop_length=c.hop_length, n_fft=c.n_fft, center=True,
                             length=length, pad_mode="reflect", random_state=0)  # fmt: skip
    return torch.from_numpy(wav).float()[None, None]


def model_outputs(
    model: Vocoder, mel: torch.Tensor, seed: int, steps: list[int], polish: list[int], weights: list[float]
) -> dict:
    """The model's rows for one clip; every call starts from the same seed."""
    spectral = "griffin_lim" in inspect.signature(model.vocode).parameters

    def run(n: int | None = None, **kw: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.vocode(mel, steps=None if n is None else model.step_list(n), generator=g, **kw)

    plain = {"griffin_lim": 0} if spectral else {}  # no projection, whatever the model's default
    outs = {"raw": run(mel_eq=0.0, **plain), "mel-eq": run(mel_eq=1.0, **plain)}
    for k in polish if spectral else []:
        for w in weights:
            outs[f"mel-eq + GL {k} w={w:g}"] = run(mel_eq=1.0, griffin_lim=k, model_magnitude=w)
        # the control: the same Griffin-Lim on the mel's least-squares magnitudes, from random phases
        length = mel.shape[-1] * model.hop_length
        magnitude = model.features.magnitude(torch.cat([mel, mel[..., -1:]], dim=-1))
        angle = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
        outs[f"control: GL {k} w=0 random phase"] = polish_stft(torch.polar(magnitude, angle), model.config.mel,
                                                                  k, length)
    outs["default"] = run()
    for n in steps:
        outs[f"raw @{n}"], outs[f"mel-eq @{n}"] = run(n, mel_eq=0.0, **plain), run(n, mel_eq=1.0, **plain)
        outs[f"default @{n}"] = run(n)
    return outs


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


def clip_start(manifest: Path, row: dict[str, str], seconds: float, sample_rate: int, hop: int) -> torch.Tensor:
    """The first `seconds` of a manifest row's clip, channel 0, cut to whole hops: `[1, 1, L]`."""
    wav, file_sr = sf.read(manifest.parent / row["path"], dtype="float32", always_2d=True)
    if file_sr != sample_rate:
        raise SystemExit(f"{row['path']}: {file_sr} Hz, the model needs {sample_rate} Hz")
    length = min(len(wav), int(seconds * sample_rate)) // hop * hop
    return torch.from_numpy(wav[:length, 0].copy())[None, None]


def summary(results: list[dict], system: str) -> dict[str, float]:
    """Mean of each metric over the clips that have it; the pitch metrics pooled over frames (CARGAN)."""
    mine = [r for r in results if r["system"] == system]
    out = {}
    for metric in METRICS:
        values = [r[metric] for r in mine if r.get(metric) is not None and not math.isnan(r[metric])]
        out[metric] = float(np.mean(values)) if values else math.nan
    counts = [r["counts"] for r in mine if "counts" in r]
    if counts:
        out.update(pooled({k: sum(c[k] for c in counts) for k in counts[0]}))
    return out


def save_png(path: Path, panels: dict[str, torch.Tensor], sr: int, title: str) -> None:
    """Log-magnitude spectrograms side by side, one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = torch.hann_window(1024)
    specs = {k: 20 * torch.log10(torch.stft(v.flatten(), 1024, 256, window=window, return_complex=True).abs() + 1e-5)
             for k, v in panels.items()}  # fmt: skip
    top = max(s.max().item() for s in specs.values())
    fig, axes = plt.subplots(1, len(specs), figsize=(3.2 * len(specs), 3.0), sharey=True, layout="constrained")
    for ax, (name, spec) in zip(axes, specs.items()):
        extent = (0, spec.shape[-1] * 256 / sr, 0, sr / 2000)
        im = ax.imshow(spec.numpy(), origin="lower", aspect="auto", extent=extent, vmin=top - 90, vmax=top)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("s")
    axes[0].set_ylabel("kHz")
    fig.colorbar(im, ax=axes, label="dB", fraction=0.02)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mel24k", help="a bundled name or a .safetensors path")
    parser.add_argument("--manifest", type=Path, default=REPO / "recipes" / "mel24k_heldout.csv")
    parser.add_argument("--clips", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--gl-iters", type=int, default=32)
    parser.add_argument("--steps", type=ints, default=[], help="extra step counts, e.g. 4,6,8")
    parser.add_argument("--polish", type=ints, default=[32], help="Griffin-Lim iterations after mel-eq")
    parser.add_argument("--weights", type=lambda t: [float(x) for x in t.split(",") if x.strip()],
                        default=[1.0, 0.0], help="model_magnitude values of the polished rows")
    parser.add_argument("--default-polishes", action="store_true", help="treat the default as GL-polished")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="clip i draws its noise from seed + i")
    parser.add_argument("--crepe", default="full", choices=["full", "tiny"], help="torchcrepe model (CARGAN: full)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path, default=REPO / "benchmarks" / "mel_quality.png", help="'' for none")
    parser.add_argument("--png-clip", type=int, default=0, help="which speech clip (0: the first)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--skip", type=lambda t: [x.strip() for x in t.split(",") if x.strip()], default=[],
                        help="systems not to score, e.g. 'noise + mel-eq,mel-eq' (faster)")
    parser.add_argument("--part", type=lambda t: tuple(int(x) for x in t.split("/")), default=(0, 1),
                        help="I/N: score only clips i with i %% N == I (run N processes, then --merge their --json)")
    parser.add_argument("--merge", type=Path, nargs="+", help="print the table of earlier --json files instead "
                        "(e.g. the model-independent rows of one run with --skip, the model's of another)")
    args = parser.parse_args()
    if args.merge:
        results = [r for path in args.merge for r in json.loads(path.read_text())]
        rows = list({r["clip"]: {"kind": r["kind"]} for r in results}.values())
        means = {s: summary(results, s) for s in dict.fromkeys(r["system"] for r in results)}
        print_table(means, rows, args)
        sys.exit(1 if check_targets(means, args.default_polishes) and args.check else 0)
    torch.set_num_threads(args.threads)
    model = load_model(str(args.model), "cpu")
    features, sr, hop = model.features, model.sample_rate, model.hop_length
    assert features is not None, "a mel model is needed"
    rows = held_out(args.manifest, args.clips)
    part, parts = args.part
    results: list[dict] = []
    polishes, speech_seen, tic = args.default_polishes, 0, time.perf_counter()
    for i, row in enumerate(rows):
        if i % parts != part:  # another process's clip (--part)
            continue
        ref = clip_start(args.manifest, row, args.seconds, sr, hop)  # [1, 1, L]
        length = ref.shape[-1]
        mel = features.frame_aligned(ref)  # [1, n_mels, L / hop]: the model's input
        outs = {"ground truth": ref, "griffin-lim": griffin_lim(features(ref), features, length, args.gl_iters)}
        noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(args.seed + i)) * 0.01
        outs["noise + mel-eq"] = features.equalize(noise, mel)
        outs.update(model_outputs(model, mel, args.seed + i, args.steps, args.polish, args.weights))
        polishes = polishes or not torch.allclose(outs["default"], outs["mel-eq"], atol=1e-6)
        speech = row["kind"] == "speech"
        r16 = julius.resample_frac(ref.flatten(), sr, 16000) if speech else None
        ref_pitch = optional_pitch(r16, args.crepe) if speech else None
        scored: dict[str, dict] = {}
        for system, est in outs.items():
            if system in args.skip:
                continue
            same = next((s for s in scored if torch.equal(outs[s], est)), None)  # e.g. the default's own row
            if same is not None:
                scored[system] = scores = dict(scored[same])
                results.append({"clip": row["path"], "kind": row["kind"], "system": system, **scores})
                continue
            scored[system] = scores = {
                "mel_l1": log_mel_l1(features, est, ref), "mrstft": mrstft(est, ref), "si_sdr": si_sdr(est, ref)
            }
            if speech:
                e16 = julius.resample_frac(est.flatten(), sr, 16000)
                est_pitch = ref_pitch if est is ref or ref_pitch is None else optional_pitch(e16, args.crepe)
                scores.update(speech_scores(e16, r16, ref_pitch, est_pitch))
            results.append({"clip": row["path"], "kind": row["kind"], "system": system, **scores})
        if speech and speech_seen == args.png_clip and str(args.png) not in ("", "."):
            names = {"ground truth": "input", "griffin-lim": f"griffin-lim {args.gl_iters}", "default": "model default"}
            panels = {names.get(k, f"model {k}"): outs[k] for k in ("ground truth", "griffin-lim", "default", "raw")}
            save_png(args.png, panels, sr, f"{Path(row['path']).name}, model {Path(str(args.model)).name}")
        speech_seen += speech
        print(f"[{i + 1}/{len(rows)}] {row['path']} ({row['kind']}, {length / sr:.2f} s) "
              f"{time.perf_counter() - tic:.0f} s", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    systems = list(dict.fromkeys(r["system"] for r in results))
    means = {s: summary(results, s) for s in systems}
    print_table(means, rows, args)
    failed = check_targets(means, polishes)
    sys.exit(1 if args.check and failed else 0)


def cell(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def print_table(means: dict[str, dict[str, float]], rows: list[dict], args: argparse.Namespace) -> None:
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("speech", "music", "other")}
    clips = ", ".join(f"{v} {k}" for k, v in kinds.items())
    print(f"\n{len(rows)} held-out clips ({clips}; first {args.seconds:g} s of each), model {args.model}, "
          f"Griffin-Lim {args.gl_iters} iterations; PESQ to DNSMOS: speech only")  # fmt: skip
    print("| system | " + " | ".join(HEADERS) + " |\n| --- |" + " ---: |" * len(HEADERS))
    for system, m in means.items():
        print(f"| {system} | " + " | ".join(cell(m[k]) for k in METRICS) + " |")
    print("\ncalibration (an earlier measurement, 21 clips x 4 s; close only for the same clips):")
    for system, ref in ((s, r) for s, r in CALIBRATION.items() if s in means):  # --skip leaves some out
        print(f"  {system}: " + ", ".join(f"{k} {v:g} (here {cell(means[system][k])})" for k, v in ref.items()))


def check_targets(means: dict[str, dict[str, float]], polishes: bool) -> int:
    """Print PASS/FAIL for each target of the `default` row; return the number failed (unmeasured: failed)."""
    missing = [s for s in ("griffin-lim", "raw", "default") if s not in means]
    if missing:
        print(f"\ntargets not checked: {', '.join(missing)} not scored (--skip)")
        return 1
    gl = means["griffin-lim"]
    targets = [  # (row, metric, comparison, bound, what the bound is)
        ("raw", "mel_l1", "<=", 0.35, ""), ("default", "pesq", ">=", 3.0, ""),
        ("default", "periodicity", "<=", 0.15, ""), ("default", "vuv_f1", ">=", 0.90, ""),
        ("default", "dnsmos", ">=", 2.7, ""), ("default", "mel_l1", "<=", 2 * gl["mel_l1"], "2x griffin-lim"),
        ("default", "mrstft", "<=", 1.3 * gl["mrstft"], "1.3x griffin-lim"),
    ]  # fmt: skip
    if polishes:
        targets += [("default", "periodicity", "<", gl["periodicity"], "griffin-lim"),
                    ("default", "dnsmos", ">", gl["dnsmos"], "griffin-lim")]  # fmt: skip
        control = next((name for name in means if name.startswith("control: GL")), None)
        if control is not None:  # the network's part: the same pipeline from random phases, no network
            targets += [("default", "periodicity", "<", means[control]["periodicity"], control),
                        ("default", "dnsmos", ">", means[control]["dnsmos"], control)]  # fmt: skip
    compare = {"<=": float.__le__, ">=": float.__ge__, "<": float.__lt__, ">": float.__gt__}
    print(f"\ntargets (default {'uses' if polishes else 'does not use'} Griffin-Lim polishing):")
    failed = 0
    for row, metric, op, bound, what in targets:
        value = means[row][metric]
        good = not math.isnan(value) and not math.isnan(bound) and compare[op](value, bound)
        failed += not good
        label = HEADERS[METRICS.index(metric)][:-2]
        ratio = value / gl[metric] if gl[metric] else math.nan
        print(f"  {'PASS' if good else 'FAIL'}  {row} {label} {op} {cell(bound)}{f' ({what})' if what else ''}: "
              f"{cell(value)}" + ("" if math.isnan(ratio) else f", {ratio:.2f}x griffin-lim"))  # fmt: skip
    print(f"{failed} of {len(targets)} targets failed")
    return failed


if __name__ == "__main__":
    main()
