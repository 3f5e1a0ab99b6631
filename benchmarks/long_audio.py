"""Long-audio decode: time per second of audio and peak memory, 10 s unchunked vs 10 minutes chunked.

    python benchmarks/long_audio.py --size reduced --steps 2
    python benchmarks/long_audio.py --device cuda --size released --steps 20 --long 60

Both cases decode a random latent with `generate(options=RuntimeOptions(fused=True, ...))` (another
`--mode` of decode_speed.py may be chosen; the long case adds `chunk_seconds`) and then re-EQ the whole
output against a reference of the same length (32 bands, as `tokens_to_wav` does), so the global re-EQ's
time and memory are included. Each case runs in its own subprocess so that its peak memory is its own: the
process's max RSS on CPU (torch and the model included), `torch.cuda.max_memory_allocated` on CUDA.
Before the timing, each worker builds the fused network and decodes one untimed chunk (warm-up). The
short case is timed `--repeats` times (the run with the median wall time is reported), once before and once
after the long case, so that drift in a shared machine's speed shows; the long case is compared with the mean
of the two. A last subprocess alternates, `--rounds` times, one chunked decode of `--pieces` chunks with the same
audio decoded as separate unchunked chunk-length calls, so that drift cancels in the ratio of the two sums.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import subprocess
import sys
import time

import torch
from decode_speed import HOP, MODES, SAMPLE_RATE, SIZES, build

from mbd.diffusion import spaced_steps
from mbd.eq import re_eq
from mbd.options import RuntimeOptions


def peak_gib(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def worker(args: argparse.Namespace) -> None:
    cuda = args.device.startswith("cuda")
    model = build(args.size, args.device)
    frames = round(args.seconds * SAMPLE_RATE / HOP)
    length = frames * HOP
    latents = torch.randn(1, 128, frames, generator=torch.Generator().manual_seed(1)).to(args.device)  # [B, D, T]
    t = torch.arange(length) / SAMPLE_RATE
    reference = 0.1 * torch.sin(2 * math.pi * 220 * t) + 0.01 * torch.randn(length)
    reference = reference.view(1, 1, length).to(args.device)
    steps = spaced_steps(args.steps)
    fused, dtype, compile = MODES[args.mode]
    options = RuntimeOptions(fused=fused, dtype=dtype, compile=compile, overlap_seconds=args.overlap)

    def sync() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    warm = round(args.chunk * SAMPLE_RATE / HOP)  # one chunk's worth, not timed
    model.generate(latents[..., :warm], steps=steps, options=options)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_gib(cuda)
    if args.chunked:
        options = dataclasses.replace(options, chunk_seconds=args.chunk)

    generator = torch.Generator(args.device)  # draws where the model runs
    if args.rounds:
        chunked = unchunked = 0.0
        for _ in range(args.rounds):
            t0 = sync()
            model.generate(latents, steps=steps, generator=generator, options=options)
            t1 = sync()
            for start in range(0, frames, warm):
                model.generate(latents[..., start : start + warm], steps=steps, generator=generator, options=options)
            unchunked += sync() - t1
            chunked += t1 - t0
        print(json.dumps({"chunked": chunked, "unchunked": unchunked}))
        return
    runs = []
    for _ in range(args.repeats):
        t0 = sync()
        wav = model.generate(latents, steps=steps, generator=generator.manual_seed(2), options=options)
        t1 = sync()
        out = re_eq(wav, reference, SAMPLE_RATE, 32)
        t2 = sync()
        assert out.shape == (1, 1, length) and torch.isfinite(out).all()
        runs.append({"decode": t1 - t0, "eq": t2 - t1})
    median = sorted(runs, key=lambda r: r["decode"] + r["eq"])[len(runs) // 2]
    print(json.dumps({**median, "peak_gib": peak_gib(cuda), "baseline_gib": baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="reduced")
    parser.add_argument("--mode", choices=sorted(MODES), default="fused", help="see decode_speed.py")
    parser.add_argument("--steps", type=int, default=2, help="DDPM model evaluations per band (20 = default)")
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the unchunked case")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the chunked case")
    parser.add_argument("--chunk", type=float, default=10.0, help="chunk_seconds of the long case")
    parser.add_argument("--overlap", type=float, default=0.25, help="overlap_seconds of the long case")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the short case (median reported)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the interleaved comparison (0: none)")
    parser.add_argument("--pieces", type=int, default=6, help="chunks per round of the interleaved comparison")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--chunked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    cases = {
        f"{args.short:g} s, unchunked (before)": (args.short, False),
        f"{args.long:g} s, {args.chunk:g} s chunks, {args.overlap:g} s overlap": (args.long, True),
        f"{args.short:g} s, unchunked (after)": (args.short, False),
    }
    common = [sys.executable, __file__, "--worker", "--size", args.size, "--device", args.device]
    common += ["--mode", args.mode, "--steps", str(args.steps), "--chunk", str(args.chunk)]
    common += ["--overlap", str(args.overlap), "--rounds", "0"]

    def run(name: str, extra: list[str]) -> dict[str, float]:
        proc = subprocess.run(common + extra, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name}: failed\n{proc.stderr[-2000:]}")
        print(f"{name}: {proc.stdout.strip().splitlines()[-1]}", flush=True)  # raw, in case the run is killed
        return json.loads(proc.stdout.strip().splitlines()[-1])

    results = {}
    for name, (seconds, chunked) in cases.items():
        extra = ["--chunked", "--repeats", "1"] if chunked else ["--repeats", str(args.repeats)]
        results[name] = (seconds, run(name, ["--seconds", str(seconds), *extra]))
    pieces = args.pieces * args.chunk
    interleaved = None
    if args.rounds:
        extra = ["--seconds", str(pieces), "--chunked", "--rounds", str(args.rounds)]
        interleaved = run("interleaved", extra)
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "max RSS"
    print(
        f"\ndevice={args.device} size={args.size} steps={args.steps} x 4 bands, mode={args.mode}, "
        f"re-EQ 32 bands included, threads={torch.get_num_threads()}"
    )
    print("| case | audio s | wall s (decode + re-EQ) | s per audio s | vs mean short ", end="")
    print(f"| peak GiB, {memory} (after warm-up) |")
    print("|---|---:|---:|---:|---:|---:|")
    per_second = {name: (r["decode"] + r["eq"]) / s for name, (s, r) in results.items()}
    short = [per_second[name] for name, (_, chunked) in cases.items() if not chunked]
    first = sum(short) / len(short)
    for name, (seconds, r) in results.items():
        wall = f"{r['decode'] + r['eq']:.1f} ({r['decode']:.1f} + {r['eq']:.1f})"
        peak = f"{r['peak_gib']:.2f} ({r['baseline_gib']:.2f})"
        print(f"| {name} | {seconds:g} | {wall} | {per_second[name]:.3f} | {per_second[name] / first:.2f}x | {peak} |")
    if interleaved is not None:
        print(
            f"\nInterleaved, {args.rounds} rounds: {pieces:g} s chunked {interleaved['chunked']:.1f} s vs "
            f"{args.pieces} x {args.chunk:g} s unchunked {interleaved['unchunked']:.1f} s (decode only): "
            f"ratio {interleaved['chunked'] / interleaved['unchunked']:.3f}"
        )


if __name__ == "__main__":
    main()
