"""One band of Multi-Band Diffusion: its U-Net, its noise schedule and its optional EQ processor."""

from __future__ import annotations

import torch
from torch import nn

from .config import BandConfig
from .processor import BandProcessor
from .unet import DiffusionUNet


class Band(nn.Module):
    """One band model: U-Net, schedule and optional EQ processor."""

    def __init__(self, config: BandConfig, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.unet = DiffusionUNet(config.unet)
        self.schedule = config.schedule
        self.processor = BandProcessor(config.processor, sample_rate) if config.processor is not None else None

    def unproject(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion space to audio `[B, C, L]` (identity without a processor)."""
        return z if self.processor is None else self.processor.unproject(z)
