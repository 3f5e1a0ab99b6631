"""Decode speed, memory and deviation of the fast modes against the faithful path.

    python benchmarks/decode_speed.py --device cpu --size reduced --seconds 2
    python benchmarks/decode_speed.py --device cpu --size released --seconds 1 --steps 2
    python benchmarks/decode_speed.py --device cuda --size released --seconds 10 --compile

Every mode runs in its own subprocess on the same random weights, latent and noise (fixed seeds), so the
peak memory of one mode is not polluted by another. Peak memory is the process's max RSS on CPU and
`torch.cuda.max_memory_allocated` on CUDA. The deviation is measured on the summed band output of
`generate` (before re-EQ) against the faithful float32 output.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mbd.config import BandConfig, CodecConfig, MBDConfig
from mbd.options import InferenceOptions
from mbd.pipeline import MultiBandDiffusion
from mbd.processor import ProcessorConfig
from mbd.sampler import spaced_steps
from mbd.schedule import PowerSchedule
from mbd.unet import UNetConfig

SIZES = {
    "released": UNetConfig(hidden=48, growth=4, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128),
    "reduced": UNetConfig(hidden=32, growth=2, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128),
}
# name -> (fused, dtype, compile)
MODES = {
    "faithful": (False, "float32", False),
    "fused": (True, "float32", False),
    "fused-bf16": (True, "bfloat16", False),
    "fused-fp16": (True, "float16", False),
    "fused-compile": (True, "float32", True),
}
HOP, SAMPLE_RATE = 320, 24000


def build(size: str, device: str) -> MultiBandDiffusion:
    torch.manual_seed(0)
    band = BandConfig(SIZES[size], PowerSchedule(), ProcessorConfig())
    model = MultiBandDiffusion(MBDConfig(SAMPLE_RATE, CodecConfig(), (band,) * 4))
    for b in model.bands:  # fitted-looking processor statistics
        b.processor.counts.fill_(1.0)
        b.processor.sum_x2.fill_(0.01)
        b.processor.sum_target_x2.fill_(0.1)
    return model.to(device).eval()


def worker(args: argparse.Namespace) -> None:
    fused, dtype, compile = MODES[args.worker]
    model = build(args.size, args.device)
    frames = round(args.seconds * SAMPLE_RATE / HOP)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 128, frames, generator=gen).to(args.device)
    steps = spaced_steps(args.steps)
    noise = torch.randn(4, len(steps) - 1, 1, 1, frames * HOP, generator=gen)

    def run() -> torch.Tensor:
        options = InferenceOptions(fused=fused, dtype=dtype, compile=compile)
        out = model.generate(latents, steps=steps, noise=noise, options=options)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    if fused:
        model.fused_network(dtype, compile)  # build the fused weights outside the timing
    if compile or args.device.startswith("cuda"):
        run()  # compile / warm up (not timed)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    torch.save(out.cpu(), args.out)
    rss_delta = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**20
    print(json.dumps({"seconds": seconds, "peak_gib": peak, "rss_delta_gib": rss_delta}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="reduced")
    parser.add_argument("--seconds", type=float, default=2.0, help="audio duration to decode")
    parser.add_argument("--steps", type=int, default=20, help="DDPM model evaluations per band (20 = default)")
    parser.add_argument("--modes", default="faithful,fused,fused-bf16", help=f"comma list of {list(MODES)}")
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    modes = args.modes.split(",")
    if modes[0] != "faithful":
        modes = ["faithful", *[m for m in modes if m != "faithful"]]
    results, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            out = Path(tmp) / f"{mode}.pt"
            cmd = [sys.executable, __file__, "--worker", mode, "--out", str(out), "--device", args.device]
            cmd += ["--size", args.size, "--seconds", str(args.seconds), "--steps", str(args.steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            outputs[mode] = torch.load(out)
    ref = outputs["faithful"]
    print(
        f"device={args.device} size={args.size} audio={args.seconds}s steps={args.steps} x 4 bands, "
        f"threads={torch.get_num_threads()}"
    )
    print("| mode | seconds | x real time | speed-up | peak mem (GiB) | max abs dev | rel L2 dev (dB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        dev = (outputs[mode] - ref).abs().max().item()
        rel = ((outputs[mode] - ref).norm() / ref.norm()).item()
        rel_db = "-inf" if rel == 0 else f"{20 * torch.log10(torch.tensor(rel)).item():.1f}"
        print(
            f"| {mode} | {r['seconds']:.2f} | {args.seconds / r['seconds']:.3f} | "
            f"{results['faithful']['seconds'] / r['seconds']:.2f}x | {r['peak_gib']:.2f} | {dev:.2e} | {rel_db} |"
        )


if __name__ == "__main__":
    main()
