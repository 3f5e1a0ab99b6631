"""Where a decode's Gaussian draws come from: AudioCraft's draw order, and one stream per clip.

`MultiBandDiffusion.generate` draws, band after band, each band's initial noise and then its posterior
noises, each the shape of the output `[B, C, L]`; with one `torch.Generator` (or torch's global one) the
whole batch is drawn at once, as AudioCraft does (audiocraft/modules/diffusion_schedule.py,
`NoiseSchedule.generate_subsampled`), so a seeded run replays AudioCraft's output. A clip's draws then depend
on its position in the batch and on the batch's size.

With one generator per clip instead, each clip's generator draws that clip's slices in the same order, so a
clip gets the same draws whatever it is batched with. `clip_generators` derives those generators from a seed
and each clip's content (`clip_seed`), which is what `mbd.decode`, `mbd.vocode` and the `mbd` command use.
Equal draws are not quite enough for equal outputs: on a CPU the network then sees each clip alone too
(`clip_by_clip`), which makes a clip's output bit-identical whatever its batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .diffusion import NoiseSource

Generators = torch.Generator | Sequence[torch.Generator] | None
"""The source of a call's random draws: one generator for the whole batch (None: torch's global generator),
or one generator per clip, so that a clip's draws do not depend on its companions in the batch."""


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device | str) -> torch.Tensor:
    """A standard Gaussian draw of `shape` `[B, ...]`, float32.

    One generator draws the whole tensor at once, on its own device (None: torch's global generator, on
    `device`). A sequence of n generators splits the batch axis into n equal consecutive groups (n = B: one
    clip each): generator i draws group i's `[B / n, ...]` on its own device, and the groups are concatenated
    on `device`. Group i's values then depend only on generator i, never on the other groups.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device if generator is None else generator.device)
    generators = list(generator)
    if not generators or shape[0] % len(generators):
        raise ValueError(f"{len(generators)} generators cannot split a batch of {shape[0]}")
    part = (shape[0] // len(generators), *shape[1:])
    return torch.cat([torch.randn(part, generator=g, device=g.device).to(device) for g in generators])


def band_draws(
    shape: tuple[int, ...],
    n_draws: int,
    band: int,
    n_bands: int,
    generator: Generators,
    noise: torch.Tensor | None,
    like: torch.Tensor,
) -> NoiseSource:
    """The draws of one band, in AudioCraft's order: band 0's initial noise, then its posterior noises, then
    band 1's, and so on, each of `shape` `[B, C, L]`. They come from `noise` `[n_bands, >= n_draws, *shape]`
    if given, else from `generator` (see `randn`) or, for None, torch's global generator (which replays
    AudioCraft's seeded runs): float32 on the generator's device (the output's for the global one), then moved
    to `like`'s device and dtype. With one generator per clip, each clip's generator draws that clip's
    `[1, C, L]` slices in this same order, so a clip's draws are those it gets when decoded alone.
    """
    if noise is None:
        return lambda: randn(shape, generator, like.device).to(like)
    if noise.dim() != len(shape) + 2 or noise.shape[0] != n_bands or tuple(noise.shape[2:]) != tuple(shape):
        raise ValueError(f"noise must be {[n_bands, n_draws, *shape]}, got {list(noise.shape)}")
    if noise.shape[1] < n_draws:
        raise ValueError(f"noise holds {noise.shape[1]} draws per band, {n_draws} are needed")
    draws = iter(noise[band, :n_draws].to(like))
    return lambda: next(draws)


def all_draws(
    shape: tuple[int, ...],
    n_draws: int,
    n_bands: int,
    generator: Generators,
    noise: torch.Tensor | None,
    like: torch.Tensor,
) -> torch.Tensor:
    """Every band's draws at once, `[n_bands, n_draws, *shape]`, drawn in the same order as `band_draws`."""
    sources = [band_draws(shape, n_draws, b, n_bands, generator, noise, like) for b in range(n_bands)]
    return torch.stack([torch.stack([draw() for _ in range(n_draws)]) for draw in sources])


def clip_seed(seed: int, clip: torch.Tensor) -> int:
    """The seed of one clip's stream: the first 8 bytes of sha256(seed, dtype, shape, values), as an integer
    below 2**63. It depends on the seed and on the clip's content only (not its file name, nor its place in a
    batch), so identical clips decoded with one seed get identical noise.

    Args:
        seed: the user's seed (any integer).
        clip: the clip as the model reads it: codes `[K, T]`, a log-mel `[n_mels, T]`, audio `[C, L]`.
    """
    data = clip.detach().to("cpu").contiguous()
    digest = hashlib.sha256()
    digest.update(f"mbd-clip-seed:{int(seed)}:{data.dtype}:{tuple(data.shape)}:".encode())
    digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def clip_generators(seed: int, clips: torch.Tensor, device: torch.device | str) -> list[torch.Generator]:
    """One generator on `device` per clip of `clips` `[B, ...]`, seeded with `clip_seed(seed, clips[i])`."""
    return [torch.Generator(device).manual_seed(clip_seed(seed, clip)) for clip in clips]


def per_clip(generator: Generators) -> bool:
    """Whether `generator` gives each clip (or group of clips) its own stream: a sequence of generators."""
    return not (generator is None or isinstance(generator, torch.Generator))


def clip_by_clip(network: Callable[..., torch.Tensor], rows: int = 1) -> Callable[..., torch.Tensor]:
    """`network(x [B, ...], *args)` called on `rows` rows of x at a time (one clip, or one clip's group of
    rows): tensor arguments with B rows (steps, band indices, conditions) are split with x, the others (an
    int step, step tables, None) are passed whole.

    Per-clip streams make a clip's draws independent of its batch; on a CPU the network must also see each clip
    alone for its output to be bit-identical, as oneDNN's convolutions round differently for different batch
    sizes (by about 1e-6). Batching gains little on a CPU (4 clips of 1 s through a width-32 U-Net: 0.83 s
    batched, 0.86 s clip by clip), so `MultiBandDiffusion.generate` and `SpectralMBD.sample_spectrogram` call the
    network this way there whenever they are given per-clip generators.
    """

    def call(x: torch.Tensor, *args: Any) -> torch.Tensor:
        def part(a: Any, i: int) -> Any:
            return a[i : i + rows] if isinstance(a, torch.Tensor) and a.dim() and len(a) == len(x) else a

        return torch.cat([network(x[i : i + rows], *(part(a, i) for a in args)) for i in range(0, len(x), rows)])

    return call
