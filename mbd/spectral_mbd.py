"""Spectral Multi-Band Diffusion: log-mel to waveform with one flow (or diffusion) model per STFT band.

The MBD recipe (San Roman et al., 2023) at frame rate: the complex STFT is split into equal bin ranges
(`mbd.spectral`); every band is generated from Gaussian noise in its own EQ-normalised space (the mel's
envelope and the band's fitted sigma) by a shared frame-level network (`mbd.frame_net`) told which band it
is, with the band's own time schedule; the bands are concatenated and inverted with the iSTFT. This is the
layout of RFWave (Liu et al., ICLR 2025). The default objective is flow matching (`mbd.flow`, Lipman et al.,
2023) sampled by an ODE solver; "ddpm" trains and samples the same network as an eps-predictor under MBD's
power schedule (`mbd.diffusion`).

After sampling, the waveform can be re-EQ'd against the mel (`MelSpectrogram.equalize`) and polished by
a few Griffin-Lim iterations that keep the sampled phase as their start (`mel_eq`, `griffin_lim`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint, flow
from .config import check_values
from .diffusion import PowerSchedule, spaced_steps
from .diffusion import sample as diffusion_sample
from .errors import OutputError
from .frame_net import FrameNet, FrameNetConfig
from .griffin_lim import polish
from .mel import MelConfig, MelSpectrogram
from .noise import Generators, clip_by_clip, per_clip, randn
from .resample import at_rate
from .spectral import SpectralBands, SpectralConfig

Objective = Literal["flow", "ddpm"]
FAMILY = "spectral"


@dataclass(frozen=True)
class SpectralMBDConfig:
    """Args:
    sample_rate: audio rate in Hz (the mel's).
    mel: the conditioning log-mel.
    spectral: the STFT and its bands (n_fft and hop must be the mel's).
    net: the shared band network.
    objective: "flow" (velocity regression, ODE sampling) or "ddpm" (eps regression, `diffusion`).
    schedules: one flow time schedule per band ("flow").
    diffusion: the noise schedule ("ddpm").
    steps: default number of network evaluations per band.
    solver: default ODE solver ("flow").
    griffin_lim: default Griffin-Lim iterations after sampling in `vocode` (0: none).
    model_magnitude: default weight of the model's magnitudes in that projection (see `vocode`).
    """

    sample_rate: int = 24_000
    mel: MelConfig = field(default_factory=MelConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    net: FrameNetConfig = field(default_factory=FrameNetConfig)
    objective: Objective = "flow"
    schedules: tuple[flow.FlowSchedule, ...] = (flow.FlowSchedule(),) * 4
    diffusion: PowerSchedule = field(default_factory=PowerSchedule)
    steps: int = 6
    solver: flow.Solver = "euler"
    griffin_lim: int = 0
    model_magnitude: float = 1.0

    def __post_init__(self) -> None:
        s, m = self.spectral, self.mel
        if (s.n_fft, s.hop_length, self.sample_rate) != (m.n_fft, m.hop_length, m.sample_rate):
            raise ValueError("spectral.n_fft, spectral.hop_length and sample_rate must be the mel's")
        if len(self.schedules) != s.n_bands:
            raise ValueError(f"need one schedule per band ({s.n_bands}), got {len(self.schedules)}")
        if self.objective not in ("flow", "ddpm") or self.solver not in flow.SOLVERS or self.steps < 1:
            raise ValueError(f"bad objective, solver or steps: {self.objective!r}, {self.solver!r}, {self.steps}")
        if self.griffin_lim < 0 or not 0 <= self.model_magnitude <= 1:
            raise ValueError(f"need griffin_lim >= 0 and 0 <= model_magnitude <= 1, got {self.griffin_lim}, "
                             f"{self.model_magnitude}")
        if (self.diffusion.rescale, self.diffusion.noise_scale) != (1.0, 1.0):  # the spectral trainer uses neither
            raise ValueError("diffusion.rescale and diffusion.noise_scale must be 1 for spectral models")

    def to_dict(self) -> dict[str, Any]:
        return {"family": FAMILY, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectralMBDConfig:
        """Parse a stored config; a malformed one (keys, types, ranges: `check_values`) is a ValueError."""
        keys = ("mel", "spectral", "net", "diffusion")
        data = {k: v for k, v in data.items() if k != "family"}
        if any(not isinstance(data.get(k), dict) for k in keys) or not isinstance(data.get("schedules"), list | tuple):
            raise ValueError(f"config: {', '.join(keys)} must be tables and schedules a list")
        try:
            config = cls(
                **{k: v for k, v in data.items() if k not in (*keys, "schedules")},
                mel=MelConfig(**data["mel"]),
                spectral=SpectralConfig(**data["spectral"]),
                net=FrameNetConfig(**data["net"]),
                schedules=tuple(flow.FlowSchedule(**s) for s in data["schedules"]),
                diffusion=PowerSchedule(**data["diffusion"]))
        except TypeError as err:  # unknown or missing keys, or values of the wrong type
            raise ValueError(f"config: {err}") from None
        check_values(config, "config")
        return config


def net_args(config: SpectralMBDConfig) -> tuple[FrameNetConfig, int, int, int]:
    """`FrameNet`'s arguments for a model: its shape, and the sizes the bands and the mel give it (a band's
    real and imaginary parts, the mel bins, the number of bands)."""
    return config.net, 2 * config.spectral.band_bins, config.mel.n_mels, config.spectral.n_bands


class SpectralMBD(nn.Module):
    """Log-mel `[B, n_mels, T]` to audio `[B, 1, T * hop]` with per-band flow models over STFT frames.

    Args:
        config: the model's configuration.

    Attributes:
        sample_rate, hop_length: the mel's.
        min_samples: the shortest audio `regenerate` takes, at the model's rate (`MelConfig.min_samples`).
    """

    codec = None

    def __init__(self, config: SpectralMBDConfig) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.hop_length, self.min_samples = config.mel.hop_length, config.mel.min_samples
        self.features = MelSpectrogram(config.mel)
        self.bands = SpectralBands(config.spectral, self.features.mel.mel_scale.fb)
        self.net = FrameNet(*net_args(config))

    # --- construction and files -------------------------------------------------------------------------

    @staticmethod
    def fixed_state(config: SpectralMBDConfig) -> dict[str, torch.Tensor]:
        """The buffers outside the network (the mel filters and bands), named as in `state_dict`."""
        features = MelSpectrogram(config.mel)
        bands = SpectralBands(config.spectral, features.mel.mel_scale.fb)
        return nn.ModuleDict({"features": features, "bands": bands}).state_dict()

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SpectralMBD:
        """Build from a stored `(config, tensors)` pair; every key and shape must match."""
        model = cls(SpectralMBDConfig.from_dict(config))
        expected = model.state_dict()
        if set(expected) != set(tensors):
            missing, unexpected = sorted(set(expected) - set(tensors))[:8], sorted(set(tensors) - set(expected))[:8]
            raise checkpoint.CheckpointError(f"checkpoint does not match its config: missing {missing}, "
                                             f"unexpected {unexpected}")
        wrong = [k for k, t in expected.items() if t.shape != tensors[k].shape]
        if wrong:
            raise checkpoint.CheckpointError(f"checkpoint shapes do not match its config: {wrong[:8]}")
        model.load_state_dict({k: t.float() for k, t in tensors.items()})  # files may hold fp16 weights
        return model.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> SpectralMBD:
        """Load one of our spectral model files, or a bundled model by name (e.g. "mel24k")."""
        from pathlib import Path

        path = Path(name_or_path)
        if not path.exists():
            from . import hub

            path = hub.resolve_model(name_or_path)
        config, tensors = checkpoint.load(path)
        if config.get("family") != FAMILY:
            raise checkpoint.CheckpointError(f"{path}: not a spectral model; load it with MultiBandDiffusion")
        return cls.from_state(config, tensors)

    def save(self, path: str | os.PathLike, half: bool = False) -> None:
        """Write one safetensors file with the config in its metadata; `half` stores the network in fp16."""
        tensors = {k: (t.half() if half and k.startswith("net.") else t) for k, t in self.state_dict().items()}
        checkpoint.save(path, self.config.to_dict(), tensors)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # --- the per-band models ----------------------------------------------------------------------------

    def condition(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """STFT-frame conditioning and envelope from a log-mel of one frame per STFT frame.

        Args:
            log_mel: `[B, n_mels, T']`.

        Returns:
            `(cond [B * n_bands, n_mels, T'], envelope [B, n_fft // 2, T'])`.
        """
        cond = self.features.condition(log_mel).repeat_interleave(self.config.spectral.n_bands, dim=0)
        return cond, self.bands.envelope(log_mel)

    def band_ids(self, batch: int) -> torch.Tensor:
        """Band index of each row of a band-flattened batch `[B * n_bands]`."""
        return torch.arange(self.config.spectral.n_bands, device=self.device).repeat(batch)

    def band_times(self, steps: int) -> torch.Tensor:
        """Each band's sampling times `[steps + 1, n_bands]`."""
        return torch.stack([s.times(steps) for s in self.config.schedules], dim=1)

    @torch.no_grad()
    def sample_spectrogram(
        self,
        log_mel: torch.Tensor,
        steps: int | None = None,
        generator: Generators = None,
        solver: flow.Solver | None = None,
    ) -> torch.Tensor:
        """The model's complex STFT for a log-mel: every band sampled in its normalised space, then denormalised.

        Args:
            log_mel: `[B, n_mels, T]`.
            steps: network evaluations per band (Heun: about half as many ODE steps); default `config.steps`.
            generator: source of the initial noise (drawn on its device; torch's global CPU generator for None),
                or one generator per clip (`mbd.noise.randn`: each draws its clip's rows, and on a CPU the
                network then sees each clip alone, so a clip's output does not depend on its batch).
            solver: "euler" or "heun" ("flow" only).

        Returns:
            `[B, n_fft // 2 + 1, T + 1]`: the centred STFT of `T * hop` samples (the mel's last frame is repeated
            for the extra frame; the Nyquist bin is zero).
        """
        c = self.config
        n = c.spectral.n_bands
        log_mel = torch.cat([log_mel, log_mel[..., -1:]], dim=-1).to(self.device)  # [B, n_mels, T + 1]
        cond, env = self.condition(log_mel)  # [B * n, n_mels, T + 1], [B, n_fft // 2, T + 1]
        rows, frames = cond.shape[0], cond.shape[-1]
        steps = c.steps if steps is None else int(steps)
        x0 = randn((rows, self.net.channels, frames), generator, "cpu").to(self.device)
        ids = self.band_ids(rows // n)
        net = self.net
        if per_clip(generator) and self.device.type == "cpu":  # bit-identical whatever the batch (`clip_by_clip`)
            net = clip_by_clip(self.net, rows // len(generator))
        if c.objective == "flow":
            solver = solver or c.solver
            times = self.band_times(max(1, (steps + 1) // 2) if solver == "heun" else steps)  # [S + 1, n]
            times = times.repeat(1, rows // n).to(self.device)  # [S + 1, B * n]
            with progress_bar(len(times) - 1, rows // n * frames * self.hop_length / self.sample_rate) as bar:
                x = flow.sample(lambda x, t: net(x, t, ids, cond), x0, times, solver, lambda i, x: bar.update())
        else:
            num = c.diffusion.num_steps

            def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
                return net(x, torch.full((rows,), (num - 1 - t) / num, device=x.device), ids, cond)  # 1: clean

            x = diffusion_sample("ddim", denoise, lambda: x0, c.diffusion, spaced_steps(steps, num))
        spec = self.bands.denormalise(x.view(rows // n, n, self.net.channels, frames), env)  # [B, F - 1, T + 1]
        return torch.cat([spec, spec.new_zeros(spec.shape[0], 1, spec.shape[-1])], dim=1)

    @torch.no_grad()
    def generate(
        self,
        log_mel: torch.Tensor,
        length: int,
        steps: int | None = None,
        generator: Generators = None,
        solver: flow.Solver | None = None,
    ) -> torch.Tensor:
        """The model's own output (no re-EQ, no projection): log-mel `[B, n_mels, T]` to audio `[B, 1, length]`
        with `length <= T * hop`."""
        spec = self.sample_spectrogram(log_mel, steps, generator, solver)
        return self.bands.istft(spec[:, :-1], length)

    # --- the user-facing calls (the interface `mbd.vocode` and the CLI use, as for `MultiBandDiffusion`) ---

    def step_list(self, evaluations: int | None = None, sampler: str = "ddpm") -> int:
        """Network evaluations per band for a requested count (the ODE solver is the model's own; `sampler`
        is accepted for the interface of `MultiBandDiffusion` and ignored)."""
        return self.config.steps if evaluations is None else int(evaluations)

    @torch.no_grad()
    def vocode(
        self,
        mel: torch.Tensor,
        *,
        steps: int | None = None,
        generator: Generators = None,
        sampler: str = "ddpm",
        options: object | None = None,
        mel_eq: float = 1.0,
        griffin_lim: int | None = None,
        model_magnitude: float | None = None,
    ) -> torch.Tensor:
        """Log-mel to audio: the model's output, re-EQ'd against the mel, then optionally polished.

        Args:
            mel: natural-log magnitude mel `[n_mels, T]` or `[B, n_mels, T]` (see `mbd.mel`; checked by
                `MelSpectrogram.check`).
            steps: network evaluations per band; default `config.steps`.
            generator: source of the initial noise: one generator, or one per clip (see `sample_spectrogram`).
            sampler, options: accepted for the interface of `MultiBandDiffusion.vocode`; unused (the ODE
                solver is the model's own).
            mel_eq: strictness of the re-EQ against the mel (`MelSpectrogram.equalize`), 0 (off) to 1.
            griffin_lim: Griffin-Lim iterations (`polish`) that start from the model's sampled phases and keep
                the target magnitudes A (0: none, the re-EQ'd output is returned); default `config.griffin_lim`.
            model_magnitude: with `griffin_lim`, the weight w of the model's re-EQ'd magnitudes A_model against
                the mel's non-negative least-squares magnitudes A_mel (`MelSpectrogram.magnitude`):
                A = A_model^w A_mel^(1 - w); 1 keeps the model's, 0 takes the mel's; default
                `config.model_magnitude`.

        Returns:
            audio `[B, 1, T * hop]` (`[1, T * hop]` for a `[n_mels, T]` input).
        """
        batched = mel.dim() == 3
        mel = self.features.check(mel).to(self.device)  # [B, n_mels, T]
        length = mel.shape[-1] * self.hop_length
        griffin_lim = self.config.griffin_lim if griffin_lim is None else griffin_lim
        model_magnitude = self.config.model_magnitude if model_magnitude is None else model_magnitude
        spec = self.sample_spectrogram(mel, steps, generator)  # [B, F, T + 1]
        wav = self.bands.istft(spec[:, :-1], length)
        if griffin_lim > 0:
            target = 1.0  # A = A_model^w A_mel^(1 - w), each factor computed only when its weight is not 0
            if model_magnitude != 0:
                target = self.features.equalized_stft(wav, mel, mel_eq).abs()  # [B, F, T + 1]
            if model_magnitude != 1:
                target = target if model_magnitude == 0 else target.clamp(min=1e-10) ** model_magnitude
                least_squares = self.features.magnitude(torch.cat([mel, mel[..., -1:]], dim=-1))
                target = target * least_squares ** (1 - model_magnitude)
            wav = polish(target * spec / spec.abs().clamp(min=1e-16), self.config.mel, griffin_lim, length)
        else:
            wav = self.features.equalize(wav, mel, mel_eq)
        if not torch.isfinite(wav).all():
            raise OutputError("vocode produced NaN or infinite samples (are the model's weights finite?)")
        return wav if batched else wav[0]

    @torch.no_grad()
    def regenerate(
        self,
        wav: torch.Tensor,
        sample_rate: int,
        *,
        steps: int | None = None,
        generator: Generators = None,
        sampler: str = "ddpm",
        options: object | None = None,
    ) -> torch.Tensor:
        """Audio `[B, C, L]` to log-mel and back, each channel on its own, at the input's rate."""

        def process(wav: torch.Tensor) -> torch.Tensor:
            B, C, L = wav.shape
            mel = self.features.frame_aligned(wav.reshape(B * C, 1, L))  # [B * C, n_mels, T]
            return self.vocode(mel, steps=steps, generator=generator)[..., :L].reshape(B, C, L)

        return at_rate(wav.to(self.device), sample_rate, self.sample_rate, self.min_samples, process)


PROGRESS_SECONDS = 30.0
"""Sampling at least this many seconds of audio in one call shows a progress bar on a terminal."""


def progress_bar(steps: int, seconds: float) -> tqdm:
    """A per-step progress bar on stderr for long jobs, shown only on a terminal (tqdm's `disable=None`)."""
    return tqdm(total=steps, desc=f"vocoding {seconds:.0f} s", unit="step", leave=False, file=sys.stderr,
                disable=None if seconds >= PROGRESS_SECONDS else True)
