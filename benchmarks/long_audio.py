"""Long audio end to end: time per second of audio and peak memory, 10 s unchunked vs 10 minutes chunked.

    python benchmarks/long_audio.py --size tiny --steps 1
    python benchmarks/long_audio.py --device cuda --size released --steps 20 --long 60

Every decode case is the whole `tokens_to_wav` on random codes: EnCodec 24 kHz (the `encodec` package's
architecture with random weights and codebooks, 4 codebooks) turns them into latents and decodes its
reference, the bands are sampled with `RuntimeOptions(fused=True, ...)` (another `--mode` of
decode_speed.py may be chosen; the long case adds `chunk_seconds`), and the output is re-EQ'd against the
reference (32 bands). The `encode` case encodes `--long` seconds of noise with `EncodecCodec.encode`'s
default (pieces of 60 s past 60 s). Each case runs in its own subprocess so that its peak memory is its own:
the process's max RSS on CPU (torch, the model and the codec included), `torch.cuda.max_memory_allocated`
on CUDA. Before the timing, each decode worker decodes one untimed chunk (warm-up); the baseline is the
peak after it. The short case is timed `--repeats` times (the run with the median wall time is reported),
once before and once after the long case, so that drift in a shared machine's speed shows; the long case is
compared with the mean of the two. A last subprocess alternates, `--rounds` times, one chunked `generate`
of `--pieces` chunks with the same audio generated as separate unchunked chunk-length calls, so that drift
cancels in the ratio of the two sums.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from decode_speed import HOP, MODES, SAMPLE_RATE, SIZES, build

from mbd.codec import EncodecCodec
from mbd.diffusion import spaced_steps
from mbd.options import RuntimeOptions

N_Q = 4


def peak_gib(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def random_codec_weights(path: str) -> None:
    """EnCodec 24 kHz with random weights and random (non-zero) codebooks, saved as a weights file."""
    from encodec import EncodecModel

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    for layer in model.quantizer.vq.layers:  # k-means init leaves them at zero until training
        layer._codebook.embed.normal_()
        layer._codebook.inited.fill_(1)
    torch.save(model.state_dict(), path)


def encode_worker(args: argparse.Namespace) -> None:
    codec = EncodecCodec(args.codec, N_Q).to(args.device)
    length = round(args.seconds * SAMPLE_RATE)
    wav = 0.1 * torch.randn(1, 1, length, generator=torch.Generator().manual_seed(1))
    baseline = peak_gib(args.device.startswith("cuda"))
    t0 = time.perf_counter()
    codes = codec.encode(wav.to(args.device))
    wall = time.perf_counter() - t0
    assert codes.shape == (1, N_Q, -(-length // HOP))
    print(json.dumps({"wall": wall, "peak_gib": peak_gib(args.device.startswith("cuda")), "baseline_gib": baseline}))


def worker(args: argparse.Namespace) -> None:
    if args.encode:
        return encode_worker(args)
    cuda = args.device.startswith("cuda")
    model = build(args.size, args.device)
    model.codec = EncodecCodec(args.codec, N_Q).to(args.device)
    frames = round(args.seconds * SAMPLE_RATE / HOP)
    length = frames * HOP
    codes = torch.randint(0, 1024, (1, N_Q, frames), generator=torch.Generator().manual_seed(1)).to(args.device)
    steps = spaced_steps(args.steps)
    fused, dtype, compile = MODES[args.mode]
    options = RuntimeOptions(fused=fused, dtype=dtype, compile=compile, overlap_seconds=args.overlap)

    def sync() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    warm = round(args.chunk * SAMPLE_RATE / HOP)  # one chunk's worth, not timed
    model.tokens_to_wav(codes[..., :warm], steps=steps, options=options)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_gib(cuda)
    if args.chunked:
        options = dataclasses.replace(options, chunk_seconds=args.chunk)

    generator = torch.Generator(args.device)  # draws where the model runs
    if args.rounds:
        latents = model.codec.latents(codes)
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
        out = model.tokens_to_wav(codes, steps=steps, generator=generator.manual_seed(2), options=options)
        wall = sync() - t0
        assert out.shape == (1, 1, length) and torch.isfinite(out).all()
        runs.append(wall)
    print(json.dumps({"wall": sorted(runs)[len(runs) // 2], "peak_gib": peak_gib(cuda), "baseline_gib": baseline}))


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
    parser.add_argument("--encode", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure EncodecCodec.encode of --long seconds")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--chunked", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--codec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    cases = {
        f"{args.short:g} s, unchunked (before)": (args.short, False),
        f"{args.long:g} s, {args.chunk:g} s chunks, {args.overlap:g} s overlap": (args.long, True),
        f"{args.short:g} s, unchunked (after)": (args.short, False),
    }
    codec = tempfile.NamedTemporaryFile(suffix=".th")
    random_codec_weights(codec.name)
    common = [sys.executable, __file__, "--worker", "--size", args.size, "--device", args.device]
    common += ["--mode", args.mode, "--steps", str(args.steps), "--chunk", str(args.chunk)]
    common += ["--overlap", str(args.overlap), "--rounds", "0", "--codec", codec.name, "--no-encode"]

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
    if args.encode:
        name = f"encode {args.long:g} s (60 s pieces)"
        results[name] = (args.long, run(name, ["--seconds", str(args.long), "--encode"]))
    pieces = args.pieces * args.chunk
    interleaved = None
    if args.rounds:
        extra = ["--seconds", str(pieces), "--chunked", "--rounds", str(args.rounds)]
        interleaved = run("interleaved", extra)
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "max RSS"
    print(
        f"\ndevice={args.device} size={args.size} steps={args.steps} x 4 bands, mode={args.mode}, "
        f"tokens_to_wav (EnCodec decode, 32-band re-EQ), threads={torch.get_num_threads()}"
    )
    print(f"| case | audio s | wall s | s per audio s | vs mean short | peak GiB, {memory} (baseline) |")
    print("|---|---:|---:|---:|---:|---:|")
    per_second = {name: r["wall"] / s for name, (s, r) in results.items()}
    short = [per_second[name] for name, (_, chunked) in cases.items() if not chunked]
    first = sum(short) / len(short)
    for name, (seconds, r) in results.items():
        ratio = "" if name.startswith("encode") else f"{per_second[name] / first:.2f}x"
        peak = f"{r['peak_gib']:.2f} ({r['baseline_gib']:.2f})"
        print(f"| {name} | {seconds:g} | {r['wall']:.1f} | {per_second[name]:.3f} | {ratio} | {peak} |")
    if interleaved is not None:
        print(
            f"\nInterleaved, {args.rounds} rounds: {pieces:g} s chunked {interleaved['chunked']:.1f} s vs "
            f"{args.pieces} x {args.chunk:g} s unchunked {interleaved['unchunked']:.1f} s (generate only): "
            f"ratio {interleaved['chunked'] / interleaved['unchunked']:.3f}"
        )


if __name__ == "__main__":
    main()
