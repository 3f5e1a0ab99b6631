"""MultiBandDiffusion: tokens to waveform with one diffusion model per frequency band (spec §a).

Each band pairs a U-Net with its noise schedule and, optionally, its EQ processor. Every band samples the
whole waveform band-limited to its range; the outputs are summed and, for tokens, re-EQ'd against the
codec's own decode.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import julius
import torch
from torch import nn

from . import checkpoint
from .eq import re_eq
from .processor import BandProcessor, ProcessorConfig
from .sampler import ddpm_sample
from .schedule import PowerSchedule, check_steps, default_steps
from .unet import DiffusionUNet, UNetConfig


@dataclass(frozen=True)
class CodecConfig:
    """Args:
    name: the codec whose latents condition the model (e.g. "encodec_24khz").
    n_q: number of codebooks the model was trained with.
    """

    name: str = "encodec_24khz"
    n_q: int = 4


@dataclass(frozen=True)
class BandConfig:
    unet: UNetConfig
    schedule: PowerSchedule
    processor: ProcessorConfig | None


@dataclass(frozen=True)
class MBDConfig:
    """Args:
    sample_rate: audio sample rate in Hz.
    codec: the conditioning codec.
    bands: one entry per band, low to high.
    """

    sample_rate: int
    codec: CodecConfig
    bands: tuple[BandConfig, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MBDConfig:
        """Parse a stored config; unknown or missing keys are errors."""
        top = _fields(cls, data, "config")
        bands = []
        for i, band in enumerate(top["bands"]):
            entry = _fields(BandConfig, band, f"bands[{i}]")
            processor = entry["processor"]
            bands.append(
                BandConfig(
                    unet=UNetConfig(**_fields(UNetConfig, entry["unet"], f"bands[{i}].unet", partial=True)),
                    schedule=PowerSchedule(
                        **_fields(PowerSchedule, entry["schedule"], f"bands[{i}].schedule", partial=True)
                    ),
                    processor=None
                    if processor is None
                    else ProcessorConfig(**_fields(ProcessorConfig, processor, f"bands[{i}].processor", partial=True)),
                )
            )
        if not bands:
            raise ValueError("config: a model needs at least one band")
        return cls(
            sample_rate=int(top["sample_rate"]),
            codec=CodecConfig(**_fields(CodecConfig, top["codec"], "config.codec", partial=True)),
            bands=tuple(bands),
        )


def _fields(cls: type, data: Any, where: str, partial: bool = False) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    missing = names - set(data)
    if missing and not partial:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")
    return dict(data)


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

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Audio to diffusion space `[B, C, L]` (identity without a processor)."""
        return x if self.processor is None else self.processor.project(x)


StepCallback = Callable[[int, int, torch.Tensor], None]
"""`on_step(band, iteration, x)`: the diffusion-space state after each sampler iteration."""


