"""The denoising network: a 1-D convolutional U-Net, for one band or several bands side by side.

It maps a noisy waveform, an integer diffusion step and the codec latent to the predicted noise eps. Module
and parameter names follow AudioCraft's `DiffusionUnet` (audiocraft/models/unet.py), so its released state
dicts load without renaming.

`bands = n` builds n U-Nets of one config as a single network: every convolution is grouped (`groups = n`)
and every activation is band-stacked along channels, `[B, n * C, L]` with channel block b = band b, so
block b only ever meets band b's weights. Each GroupNorm has `n * norm_groups` groups over `n * C` channels,
which is exact because its groups are contiguous channel blocks that never straddle two bands. The step
tables and `conv_codec` stack their bands along the output channels (`mbd.fused.fuse` builds one from n
band models). `bands = 1` is exactly AudioCraft's network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Args:
    channels: audio channels in and out (1: mono).
    hidden: channels of the first level; level d has min(int(hidden * growth^d), max_channels).
    depth: number of encoder/decoder levels.
    res_blocks: residual blocks per level (dilations 1, 2, 4, ...).
    norm_groups: GroupNorm groups.
    kernel: kernel size of the strided (transposed) convolutions.
    stride: down/upsampling factor per level.
    growth: channel growth per level.
    max_channels: channel cap.
    emb_all_layers: add a step embedding at every level, not only the first.
    codec_dim: dimension of the conditioning latent; None for an unconditional model.
    num_steps: size of the step-embedding tables (the schedule's N).
    dropout: dropout in the residual blocks (0 in MBD).
    """

    channels: int = 1
    hidden: int = 48
    depth: int = 4
    res_blocks: int = 2
    norm_groups: int = 4
    kernel: int = 8
    stride: int = 4
    growth: float = 4.0
    max_channels: int = 10_000
    emb_all_layers: bool = True
    codec_dim: int | None = 128
    num_steps: int = 1000
    dropout: float = 0.0

    def level_channels(self) -> list[int]:
        """Channels C_d of each level d = 0..depth-1."""
        widths, width = [], self.hidden
        for _ in range(self.depth):
            widths.append(width)
            width = min(int(width * self.growth), self.max_channels)
        return widths

    def bottleneck_length(self, length: int) -> int:
        """Frames at the bottleneck for an input of `length` samples: each encoder pads to a multiple of the
        stride, then convolves with padding (kernel - stride) // 2."""
        padding = (self.kernel - self.stride) // 2
        for _ in range(self.depth):
            length = -(-length // self.stride) * self.stride
            length = (length + 2 * padding - self.kernel) // self.stride + 1
        return length

    def max_condition_frames(self, length: int) -> int:
        """Most latent frames an input of `length` samples accepts: AudioCraft refuses to downsample the
        conditioning by 2 or more when stretching it to the bottleneck."""
        return 2 * self.bottleneck_length(length)


class ResBlock(nn.Module):
    """x + conv(relu(norm(conv(relu(norm(x)))))), kernel 3 with the given dilation.

    `[B, bands * C, L] -> [B, bands * C, L]`.
    """

    def __init__(self, channels: int, dilation: int, norm_groups: int, dropout: float, bands: int = 1) -> None:
        super().__init__()
        width = bands * channels
        self.norm1 = nn.GroupNorm(bands * norm_groups, width)
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation, groups=bands)
        self.norm2 = nn.GroupNorm(bands * norm_groups, width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation, groups=bands)
        self.dropout = nn.Dropout1d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.conv1(F.relu(self.norm1(x))))
        h = self.dropout(self.conv2(F.relu(self.norm2(h))))
        return x + h


def _res_blocks(channels: int, config: UNetConfig, bands: int) -> nn.Sequential:
    return nn.Sequential(
        *[ResBlock(channels, 2**r, config.norm_groups, config.dropout, bands) for r in range(config.res_blocks)]
    )


class EncoderLayer(nn.Module):
    """Pad to a multiple of the stride, strided conv, norm, ReLU, residual blocks.

    `[B, bands * C_in, L] -> [B, bands * C_out, ceil(L / stride)]`.
    """

    def __init__(self, chin: int, chout: int, config: UNetConfig, bands: int = 1) -> None:
        super().__init__()
        self.stride = config.stride
        padding = (config.kernel - config.stride) // 2
        self.conv = nn.Conv1d(
            bands * chin, bands * chout, config.kernel, config.stride, padding, groups=bands, bias=False
        )
        self.norm = nn.GroupNorm(bands * config.norm_groups, bands * chout)
        self.res_blocks = _res_blocks(chout, config, bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, -x.shape[-1] % self.stride))
        return self.res_blocks(F.relu(self.norm(self.conv(x))))


