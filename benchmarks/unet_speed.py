"""CPU decode speed of the U-Net paths side by side: AudioCraft's own module, per-band, fused.

    python benchmarks/unet_speed.py                                   # widths 48 and 16, 5 rounds
    python benchmarks/unet_speed.py --widths 16 --rounds 3 --steps 4  # a quick look
    python benchmarks/unet_speed.py --audiocraft path/to/audiocraft   # where AudioCraft's sources are
    python benchmarks/unet_speed.py --widths 48 --tile none           # the fused path without Winograd

Every column decodes the same latent with the same noise through `MultiBandDiffusion.generate` (DDPM,
`--steps` steps x 4 bands, `--seconds` of 24 kHz audio, batch 1); only the network differs:

* `audiocraft`: AudioCraft's `DiffusionUnet` (audiocraft/models/unet.py), loaded from its source file with
  our weights assigned into it (shared, not copied), in the band-by-band loop. Its output is checked to
  equal ours bit for bit before timing. Skipped, with a note, when AudioCraft's sources are not found.
* `per-band`: `generate()` with its defaults (the faithful path).
* `fused`: `generate(options=RuntimeOptions(fused=True))`, the bands as one grouped network, on CPU
  only where `mbd.fused.fused_pays` says so (elsewhere it is the per-band path).
* `fused-forced` (only where `fused_pays` declines): the fused network all the same, to show the decision.
* `fused-direct` (with `--compare-tile`): the fused network with Winograd off (`WINOGRAD_TILE = None`), so
  that the tile's effect is measured in the same rounds.

The columns run interleaved, round after round (one untimed warm-up call each first), each round starting
one column later than the one before, and the table gives each column's median over the rounds, so that load
from other processes and the position in a round spread over all columns alike.
AudioCraft is not a dependency: pass the folder that holds its `audiocraft/models/unet.py` (e.g. an
unpacked `pip download audiocraft==1.3.0 --no-deps` source archive); by default `.ac/` at the repository
root is searched.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from mbd import fused as fused_module
from mbd import gemm_conv
from mbd.config import BandConfig, CodecConfig, MBDConfig
from mbd.diffusion import PowerSchedule
from mbd.options import RuntimeOptions
from mbd.pipeline import MultiBandDiffusion
from mbd.processor import ProcessorConfig
from mbd.unet import UNetConfig

HOP, SAMPLE_RATE = 320, 24000
ROOT = Path(__file__).resolve().parents[1]


def unet_config(hidden: int) -> UNetConfig:
    """The released architecture (benchmarks/decode_speed.py SIZES["released"]) at first-level width `hidden`."""
    return UNetConfig(hidden=hidden, growth=4, depth=4, res_blocks=2, kernel=8, stride=4, codec_dim=128)


def find_audiocraft(where: str | None) -> Path | None:
    """AudioCraft's audiocraft/models/unet.py under `where` (or `.ac/`), None if absent."""
    base = Path(where) if where else ROOT / ".ac"
    found = sorted(base.glob("**/audiocraft/models/unet.py")) if base.exists() else []
    return found[0] if found else None


