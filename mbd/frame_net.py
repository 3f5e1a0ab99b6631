"""A frame-level denoiser: a ConvNeXt stack over STFT frames, shared by all bands of a spectral model.

Each band's STFT bins at one frame are one input vector (real and imaginary parts), so the network runs at
the frame rate (hop 256: 94 frames per second at 24 kHz) instead of the sample rate, as Vocos (Siuzdak,
2024) and RFWave (Liu et al., ICLR 2025) do. The blocks are ConvNeXt blocks (Liu et al., 2022: depthwise
conv, LayerNorm, pointwise MLP, layer scale) whose LayerNorm is modulated by the diffusion time and the band
(adaptive LayerNorm, as Vocos modulates it by the bandwidth). The conditioning (the normalised log-mel)
enters with the noisy input through the first convolution and again through every block, so every layer
sees it. The network maps `(x_t, t, band, condition)` to a tensor the shape of `x_t`; it knows nothing about
schedules, objectives or STFTs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FrameNetConfig:
    """The network's own shape; its input, output and conditioning sizes come from the model that owns it
    (`FrameNet`'s arguments).

    Args:
    dim: width of the ConvNeXt blocks.
    blocks: number of blocks.
    mlp_ratio: hidden width of each block's pointwise MLP, in units of `dim`.
    kernel: depthwise kernel size in frames (odd).
    """

    dim: int = 192
    blocks: int = 8
    mlp_ratio: float = 3.0
    kernel: int = 7

    def __post_init__(self) -> None:
        for name in ("dim", "blocks", "kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of times t in [0, 1] (Vaswani et al., 2017), scaled to 1000 periods: `[B] -> [B, dim]`."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000 * t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> adaptive LayerNorm -> pointwise MLP -> layer scale, with a residual; the conditioning
    is added before the depthwise conv."""

    def __init__(self, config: FrameNetConfig, cond_dim: int) -> None:
        super().__init__()
        dim, hidden = config.dim, round(config.dim * config.mlp_ratio)
        self.cond = nn.Conv1d(cond_dim, dim, 1)
        self.dwconv = nn.Conv1d(dim, dim, config.kernel, padding=config.kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(dim, 2 * dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Args:
        x: `[B, dim, T]`.
        emb: time and band embedding `[B, dim]`.
        cond: conditioning `[B, cond_dim, T]`.
        """
        h = self.dwconv(x + self.cond(cond)).transpose(1, 2)  # [B, T, dim]
        scale, shift = self.modulation(emb)[:, None].chunk(2, dim=-1)  # [B, 1, dim] each
        h = self.norm(h) * (1 + scale) + shift
        h = self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + (self.gamma * h).transpose(1, 2)


class FrameNet(nn.Module):
    """The shared band network: `(x_t [B, channels, T], t [B], band [B], condition [B, cond_dim, T])` to a
    tensor `[B, channels, T]` (a velocity or a noise estimate, depending on the objective it was trained for).

    Args:
        config: the network's shape.
        channels: input and output channels per frame (2 x a band's bins: real and imaginary parts).
        cond_dim: conditioning channels per frame (mel bins).
        n_bands: number of bands sharing the network (one learned embedding each).
    """

    def __init__(self, config: FrameNetConfig, channels: int, cond_dim: int, n_bands: int) -> None:
        super().__init__()
        self.config, self.channels = config, channels
        dim = config.dim
        self.embed = nn.Conv1d(channels + cond_dim, dim, config.kernel, padding=config.kernel // 2)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.band_embedding = nn.Embedding(n_bands, dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(config, cond_dim) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, band: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Args:
        x: the noisy band `[B, channels, T]`.
        t: diffusion time in [0, 1] `[B]`.
        band: band index `[B]` (long).
        condition: the normalised log-mel `[B, cond_dim, T]`.

        Returns:
            `[B, channels, T]`.
        """
        emb = self.time_mlp(time_embedding(t, self.config.dim)) + self.band_embedding(band)  # [B, dim]
        h = self.embed(torch.cat([x, condition], dim=1))  # [B, dim, T]
        for block in self.blocks:
            h = block(h, emb, condition)
        return self.head(self.norm(h.transpose(1, 2))).transpose(1, 2)
