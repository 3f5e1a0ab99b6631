"""Decode speed, memory and deviation of the fast modes against the faithful path.

    python benchmarks/decode_speed.py --device cpu --size reduced --seconds 2
    python benchmarks/decode_speed.py --device cpu --size released --seconds 1 --steps 2
    python benchmarks/decode_speed.py --device cpu --size tiny --seconds 1 --steps 2 --modes fused-compile,fused-fp16
    python benchmarks/decode_speed.py --device cuda --size released --seconds 10 --batch 8 --modes fused-bf16

Every mode runs in its own subprocess on the same random weights, latent and noise (fixed seeds), so the
peak memory of one mode is not polluted by another. Peak memory is the process's max RSS on CPU and
`torch.cuda.max_memory_allocated` on CUDA (weights included). The deviation is measured on the summed band
output of `generate` (before re-EQ) against the faithful float32 output. Each mode is run once untimed
first (compilation for `fused-compile`, CUDA warm-up, paging in the weights on CPU); `--tf32` (the
default, as in PyTorch and AudioCraft) lets cuDNN use TF32 for float32 convolutions, `--no-tf32` forbids it.
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
from mbd.diffusion import PowerSchedule, spaced_steps
from mbd.options import RuntimeOptions
from mbd.pipeline import MultiBandDiffusion
from mbd.processor import ProcessorConfig
from mbd.unet import UNetConfig

SIZES = {
    "released": UNetConfig(hidden=48, growth=4, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128),
    "reduced": UNetConfig(hidden=32, growth=2, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128),
    "tiny": UNetConfig(hidden=8, growth=2, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128),
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


class HopOnly(torch.nn.Module):
    """Stands in for EnCodec 24 kHz where only its hop is used (`generate`'s default length and chunking)."""

    hop_length = HOP


def build(size: str, device: str) -> MultiBandDiffusion:
    torch.manual_seed(0)
    band = BandConfig(SIZES[size], PowerSchedule(), ProcessorConfig())
    model = MultiBandDiffusion(MBDConfig(SAMPLE_RATE, CodecConfig(), (band,) * 4), codec=HopOnly())
    for b in model.bands:  # fitted-looking processor statistics
        b.processor.counts.fill_(1.0)
        b.processor.sum_x2.fill_(0.01)
        b.processor.sum_target_x2.fill_(0.1)
    return model.to(device).eval()


def set_tf32(enabled: bool) -> dict[str, bool]:
    """Allow (or forbid) TF32 in cuDNN float32 convolutions; returns the resulting TF32 flags."""
    torch.backends.cudnn.allow_tf32 = enabled
    return {"cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}


def worker(args: argparse.Namespace) -> None:
    fused, dtype, compile = MODES[args.worker]
    cuda = args.device.startswith("cuda")
    flags = set_tf32(args.tf32)
    model = build(args.size, args.device)
    frames = round(args.seconds * SAMPLE_RATE / HOP)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(args.batch, 128, frames, generator=gen).to(args.device)  # [B, D, T]
    steps = spaced_steps(args.steps)
    noise = torch.randn(4, len(steps) - 1, args.batch, 1, frames * HOP, generator=gen)  # [bands, K, B, C, L]

    def run(steps: list[int] = steps) -> torch.Tensor:
        options = RuntimeOptions(fused=fused, dtype=dtype, compile=compile)
        out = model.generate(latents, steps=steps, noise=noise[:, : len(steps) - 1], options=options)
        if cuda:
            torch.cuda.synchronize()
        return out

    if fused:
        model.fused_network(dtype, compile)  # build the fused weights outside the timing
    # One untimed call first, for every mode: it compiles (`fused-compile`), warms up CUDA, and on CPU pages in
    # the weights (at the released size the first touch of the 1 GiB tensors costs seconds). On CPU a 1-step
    # call does that; on CUDA the full call is cheap.
    t0 = time.perf_counter()
    run(steps if cuda else [steps[0], 0])
    warmup = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    torch.save(out.cpu(), args.out)
    rss_delta = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**20
    device = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} threads"
    info = {"device": device, "torch": torch.__version__, **flags}
    print(json.dumps({"seconds": seconds, "warmup": warmup, "peak_gib": peak, "rss_delta_gib": rss_delta, **info}))


HEADER = """\
| mode | seconds | x real time | speed-up | peak mem (GiB) | max abs dev | rel L2 dev (dB) | warm-up s |
|---|---:|---:|---:|---:|---:|---:|---:|"""


def row(mode: str, results: dict[str, dict], outputs: dict[str, torch.Tensor], audio: float) -> str:
    """One table row: `mode`'s time and memory, and its deviation from the faithful output."""
    r, ref = results[mode], outputs["faithful"]
    dev = (outputs[mode] - ref).abs().max().item()
    rel = ((outputs[mode] - ref).norm() / ref.norm()).item()
    rel_db = "-inf" if rel == 0 else f"{20 * torch.log10(torch.tensor(rel)).item():.1f}"
    warmup = "-" if r["warmup"] is None else f"{r['warmup']:.1f}"
    speed_up = results["faithful"]["seconds"] / r["seconds"]
    return (
        f"| {mode} | {r['seconds']:.2f} | {audio / r['seconds']:.3f} | {speed_up:.2f}x | {r['peak_gib']:.2f} | "
        f"{dev:.2e} | {rel_db} | {warmup} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="reduced")
    parser.add_argument("--seconds", type=float, default=2.0, help="audio duration to decode")
    parser.add_argument("--steps", type=int, default=20, help="DDPM model evaluations per band (20 = default)")
    parser.add_argument("--batch", type=int, default=1, help="clips decoded together, each --seconds long")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="cuDNN TF32 (CUDA)")
    parser.add_argument("--modes", default="faithful,fused,fused-bf16", help=f"comma list of {list(MODES)}")
    parser.add_argument("--mode-timeout", type=float, help="seconds after which a mode is abandoned")
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    modes = args.modes.split(",")
    if modes[0] != "faithful":
        modes = ["faithful", *[m for m in modes if m != "faithful"]]
    results, outputs = {}, {}
    audio = args.seconds * args.batch
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            out = Path(tmp) / f"{mode}.pt"
            cmd = [sys.executable, __file__, "--worker", mode, "--out", str(out), "--device", args.device]
            cmd += ["--size", args.size, "--seconds", str(args.seconds), "--steps", str(args.steps)]
            cmd += ["--batch", str(args.batch), "--tf32" if args.tf32 else "--no-tf32"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.mode_timeout)
                error = None if proc.returncode == 0 else f"failed\n{proc.stderr[-2000:]}"
            except subprocess.TimeoutExpired:
                error = f"abandoned after {args.mode_timeout:g} s"
            if error is not None:
                print(f"{mode}: {error}", file=sys.stderr)
                if mode == "faithful":
                    sys.exit("nothing to compare against")
                continue
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            outputs[mode] = torch.load(out)
            if mode == "faithful":  # the table is printed row by row, so that a killed run keeps its rows
                info = results["faithful"]
                print(
                    f"device={info['device']} torch={info['torch']} size={args.size} "
                    f"audio={args.batch} x {args.seconds}s steps={args.steps} x 4 bands, "
                    f"cudnn_tf32={info['cudnn_tf32']} matmul_tf32={info['matmul_tf32']}\n{HEADER}"
                )
            print(row(mode, results, outputs, audio), flush=True)


if __name__ == "__main__":
    main()
