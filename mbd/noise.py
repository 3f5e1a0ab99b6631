"""The Gaussian draws of one `generate` call, in AudioCraft's order.

Band 0's initial noise comes first, then band 0's posterior noises, then band 1's, and so on; each draw has
the shape of the output. They come from a `torch.Generator`, from torch's global generator (which replays
AudioCraft's own seeded runs), or from stored tensors.
"""

from __future__ import annotations

import torch

from .sampler import NoiseSource


def band_draws(
    shape: tuple[int, ...],
    n_draws: int,
    band: int,
    n_bands: int,
    generator: torch.Generator | None,
    noise: torch.Tensor | None,
    like: torch.Tensor,
) -> NoiseSource:
    """The draws of one band: from `noise` `[n_bands, >= n_draws, *shape]` if given, else freshly drawn.

    Fresh draws are float32 on the generator's device (the output's device for the global generator), then
    moved to `like`'s device and dtype.
    """
    if noise is None:
        device = like.device if generator is None else generator.device
        return lambda: torch.randn(shape, generator=generator, device=device).to(like)
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
    generator: torch.Generator | None,
    noise: torch.Tensor | None,
    like: torch.Tensor,
) -> torch.Tensor:
    """Every band's draws at once, `[n_bands, n_draws, *shape]`, drawn in the same order as `band_draws`."""
    sources = [band_draws(shape, n_draws, b, n_bands, generator, noise, like) for b in range(n_bands)]
    return torch.stack([torch.stack([draw() for _ in range(n_draws)]) for draw in sources])