class MultiBandDiffusion(nn.Module):
    """Multi-Band Diffusion decoder (San Roman et al., 2023).

    Args:
        config: model configuration.
        codec: the codec that turns tokens into latents and audio; needed by `tokens_to_wav` and
            `regenerate`, not by `generate`.
    """

    def __init__(self, config: MBDConfig, codec: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.bands = nn.ModuleList(Band(band, config.sample_rate) for band in config.bands)
        self.codec = codec

    # --- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_state(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], codec: nn.Module | None = None
    ) -> MultiBandDiffusion:
        """Build from a stored `(config, tensors)` pair, checking every key and shape."""
        model = cls(MBDConfig.from_dict(config), codec)
        expected = {name: t.shape for name, t in model.band_state().items()}
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise checkpoint.CheckpointError(
                f"checkpoint does not match its config: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
        wrong = [
            f"{name}: {tuple(tensors[name].shape)} != {tuple(shape)}"
            for name, shape in expected.items()
            if tensors[name].shape != shape
        ]
        if wrong:
            raise checkpoint.CheckpointError(f"checkpoint shapes do not match its config: {wrong[:8]}")
        model.bands.load_state_dict({name.removeprefix("bands."): t for name, t in tensors.items()})
        return model.eval()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, codec: nn.Module | None = None, *, load_codec: bool = True
    ) -> MultiBandDiffusion:
        """Load a released AudioCraft checkpoint (`.pt`/`.th`), one of ours (`.safetensors`), or a model name.

        Args:
            name_or_path: a file, or a name from the pretrained manifest (downloaded and cached once).
            codec: the codec to use; by default the one named in the checkpoint's config is loaded.
            load_codec: set False to load only the diffusion models (enough for `generate`).
        """
        path = Path(name_or_path)
        if not path.exists():
            from . import hub

            path = hub.resolve_model(name_or_path)
        config, tensors = checkpoint.load(path)
        model = cls.from_state(config, tensors, codec)
        if model.codec is None and load_codec:
            from .codec import load_codec as build_codec

            model.codec = build_codec(model.config.codec.name, model.config.codec.n_q)
        return model

    def band_state(self) -> dict[str, torch.Tensor]:
        """Weights and buffers of all bands, named as in our checkpoint format."""
        return {f"bands.{name}": t for name, t in self.bands.state_dict().items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the diffusion models (never the codec) as one safetensors file."""
        checkpoint.save(path, self.config.to_dict(), self.band_state())

    # --- inference --------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.bands.parameters()).device

    def _require_codec(self) -> nn.Module:
        if self.codec is None:
            raise RuntimeError("this model was loaded without a codec; pass `codec=` to from_pretrained")
        return self.codec

    @torch.no_grad()
    def generate(
        self,
        latents: torch.Tensor,
        *,
        length: int | None = None,
        steps: list[int] | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Sample every band from the codec latent and return their sum.

        Random draws happen in AudioCraft's order: band 0's initial noise, band 0's step noises, then
        band 1, and so on, each the shape of the output. With `generator=None` they come from torch's global
        generator, so `torch.manual_seed(s)` replays AudioCraft's own seeded output.

        Args:
            latents: codec latent `[B, D, T]`.
            length: output samples; default `T * hop` (hop = sample_rate / latent frame rate, e.g. 320).
            steps: descending step list ending in 0; default AudioCraft's 20-step list.
            generator: source of all random draws.
            noise: instead of drawing, use these standard Gaussian draws
                `[n_bands, len(steps) - 1, B, C, length]`: index 0 is each band's initial noise, index i
                the noise added after iteration i - 1.
            on_step: called with `(band, iteration, state)` after every sampler iteration.

        Returns:
            audio `[B, C, length]`.
        """
        if latents.dim() != 3:
            raise ValueError(f"latents must be [B, D, T], got {tuple(latents.shape)}")
        length = latents.shape[-1] * self.hop_length if length is None else int(length)
        shape = (latents.shape[0], self.config.bands[0].unet.channels, length)
        latents = latents.to(device=self.device, dtype=next(self.bands.parameters()).dtype)
        out = torch.zeros(shape, device=self.device, dtype=latents.dtype)
        for b, band in enumerate(self.bands):
            band_steps = (
                check_steps(steps, band.schedule.num_steps) if steps else default_steps(band.schedule.num_steps)
            )
            draw = self._noise_source(shape, band_steps, b, generator, noise, out)
            x = ddpm_sample(
                lambda x, t, band=band: band.unet(x, t, latents),
                draw(),
                band.schedule,
                band_steps,
                draw,
                None if on_step is None else lambda i, x, b=b: on_step(b, i, x),
            )
            out += band.unproject(x)
        return out

    def _noise_source(
        self,
        shape: tuple[int, int, int],
        steps: list[int],
        band: int,
        generator: torch.Generator | None,
        noise: torch.Tensor | None,
        like: torch.Tensor,
    ) -> Callable[[], torch.Tensor]:
        if noise is None:
            # Draw in float32 on the generator's device (the output's device for the global generator).
            device = like.device if generator is None else generator.device
            return lambda: torch.randn(shape, generator=generator, device=device).to(like)
        expected = (len(self.bands), len(steps) - 1, *shape)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must be {list(expected)}, got {list(noise.shape)}")
        draws = iter(noise[band].to(like))
        return lambda: next(draws)

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        codec = self.codec
        if codec is not None:
            return int(codec.hop_length)
        hops = {24000: 320, 32000: 640}
        if self.sample_rate not in hops:
            raise RuntimeError("no codec attached: pass `length=` to generate")
        return hops[self.sample_rate]

    def re_eq(self, wav: torch.Tensor, ref: torch.Tensor, n_bands: int = 32, strictness: float = 1.0) -> torch.Tensor:
        """Match the band energies of `wav` `[B, C, L]` to `ref` `[B, C, L]` (see `mbd.eq.re_eq`)."""
        return re_eq(wav, ref, self.sample_rate, n_bands, strictness)

    @torch.no_grad()
    def tokens_to_wav(
        self,
        tokens: torch.Tensor,
        n_bands: int = 32,
        *,
        steps: list[int] | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode codec tokens `[B, K, T]` to audio `[B, C, T * hop]`, re-EQ'd against the codec's decode."""
        codec = self._require_codec()
        tokens = tokens.to(self.device)
        reference = codec.decode(tokens)
        latents = codec.latents(tokens)
        wav = self.generate(latents, length=reference.shape[-1], steps=steps, generator=generator, noise=noise)
        return self.re_eq(wav, reference.to(wav), n_bands)

    @torch.no_grad()
    def regenerate(
        self,
        wav: torch.Tensor,
        sample_rate: int,
        *,
        steps: list[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Encode audio `[B, C, L]` with the codec and decode it again with MBD, at the input's rate."""
        codec = self._require_codec()
        wav = wav.to(self.device)
        if sample_rate != self.sample_rate:
            wav = julius.resample_frac(wav, sample_rate, self.sample_rate)
        latents = codec.latents(codec.encode(wav))
        out = self.generate(latents, length=wav.shape[-1], steps=steps, generator=generator)
        if sample_rate != self.sample_rate:
            out = julius.resample_frac(out, self.sample_rate, sample_rate)
        return out