class DecoderLayer(nn.Module):
    """Residual blocks, norm, ReLU, transposed conv. `[B, bands * C_in, L] -> [B, bands * C_out, stride * L]`."""

    def __init__(self, chin: int, chout: int, config: UNetConfig, bands: int = 1) -> None:
        super().__init__()
        padding = (config.kernel - config.stride) // 2
        self.res_blocks = _res_blocks(chin, config, bands)
        self.norm = nn.GroupNorm(bands * config.norm_groups, bands * chin)
        self.convtr = nn.ConvTranspose1d(
            bands * chin, bands * chout, config.kernel, config.stride, padding, groups=bands, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(F.relu(self.norm(self.res_blocks(x))))


class DiffusionUNet(nn.Module):
    """eps-predicting U-Net with learned step embeddings and the codec latent added at the bottleneck.

    Args:
        config: the architecture of one band.
        bands: how many band U-Nets of this config the network computes side by side (see the module
            docstring); all of them see the same step and the same latent.
    """

    def __init__(self, config: UNetConfig, bands: int = 1) -> None:
        super().__init__()
        self.config = config
        self.bands = bands
        widths = config.level_channels()
        ins = [config.channels, *widths[:-1]]
        self.encoders = nn.ModuleList(EncoderLayer(i, o, config, bands) for i, o in zip(ins, widths))
        # Stored deepest first, as in AudioCraft.
        self.decoders = nn.ModuleList(DecoderLayer(o, i, config, bands) for i, o in reversed(list(zip(ins, widths))))
        self.embedding = nn.Embedding(config.num_steps, bands * widths[0])
        self.embeddings = (
            nn.ModuleList(nn.Embedding(config.num_steps, bands * w) for w in widths[1:])
            if config.emb_all_layers
            else None
        )
        self.conv_codec = nn.Conv1d(config.codec_dim, bands * widths[-1], 1) if config.codec_dim is not None else None

    def step_embeddings(self, step: torch.Tensor) -> list[torch.Tensor | None]:
        """Per-level step embeddings `[B, bands * C_d, 1]` (None where a level has none).

        Args:
            step: diffusion step of each batch item `[B]` (long).
        """
        embs: list[torch.Tensor | None] = [self.embedding(step)[:, :, None]]
        for d in range(1, self.config.depth):
            embs.append(self.embeddings[d - 1](step)[:, :, None] if self.embeddings is not None else None)
        return embs

    def condition_embedding(self, condition: torch.Tensor, length: int) -> torch.Tensor:
        """Project the latent to the bottleneck width and stretch it to the bottleneck frames (nearest).

        Args:
            condition: codec latent `[B, codec_dim, T]`, with T <= `config.max_condition_frames(length)`.
            length: input samples L.

        Returns:
            `[B, bands * C_last, config.bottleneck_length(L)]`.
        """
        if self.conv_codec is None:
            raise ValueError("this U-Net is unconditional (codec_dim is None) but a condition was given")
        if condition.dim() != 3 or condition.shape[1] != self.config.codec_dim:
            raise ValueError(f"condition must be [B, {self.config.codec_dim}, T], got {tuple(condition.shape)}")
        if condition.shape[-1] > self.config.max_condition_frames(length):
            raise ValueError(
                f"condition has {condition.shape[-1]} frames, more than twice the "
                f"{self.config.bottleneck_length(length)} bottleneck frames of this input: the audio is too "
                "short for its latent"
            )
        return F.interpolate(self.conv_codec(condition), size=self.config.bottleneck_length(length))

    def forward(self, x: torch.Tensor, step: int | torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise in `x`.

        Args:
            x: noisy audio `[B, bands * C, L]`, any L.
            step: diffusion step, an int or a LongTensor `[B]`.
            condition: codec latent `[B, codec_dim, T]`; required when `codec_dim` is set.

        Returns:
            eps `[B, bands * C, L]`.
        """
        if x.dim() != 3 or x.shape[1] != self.bands * self.config.channels:
            raise ValueError(f"x must be [B, {self.bands * self.config.channels}, L], got {tuple(x.shape)}")
        if not isinstance(step, torch.Tensor):
            step = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        if self.conv_codec is not None and condition is None:
            raise ValueError("this U-Net is conditional: pass the codec latent as `condition`")
        embedded = None if self.conv_codec is None else self.condition_embedding(condition, x.shape[-1])
        return self.denoise(x, self.step_embeddings(step), embedded)

    def denoise(
        self, x: torch.Tensor, embeddings: Sequence[torch.Tensor | None], condition: torch.Tensor | None
    ) -> torch.Tensor:
        """`forward` with the step and condition embeddings already computed (a sampler computes them once).

        Args:
            x: noisy audio `[B, bands * C, L]`.
            embeddings: `step_embeddings(step)`.
            condition: `condition_embedding(latent, L)`, or None for an unconditional model.

        Returns:
            eps `[B, bands * C, L]`.
        """
        skips = []
        z = x
        for encoder, emb in zip(self.encoders, embeddings):
            z = encoder(z)
            if emb is not None:
                z = z + emb
            skips.append(z)
        if condition is not None:
            # The latent enters only through the bottleneck skip: AudioCraft adds it in place to the tensor
            # already stored as the last skip, then zeroes the bottleneck path.
            skips[-1] = skips[-1] + condition
        z = skips.pop()
        z = self.decoders[0](z)
        for decoder in self.decoders[1:]:
            s = skips.pop()
            z = decoder(z[..., : s.shape[-1]] + s)
        return z[..., : x.shape[-1]]
