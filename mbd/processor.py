"""The frequency EQ processor: the space each band model diffuses in (AudioCraft's
`MultiBandProcessor`, audiocraft/modules/diffusion_schedule.py).

Before diffusion, a band-passed target is split into 8 mel bands; each band is centred and rescaled so that
its power moves towards the power of white noise in that band (`power_std` sets how far: 0 none, 1 all the
way). Sampling ends in that space, and `unproject` maps the result back to audio. The statistics are
buffers fitted once during training (`update`) and frozen afterwards; `project` and `unproject` never
change them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .bands import band_splitter


@dataclass(frozen=True)
class ProcessorConfig:
    """Args:
    n_bands: number of mel bands the EQ acts on.
    num_samples: examples seen by `update` before the statistics freeze.
    power_std: exponent of the per-band gain (0 = no EQ, 1 = full whitening).
    """

    n_bands: int = 8
    num_samples: int = 10_000
    power_std: float = 1.0


class BandProcessor(nn.Module):
    """Per-band mean/std normalisation with statistics held in buffers.

    Buffers (AudioCraft's `MultiBandProcessor` names, so checkpoints map one-to-one): `counts` [1], `sum_x`,
    `sum_x2`, `sum_target_x2` [n_bands], and `split_bands.lowpass.filters`.
    """

    counts: torch.Tensor
    sum_x: torch.Tensor
    sum_x2: torch.Tensor
    sum_target_x2: torch.Tensor

    def __init__(self, config: ProcessorConfig, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.split_bands = band_splitter(sample_rate, config.n_bands)
        self.register_buffer("counts", torch.zeros(1))
        self.register_buffer("sum_x", torch.zeros(config.n_bands))
        self.register_buffer("sum_x2", torch.zeros(config.n_bands))
        self.register_buffer("sum_target_x2", torch.zeros(config.n_bands))

    @property
    def fitted(self) -> bool:
        """True once `update` has seen `num_samples` examples."""
        return bool(self.counts.item() >= self.config.num_samples)

    @property
    def mean(self) -> torch.Tensor:
        """Per-band mean `[n_bands]`."""
        return self.sum_x / self.counts

    @property
    def std(self) -> torch.Tensor:
        """Per-band standard deviation of the data `[n_bands]`."""
        return (self.sum_x2 / self.counts - self.mean**2).clamp(min=0).sqrt()

    @property
    def target_std(self) -> torch.Tensor:
        """Per-band mean square of white noise `[n_bands]`.

        Named as in AudioCraft, but it is a variance, not a standard deviation; the released models were
        trained with this quantity, so it is kept (`MultiBandProcessor.target_std` in
        audiocraft/modules/diffusion_schedule.py).
        """
        return self.sum_target_x2 / self.counts

    @torch.no_grad()
    def update(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Accumulate statistics from a training batch (training only; no-op once fitted).

        Args:
            x: band-passed audio `[B, C, L]`.
            generator: source of the white-noise reference draw.
        """
        if self.fitted:
            return
        bands = self.split_bands(x)  # [n_bands, B, C, L]
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        ref_bands = self.split_bands(noise)
        self.counts += len(x)
        self.sum_x += bands.mean(dim=(2, 3)).sum(dim=1)
        self.sum_x2 += bands.pow(2).mean(dim=(2, 3)).sum(dim=1)
        self.sum_target_x2 += ref_bands.pow(2).mean(dim=(2, 3)).sum(dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Audio to diffusion space: `sum_k (band_k - mean_k) * (target_std_k / std_k) ** power_std`.

        Args:
            x: audio `[B, C, L]`.

        Returns:
            `[B, C, L]`.
        """
        bands = self.split_bands(x)  # [n_bands, B, C, L]
        gain = (self.target_std / self.std.clamp(min=1e-12)) ** self.config.power_std
        bands = (bands - self.mean.view(-1, 1, 1, 1)) * gain.view(-1, 1, 1, 1)
        return bands.sum(dim=0)

    def unproject(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion space back to audio: `sum_k band_k * (std_k / target_std_k) ** power_std + mean_k`.

        Args:
            z: diffusion-space signal `[B, C, L]`.

        Returns:
            `[B, C, L]`.
        """
        bands = self.split_bands(z)  # [n_bands, B, C, L]
        gain = (self.std / self.target_std) ** self.config.power_std
        bands = bands * gain.view(-1, 1, 1, 1) + self.mean.view(-1, 1, 1, 1)
        return bands.sum(dim=0)
