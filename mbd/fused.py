"""All band U-Nets as one network: the fast path of `MultiBandDiffusion.generate(fused=True)`.

The n band models share one architecture and differ only in their weights, so `fuse` stacks them into one
`DiffusionUNet(config, bands=n)`, whose convolutions are grouped (`groups = n`; see `mbd.unet`).
Activations are band-stacked along channels: `[B, n * C, L]`, block b = band b.

Work that does not change during one `generate` call is computed once: the conditioning projection and its
nearest-neighbour stretch to the bottleneck (`DiffusionUNet.condition_embedding`), and the per-level step
embeddings of every step in the list (`DiffusionUNet.step_embeddings`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from .diffusion import PowerSchedule, Sampler, StepCallback, sample
from .meta import on_meta
from .noise import clip_by_clip
from .options import RuntimeOptions
from .unet import DiffusionUNet, UNetConfig

CPU_MIN_WIDTH = 2048
"""Bottleneck width (channels per band) from which the fused network beats the band-by-band loop on CPU. From
2048 channels the bottleneck's convolutions are large enough to run as GEMMs (`gemm_conv.GEMM_MIN_WEIGHTS`);
below, the fused network runs grouped oneDNN convolutions, which are slower than the bands one by one.
Measured (benchmarks/unet_speed.py, 2 threads, fused vs per-band): width 16, a 1024-channel bottleneck,
0.74x; width 32, 2048 channels, 2.27x; width 48 (released), 3072 channels, 2.30x."""

Network = Callable[[torch.Tensor, Sequence[torch.Tensor | None], torch.Tensor | None], torch.Tensor]


def fuse(unets: Sequence[DiffusionUNet]) -> DiffusionUNet:
    """The band U-Nets `unets` (one config) as one band-stacked network, on their device and dtype.

    Every parameter stacks its bands along dim 0 (grouped convolutions: output channels, transposed ones:
    input channels; GroupNorm and bias vectors; `conv_codec`'s output channels), except the step tables,
    `[num_steps, C]`, which stack along their channels (dim 1).
    """
    configs = {u.config for u in unets}
    if len(configs) != 1 or any(u.bands != 1 for u in unets):
        raise ValueError("only single-band U-Nets with one shared config can be fused")
    fused = on_meta(partial(DiffusionUNet, unets[0].config, bands=len(unets)))
    states = [u.state_dict() for u in unets]
    stacked = {
        key: torch.cat([s[key].detach() for s in states], dim=1 if key.startswith("embedding") else 0)
        for key in states[0]
    }
    fused.load_state_dict(stacked, assign=True)
    return fused


def fused_pays(config: UNetConfig, device: torch.device) -> bool:
    """Whether `generate(fused=True)` runs the fused network for bands of `config` on `device`: always off
    the CPU, on CPU from a bottleneck of `CPU_MIN_WIDTH` channels."""
    return device.type != "cpu" or config.level_channels()[-1] >= CPU_MIN_WIDTH


def stack_bands(x: torch.Tensor) -> torch.Tensor:
    """`[n_bands, B, C, L]` -> band-stacked `[B, n_bands * C, L]`."""
    n, b, c, length = x.shape
    return x.permute(1, 0, 2, 3).reshape(b, n * c, length)


def unstack_bands(x: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Band-stacked `[B, n_bands * C, L]` -> `[n_bands, B, C, L]`."""
    b, nc, length = x.shape
    return x.view(b, n_bands, nc // n_bands, length).permute(1, 0, 2, 3)


@torch.no_grad()
def sample_fused(
    network: Network,
    fused: DiffusionUNet,
    latents: torch.Tensor | None,
    schedules: Sequence[PowerSchedule],
    steps: list[int],
    draws: torch.Tensor,
    sampler: Sampler,
    options: RuntimeOptions,
    on_step: StepCallback | None = None,
    alone: bool = False,
) -> torch.Tensor:
    """Sample every band at once with the fused network.

    Args:
        network: `fused.denoise`, or a compiled version of it.
        fused: the fused network (for its step and condition embeddings).
        latents: codec latent `[B, D, T]`, or None for unconditional models.
        schedules: one schedule per band.
        steps: strictly descending steps ending in 0.
        draws: standard Gaussian draws `[n_bands, K, B, C, L]` in AudioCraft's order: `[b, 0]` is band b's
            initial noise, `[b, i]` the noise added after its iteration i - 1 (DDPM needs K = len(steps) - 1,
            the deterministic samplers K = 1).
        sampler: "ddpm", "ddim" or "dpm++2m" (`mbd.diffusion`).
        options: the network's dtype (the sampler state stays float32).
        on_step: called as `on_step(i, x)` with the band-stacked state `[B, n_bands * C, L]`.
        alone: embed each clip's latent on its own (`mbd.noise.clip_by_clip`; `network` is then expected to
            see each clip alone too), so that a clip's output does not depend on its batch.

    Returns:
        each band's final state in diffusion space `[n_bands, B, C, L]`.
    """
    n, _, _, _, length = draws.shape
    dtype = options.torch_dtype
    embed = clip_by_clip(fused.condition_embedding) if alone else fused.condition_embedding
    condition = None if latents is None else embed(latents.to(dtype), length)  # [B, n * C_last, T']
    device = fused.embedding.weight.device
    table = {
        t: [e if e is None else e.to(dtype) for e in fused.step_embeddings(torch.full((1,), t, device=device))]
        for t in steps
    }

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        return network(x.to(dtype), table[t], condition).to(x.dtype)

    stacked = (stack_bands(d) for d in draws.unbind(1))  # [B, n * C, L] each, in draw order
    return unstack_bands(sample(sampler, denoise, lambda: next(stacked), schedules, steps, on_step), n)
