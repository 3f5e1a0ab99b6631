"""Recipes of spectral (STFT-band) models: a `SpectralTrainConfig` dataclass tree read from TOML.

A recipe with `family = "spectral"` trains a `mbd.spectral_mbd.SpectralMBD`; the other recipes train the
per-band U-Nets of the released models (`mbd.train.config`). Unknown keys and wrong types are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..diffusion import PowerSchedule
from ..flow import FlowSchedule, Solver
from ..frame_net import FrameNetConfig
from ..mel import MelConfig
from ..spectral import SpectralConfig
from ..spectral_mbd import Objective, SpectralMBDConfig
from .config import LogConfig, OptimConfig, RecipeError, build


@dataclass(frozen=True)
class SpectralDataConfig:
    """Args:
    paths: training audio folders or manifests (.csv with a `path` column, or .txt), relative to the recipe.
    valid_paths: held-out audio (validation); the first `valid_clips` files are used.
    segment_frames: STFT frames per training crop (hop 256: 94 per second).
    valid_clips: held-out clips scored during training.
    valid_seconds: seconds of each held-out clip that are scored.
    """

    paths: tuple[str, ...] = ()
    valid_paths: tuple[str, ...] = ()
    segment_frames: int = 128
    valid_clips: int = 8
    valid_seconds: float = 4.0


SPECTRAL_OPTIM = OptimConfig(
    lr=1e-3, warmup=200, max_norm=1.0, ema_decay=0.999, batch_size=16, steps=10_000, precision="fp32"
)
"""The optimiser defaults of spectral recipes (AdamW; trained in fp32)."""


SPECTRAL_LOG = LogConfig(valid_every=500, checkpoint_every=250, tensorboard=False, progress=False)
"""The logging defaults of spectral recipes (CSV logs and `curves.png`, progress printed as lines)."""


@dataclass(frozen=True)
class SpectralTrainConfig:
    """A spectral model's recipe: the model (`mel`, `spectral`, `net`, `objective`, `schedules`, `diffusion`,
    `steps`, `solver`, as in `SpectralMBDConfig`) and how to train it (`data`, `mel_loss`, `optim`, `log`).

    `mel_loss` weighs an auxiliary loss on the one-step estimate of the clean signal ("flow" only):
    x_1 ~ x_t + (1 - t) v, inverted to audio, whose log-mel is compared (L1) with the target's (as WaveFM,
    Luo et al., NAACL 2025, adds mel and STFT losses on its clean-signal estimate); 0 turns it off. `optim`
    and `log` default to `SPECTRAL_OPTIM` and `SPECTRAL_LOG`, and a recipe's tables override those values.
    """

    family: str = "spectral"
    name: str = "spectral"
    seed: int = 0
    out_dir: str = "runs/spectral"
    sample_rate: int = 24_000
    objective: Objective = "flow"
    steps: int = 6
    solver: Solver = "euler"
    data: SpectralDataConfig = field(default_factory=SpectralDataConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    net: FrameNetConfig = field(default_factory=FrameNetConfig)
    schedules: tuple[FlowSchedule, ...] = (FlowSchedule(),) * 4
    diffusion: PowerSchedule = field(default_factory=PowerSchedule)
    mel_loss: float = 0.0
    optim: OptimConfig = field(default_factory=lambda: SPECTRAL_OPTIM)
    log: LogConfig = field(default_factory=lambda: SPECTRAL_LOG)

    def model_config(self) -> SpectralMBDConfig:
        try:
            return SpectralMBDConfig(
                self.sample_rate, self.mel, self.spectral, self.net, self.objective, self.schedules,
                self.diffusion, self.steps, self.solver,
            )
        except ValueError as err:
            raise RecipeError(f"{self.name}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_spectral_recipe(path: str | Path) -> bool:
    """Whether a recipe file declares `family = "spectral"` (False when it cannot be read: the caller's
    loader then reports the problem)."""
    try:
        return tomllib.loads(Path(path).read_text()).get("family") == "spectral"
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def load_spectral_recipe(path: str | Path) -> SpectralTrainConfig:
    """Read and check a spectral recipe; data paths are made absolute against the recipe's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from None
    if not isinstance(data, dict) or data.get("family") != "spectral":
        raise RecipeError(f"{path.name}: family must be 'spectral', got {data.get('family')!r}")
    config = build(SpectralTrainConfig, data, path.name)
    d = config.data
    try:
        config.optim.check()
        config.log.check()
    except RecipeError as err:
        raise RecipeError(f"{path.name}: {err}") from None
    if (precision := config.optim.precision) != "fp32":
        raise RecipeError(f"{path.name}: optim.precision: spectral models train in fp32, got {precision!r}")
    if config.log.valid_stride != SPECTRAL_LOG.valid_stride:
        raise RecipeError(f"{path.name}: log.valid_stride applies to U-Net recipes; spectral models validate "
                          "with their own steps")
    for value, where in [(d.segment_frames, "data.segment_frames"), (d.valid_seconds, "data.valid_seconds")]:
        if not value > 0:
            raise RecipeError(f"{path.name}: {where} must be > 0, got {value}")
    if not d.paths:
        raise RecipeError(f"{path.name}: data.paths: list at least one audio folder or manifest")
    if config.mel_loss < 0:
        raise RecipeError(f"{path.name}: mel_loss must be >= 0, got {config.mel_loss}")
    config.model_config()  # cross-field checks of the model
    base = path.resolve().parent
    data_paths = {
        "paths": tuple(str((base / p).resolve()) for p in d.paths),
        "valid_paths": tuple(str((base / p).resolve()) for p in d.valid_paths),
    }
    return dataclasses.replace(config, data=dataclasses.replace(d, **data_paths))