def load_audiocraft_unet(path: Path) -> type:
    """AudioCraft's `DiffusionUnet` class from its source file. Its only project import, the streaming
    transformer, is used when `transformer=True`, which MBD's released models do not set: a stub stands in."""
    stub = types.ModuleType("audiocraft.modules.transformer")
    stub.StreamingTransformer = stub.create_sin_embedding = None
    names = ["audiocraft", "audiocraft.modules", "audiocraft.modules.transformer"]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names[:2]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[names[2]] = stub
    try:
        spec = importlib.util.spec_from_file_location("audiocraft_unet_reference", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module.DiffusionUnet


class AudioCraftUNet(nn.Module):
    """AudioCraft's `DiffusionUnet` holding `unet`'s weights, called like `mbd.unet.DiffusionUNet`."""

    def __init__(self, reference: type, unet: nn.Module) -> None:
        super().__init__()
        c = unet.config
        with torch.device("meta"):
            self.net = reference(
                chin=c.channels, hidden=c.hidden, depth=c.depth, growth=c.growth, max_channels=c.max_channels,
                num_steps=c.num_steps, emb_all_layers=c.emb_all_layers, codec_dim=c.codec_dim, kernel=c.kernel,
                stride=c.stride, norm_groups=c.norm_groups, res_blocks=c.res_blocks, dropout=c.dropout,
            )  # fmt: skip
        self.net.load_state_dict(unet.state_dict(), assign=True)  # the same tensors, not copies
        self.config = c

    def forward(self, x: torch.Tensor, step: int | torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.net(x, step, condition).sample


def build(hidden: int) -> MultiBandDiffusion:
    torch.manual_seed(0)
    band = BandConfig(unet_config(hidden), PowerSchedule(), ProcessorConfig())
    model = MultiBandDiffusion(MBDConfig(SAMPLE_RATE, CodecConfig(), (band,) * 4))
    for b in model.bands:  # fitted-looking processor statistics
        b.processor.counts.fill_(1.0)
        b.processor.sum_x2.fill_(0.01)
        b.processor.sum_target_x2.fill_(0.1)
    return model.eval()


@contextmanager
def swapped_unets(model: MultiBandDiffusion, unets: list[nn.Module]):
    """Run `model` with `unets` in place of its band U-Nets."""
    own = [band.unet for band in model.bands]
    for band, unet in zip(model.bands, unets):
        band._modules["unet"] = unet
    try:
        yield
    finally:
        for band, unet in zip(model.bands, own):
            band._modules["unet"] = unet


@contextmanager
def winograd_tile(tile: int | None):
    """The fused CPU path with Winograd tile `tile` (None: direct convolutions)."""
    default = gemm_conv.WINOGRAD_TILE
    gemm_conv.WINOGRAD_TILE = tile
    try:
        yield
    finally:
        gemm_conv.WINOGRAD_TILE = default


@contextmanager
def forced_fusion():
    """`fused_pays` answering yes whatever the size."""
    width = fused_module.CPU_MIN_WIDTH
    fused_module.CPU_MIN_WIDTH = 0
    try:
        yield
    finally:
        fused_module.CPU_MIN_WIDTH = width


def measure(hidden: int, args: argparse.Namespace, reference: type | None) -> dict[str, list[float]]:
    """Seconds of each column, one entry per round."""
    model = build(hidden)
    frames = round(args.seconds * SAMPLE_RATE / HOP)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 128, frames, generator=gen)  # [B, D, T]
    steps = model.step_list(args.steps)
    noise = torch.randn(4, len(steps) - 1, 1, 1, frames * HOP, generator=gen)  # [bands, K, B, C, L]
    ac_unets = None if reference is None else [AudioCraftUNet(reference, band.unet) for band in model.bands]
    if ac_unets is not None:  # same function before timing
        x, c = torch.randn(1, 1, frames * HOP, generator=gen), latents
        with torch.no_grad():
            same = torch.equal(ac_unets[0](x, 500, c), model.bands[0].unet(x, 500, c))
        if not same:
            sys.exit("AudioCraft's module and ours disagree on the same weights: not timing them")

    def run(steps: list[int], fused: bool) -> torch.Tensor:
        options = RuntimeOptions(fused=fused)
        return model.generate(latents, length=latents.shape[-1] * HOP, steps=steps, noise=noise[:, : len(steps) - 1],
                              options=options)

    def column(name: str, steps: list[int]) -> torch.Tensor:
        if name == "audiocraft":
            with swapped_unets(model, ac_unets):
                return run(steps, False)
        if name == "fused-forced":
            with forced_fusion():
                return run(steps, True)
        if name == "fused-direct":
            with forced_fusion(), winograd_tile(None):
                return run(steps, True)
        return run(steps, name == "fused")

    names = ([] if ac_unets is None else ["audiocraft"]) + ["per-band", "fused"]
    if not fused_module.fused_pays(model.bands[0].config.unet, torch.device("cpu")):
        names.append("fused-forced")  # `fused` is the per-band path here: what would fusing have given?
    if args.compare_tile:
        names.append("fused-direct")
    outputs = {name: column(name, [steps[0], 0]) for name in names}  # warm-up: pages in, builds the fused net
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each column in every position in turn
            t0 = time.perf_counter()
            outputs[name] = column(name, steps)
            times[name].append(time.perf_counter() - t0)
        laps = ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items())
        print(f"  hidden {hidden} round {r + 1}: {laps}", flush=True)
    ref = outputs["per-band"]
    for name in names:
        dev = (outputs[name] - ref).abs().max().item()
        print(f"  hidden {hidden} {name}: max abs deviation from per-band {dev:.2e}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="48,16", help="first-level widths (UNetConfig.hidden), comma list")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio duration to decode")
    parser.add_argument("--steps", type=int, default=20, help="DDPM model evaluations per band")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed runs per column")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--tile", default="default", help="Winograd tile of the fused CPU path: 2, 4 or none")
    parser.add_argument("--compare-tile", action="store_true", help="add the fused path without Winograd")
    parser.add_argument("--audiocraft", help="folder holding audiocraft/models/unet.py (default: .ac/)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tile != "default":
        gemm_conv.WINOGRAD_TILE = None if args.tile == "none" else int(args.tile)
    path = find_audiocraft(args.audiocraft)
    reference = None if path is None else load_audiocraft_unet(path)
    if reference is None:
        print("AudioCraft's sources not found (see --audiocraft): the audiocraft column is skipped")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.seconds} s at {SAMPLE_RATE} Hz, "
          f"{args.steps} steps x 4 bands, median of {args.rounds} interleaved rounds, "
          f"Winograd tile {gemm_conv.WINOGRAD_TILE}")  # fmt: skip
    rows = []
    for hidden in [int(w) for w in args.widths.split(",")]:
        times = measure(hidden, args, reference)
        med = {name: statistics.median(t) for name, t in times.items()}
        rows.append((hidden, med, {name: (min(t), max(t)) for name, t in times.items()}))
    names = list(dict.fromkeys(n for _, med, _ in rows for n in med))
    print("\n| hidden | " + " | ".join(f"{n} s" for n in names) + " | per-band / fused | audiocraft / fused |")
    print("|---:|" + "---:|" * (len(names) + 2))
    for hidden, med, _ in rows:
        ac = f"{med['audiocraft'] / med['fused']:.2f}x" if "audiocraft" in med else "-"
        cells = " | ".join(f"{med[n]:.2f}" if n in med else "-" for n in names)
        print(f"| {hidden} | {cells} | {med['per-band'] / med['fused']:.2f}x | {ac} |")
    print("\nrange over rounds (min-max s): " + "; ".join(
        f"hidden {h}: " + ", ".join(f"{n} {lo:.2f}-{hi:.2f}" for n, (lo, hi) in spread.items())
        for h, _, spread in rows
    ))  # fmt: skip


if __name__ == "__main__":
    main()
