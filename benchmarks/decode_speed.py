"""Decode speed, memory and deviation of the fast modes against the faithful path.

    python benchmarks/decode_speed.py --device cpu --size reduced --seconds 2
    python benchmarks/decode_speed.py --size released,hidden16 --seconds 1 --modes faithful,fused --rounds 3
    python benchmarks/decode_speed.py --device cpu --size released --seconds 1 --steps 2
    python benchmarks/decode_speed.py --device cpu --size tiny --seconds 1 --steps 2 --modes fused-compile,fused-fp16
    python benchmarks/decode_speed.py --device cuda --size released --seconds 10 --batch 8 --modes fused-bf16

Every mode runs in its own subprocess on the same random weights, latent and noise (fixed seeds), so the peak
memory of one mode is not polluted by another. With `--rounds R` every mode runs R times, interleaved (round r
starts r modes later in the list), and the table gives the median time and the spread. Peak memory is the
process's max RSS on CPU and `torch.cuda.max_memory_allocated` on CUDA (weights included). The deviation is
measured on the summed band output of `generate` (before re-EQ) against the faithful float32 output. Each mode
is run once untimed first (compilation for `fused-compile`, CUDA warm-up, paging in the weights on CPU);
`--tf32` (the default, as in PyTorch and AudioCraft) lets cuDNN use TF32 for float32 convolutions, `--no-tf32`
forbids it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
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
    "hidden16": UNetConfig(hidden=16, growth=4, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128),
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
| mode | median s | min-max s (runs) | x real time | speed-up | peak GiB | max abs dev | rel L2 dev (dB) | warm-up s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|"""


def row(mode: str, runs: dict[str, list[dict]], outputs: dict[str, torch.Tensor], audio: float) -> str:
    """One table row: `mode`'s median time over its runs, its peak memory, and its deviation from the faithful
    output."""
    seconds = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    times, ref = [r["seconds"] for r in runs[mode]], outputs["faithful"]
    dev = (outputs[mode] - ref).abs().max().item()
    rel = ((outputs[mode] - ref).norm() / ref.norm()).item()
    rel_db = "-inf" if rel == 0 else f"{20 * torch.log10(torch.tensor(rel)).item():.1f}"
    warmup = statistics.median(r["warmup"] for r in runs[mode])
    peak = max(r["peak_gib"] for r in runs[mode])
    return (
        f"| {mode} | {seconds[mode]:.2f} | {min(times):.2f}-{max(times):.2f} ({len(times)}) | "
        f"{audio / seconds[mode]:.3f} | {seconds['faithful'] / seconds[mode]:.2f}x | {peak:.2f} | {dev:.2e} | "
        f"{rel_db} | {warmup:.1f} |"
    )


def run_mode(mode: str, size: str, args: argparse.Namespace, out: Path) -> dict | None:
    """Run one mode in its own process; its result, or None (said on stderr) when it failed or timed out."""
    cmd = [sys.executable, __file__, "--worker", mode, "--out", str(out), "--device", args.device]
    cmd += ["--size", size, "--seconds", str(args.seconds), "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--tf32" if args.tf32 else "--no-tf32"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.mode_timeout)
    except subprocess.TimeoutExpired:
        print(f"{size} {mode}: abandoned after {args.mode_timeout:g} s", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"{size} {mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="reduced", help=f"comma list of {sorted(SIZES)}, one table each")
    parser.add_argument("--seconds", type=float, default=2.0, help="audio duration to decode")
    parser.add_argument("--steps", type=int, default=20, help="DDPM model evaluations per band (20 = default)")
    parser.add_argument("--batch", type=int, default=1, help="clips decoded together, each --seconds long")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="cuDNN TF32 (CUDA)")
    parser.add_argument("--modes", default="faithful,fused,fused-bf16", help=f"comma list of {list(MODES)}")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every mode, interleaved; medians shown")
    parser.add_argument("--mode-timeout", type=float, help="seconds after which a mode is abandoned")
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    sizes, modes = args.size.split(","), args.modes.split(",")
    unknown = sorted(set(sizes) - set(SIZES)) + sorted(set(modes) - set(MODES))
    if unknown or args.rounds < 1:
        parser.error(f"unknown sizes or modes {unknown}, or --rounds < 1")
    if modes[0] != "faithful":
        modes = ["faithful", *[m for m in modes if m != "faithful"]]
    audio = args.seconds * args.batch
    for size in sizes:  # one table per size, printed when its rounds are done
        runs: dict[str, list[dict]] = {}
        outputs: dict[str, torch.Tensor] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                    out = Path(tmp) / f"{mode}.pt"
                    result = run_mode(mode, size, args, out)
                    if result is not None:
                        runs.setdefault(mode, []).append(result)
                        outputs[mode] = torch.load(out)
        if "faithful" not in runs:
            sys.exit(f"{size}: the faithful path failed: nothing to compare against")
        info = runs["faithful"][0]
        print(
            f"device={info['device']} torch={info['torch']} size={size} audio={args.batch} x {args.seconds}s "
            f"steps={args.steps} x 4 bands, rounds={args.rounds}, cudnn_tf32={info['cudnn_tf32']} "
            f"matmul_tf32={info['matmul_tf32']}\n{HEADER}"
        )
        for mode in (m for m in modes if m in runs):
            print(row(mode, runs, outputs, audio), flush=True)
        print()


if __name__ == "__main__":
    main()
