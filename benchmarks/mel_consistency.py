"""Where a spectral model's own log-mel error arises: in the STFT it samples, or in the iSTFT of it.

Each held-out clip (picked as `mel_quality.py` picks them: fixed kind-interleaved order, its first `--seconds`
cut to whole mel frames) gives the model its log-mel, and the model samples a complex STFT from it
(`SpectralMBD.sample_spectrogram`, seed = the clip's index, as `mel_quality.py` seeds it). Two log-mel L1
scores against the clip, per clip and as means:

- `sampled STFT`: the mel of the sampled magnitudes themselves, before any inversion;
- `after iSTFT`: the mel of the waveform the iSTFT makes of them, which is the model's own output (the `raw`
  row of `mel_quality.py`: `vocode(mel_eq=0, griffin_lim=0)`).

The iSTFT maps the sampled STFT to a signal, whose STFT is consistent (overlapping frames agree); the
difference between the two scores is what the inconsistency of the sampled frames costs.

    python benchmarks/mel_consistency.py [--model mel24k] [--clips 21] [--seconds 4] [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from mel_quality import REPO, clip_start, held_out

from mbd.spectral_mbd import SpectralMBD


def scores(model: SpectralMBD, ref: torch.Tensor, seed: int, steps: int | None) -> tuple[float, float]:
    """`(sampled STFT, after iSTFT)` log-mel L1 for one clip `[1, 1, L]`, L a multiple of the hop."""
    features = model.features
    target = features(ref)  # [1, n_mels, T + 1]
    mel = features.frame_aligned(ref)  # [1, n_mels, T]: the model's input
    spec = model.sample_spectrogram(mel, steps, torch.Generator().manual_seed(seed))  # [1, F, T + 1]
    sampled = torch.log(features.mel.mel_scale(spec.abs()).clamp(min=features.config.clip_val))
    wav = model.bands.istft(spec[:, :-1], ref.shape[-1])  # [1, 1, L]
    return (sampled - target).abs().mean().item(), (features(wav) - target).abs().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mel24k", help="a bundled name or a spectral .safetensors path")
    parser.add_argument("--manifest", type=Path, default=REPO / "recipes" / "mel24k_heldout.csv")
    parser.add_argument("--clips", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, help="network evaluations per band (default: the model's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = SpectralMBD.from_pretrained(args.model)
    print("| clip | kind | sampled STFT | after iSTFT |\n|---|---|---:|---:|")
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for i, row in enumerate(held_out(args.manifest, args.clips)):
        ref = clip_start(args.manifest, row, args.seconds, model.sample_rate, model.hop_length)  # [1, 1, L]
        pair = scores(model, ref, i, args.steps)
        by_kind.setdefault(row["kind"], []).append(pair)
        print(f"| {Path(row['path']).name} | {row['kind']} | {pair[0]:.3f} | {pair[1]:.3f} |", flush=True)
    print("\n| clips | n | sampled STFT | after iSTFT | difference |\n|---|---:|---:|---:|---:|")
    for kind, pairs in [*by_kind.items(), ("all", [p for ps in by_kind.values() for p in ps])]:
        before, after = statistics.mean(p[0] for p in pairs), statistics.mean(p[1] for p in pairs)
        print(f"| {kind} | {len(pairs)} | {before:.3f} | {after:.3f} | {after - before:+.3f} |")


if __name__ == "__main__":
    main()
