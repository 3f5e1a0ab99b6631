"""Training recipes: a `TrainConfig` dataclass tree read from TOML (AudioCraft's defaults:
config/solver/diffusion/default.yaml).

A recipe is plain data. Every table maps onto one dataclass; unknown keys, wrong types and impossible
values raise `RecipeError` naming the offending key, before any data is read or any model is built.
Relative paths in `[data]` and `[codec]` are resolved against the recipe file's folder, so a recipe runs
the same from any working directory; `out_dir` is resolved against the current directory.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diffusion import PowerSchedule
from ..errors import RecipeError
from ..mel import MelConfig
from ..processor import ProcessorConfig
from ..unet import UNetConfig

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class DataConfig:
    """Args:
    paths: folders (searched recursively for audio files) and/or manifests (`.csv` with a `path` column,
        or `.txt` with one path per line; entries relative to the manifest's folder).
    valid_paths: held-out folders/manifests for validation; empty: hold out `valid_clips` training files.
    sample_rate: training sample rate; files are resampled to it and downmixed to mono.
    segment_duration: length of each random training crop in seconds.
    valid_clips: number of held-out clips regenerated at each validation.
    valid_duration: length of each validation clip in seconds (taken from the start of the file).
    """

    paths: tuple[str, ...] = ()
    valid_paths: tuple[str, ...] = ()
    sample_rate: int = 24_000
    segment_duration: float = 1.0
    valid_clips: int = 4
    valid_duration: float = 1.0


@dataclass(frozen=True)
class CodecTrainConfig:
    """Args:
    name: conditioning codec (see `mbd.codec.load_codec`).
    n_q: codebooks used for the conditioning latent.
    weights: local codec weights; None uses the default download (`mbd.hub`).
    cache_dir: when set, each file's latent is computed once (whole file) and stored there; crops are
        then aligned to the codec hop. None: latents of every crop are computed on the fly (as AudioCraft).
    """

    name: str = "encodec_24khz"
    n_q: int = 4
    weights: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser of both trainers: Adam for the U-Net bands (as AudioCraft), AdamW for spectral models.

    Args:
    lr: learning rate, reached after `warmup` steps of linear warm-up.
    warmup: warm-up steps (0: none, as AudioCraft).
    beta1, beta2: Adam betas.
    weight_decay: weight decay (Adam: L2 added to the gradient; AdamW: decoupled).
    max_norm: gradient clipping norm; None: no clipping (AudioCraft's default).
    ema_decay: decay of the EMA weights (the inference weights), updated every step.
    batch_size: global batch size (split evenly across processes).
    steps: number of optimiser steps.
    precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16".
    """

    lr: float = 2e-4
    warmup: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    max_norm: float | None = None
    ema_decay: float = 0.99
    batch_size: int = 128
    steps: int = 500_000
    precision: typing.Literal["auto", "fp32", "bf16"] = "auto"

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step `step` (counted from 0)."""
        return self.lr * min(1.0, (step + 1) / max(1, self.warmup))

    def check(self) -> None:
        """Raise `RecipeError` naming the first impossible value."""
        _all_positive(self, "optim", ("lr", "batch_size", "steps", "max_norm"))
        if self.warmup < 0:
            raise RecipeError(f"optim.warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.ema_decay < 1:
            raise RecipeError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise RecipeError("optim.beta1 and optim.beta2 must be in [0, 1)")


@dataclass(frozen=True)
class LogConfig:
    """Logging, validation and checkpoints of both trainers.

    Args:
    log_every: steps between rows of `train.csv` (and TensorBoard).
    valid_every: steps between validations (`valid.csv`, `curves.png`); 0: only at the end.
    checkpoint_every: steps between checkpoints (the last step is always saved).
    max_seconds: stop, after a checkpoint and a validation, once this much wall time has passed in this run
        (`--resume` continues it); None: no limit.
    valid_stride: U-Net recipes: validation samples with every `valid_stride`-th diffusion step (50:
        AudioCraft's 20). Spectral models validate with their own `steps`.
    tensorboard: also write TensorBoard events when `tensorboard` is installed.
    progress: show a progress bar.
    """

    log_every: int = 50
    valid_every: int = 10_000
    checkpoint_every: int = 10_000
    max_seconds: float | None = None
    valid_stride: int = 50
    tensorboard: bool = True
    progress: bool = True

    def check(self) -> None:
        """Raise `RecipeError` naming the first impossible value."""
        _all_positive(self, "log", ("log_every", "checkpoint_every", "valid_stride", "max_seconds"))
        if self.valid_every < 0:
            raise RecipeError(f"log.valid_every must be >= 0, got {self.valid_every}")


@dataclass(frozen=True)
class BandTrainConfig:
    """Args:
    index: which of the `n_bands` mel bands this model generates (0 = lowest).
    processor: use the EQ processor for this band.
    power_std: the processor's `power_std` for this band.
    """

    index: int
    processor: bool = False
    power_std: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """A full training recipe: shared model/data/optimiser settings plus one entry per band.

    Args:
        name: recipe name, stored with the checkpoints.
        seed: seeds the model initialisation and every random draw of training.
        out_dir: where checkpoints and logs go (one sub-folder per band).
        n_bands: number of mel bands the waveform is split into (4 in MBD).
        conditioner: what conditions the U-Net: "codec" (the codec latent of `[codec]`, as MBD) or "mel"
            (the log-mel of `[mel]`, `mbd.mel`; `unet.codec_dim` must equal `mel.n_mels`).
        objective: "ddpm" (eps regression under `schedule`, as MBD) or "flow" (flow matching, `mbd.flow`,
            sampled by an ODE solver).
        data, codec, mel, unet, schedule, optim, log: see their classes.
        processor: shared EQ settings (`n_bands`, `num_samples`; `power_std` comes from each band).
        band: per-band settings, one per trained band.
    """

    name: str = "mbd"
    seed: int = 0
    out_dir: str = "runs/mbd"
    n_bands: int = 4
    conditioner: typing.Literal["codec", "mel"] = "codec"
    objective: typing.Literal["ddpm", "flow"] = "ddpm"
    data: DataConfig = field(default_factory=DataConfig)
    codec: CodecTrainConfig = field(default_factory=CodecTrainConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: PowerSchedule = field(default_factory=PowerSchedule)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    band: tuple[BandTrainConfig, ...] = ()

    def band_config(self, index: int) -> BandTrainConfig:
        for band in self.band:
            if band.index == index:
                return band
        raise RecipeError(f"the recipe has no [[band]] with index = {index} (it has {[b.index for b in self.band]})")

    def processor_config(self, index: int) -> ProcessorConfig | None:
        """The EQ processor of band `index`, or None when it is off."""
        band = self.band_config(index)
        if not band.processor:
            return None
        return dataclasses.replace(self.processor, power_std=band.power_std)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_value(value: Any, hint: Any, where: str, default: Any = None) -> Any:
    """Check `value` against a type hint and convert TOML lists/tables to tuples/dataclasses (a table
    overrides the fields of `default`, the parent's default for it, where that is a dataclass)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{where}: {value!r} has the wrong type")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise RecipeError(f"{where}: must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, default if isinstance(default, hint) else None)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise RecipeError(f"{where}: must be finite, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, bool):
        raise RecipeError(f"{where}: expected an integer, got a boolean")
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise RecipeError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def build(cls: type, data: Any, where: str, default: Any = None) -> Any:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types; the keys it leaves
    out take their values from `default` (an instance of `cls`), or else from the field defaults."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a table, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RecipeError(f"{where}: unknown keys {unknown} (known: {names})")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{where}: missing keys {missing}")
    defaults = {f.name: _field_default(f) for f in dataclasses.fields(cls) if f.init}
    if default is not None:
        defaults = {name: getattr(default, name) for name in defaults}
    values = {
        name: _check_value(value, hints[name], f"{where}.{name}", defaults[name]) for name, value in data.items()
    }
    try:
        return cls(**values) if default is None else dataclasses.replace(default, **values)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"{where}: {err}") from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _positive(value: float, where: str) -> None:
    if not value > 0:
        raise RecipeError(f"{where} must be > 0, got {value}")


def _all_positive(config: Any, table: str, names: tuple[str, ...]) -> None:
    """Raise `RecipeError` for the first of `config`'s fields `names` that is set (not None) and not > 0."""
    for name in names:
        if (value := getattr(config, name)) is not None:
            _positive(value, f"{table}.{name}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check cross-field constraints that single types cannot express."""
    d = config.data
    if not d.paths:
        raise RecipeError("data.paths: list at least one audio folder or manifest")
    for value, where in [
        (d.sample_rate, "data.sample_rate"),
        (d.segment_duration, "data.segment_duration"),
        (d.valid_duration, "data.valid_duration"),
        (config.codec.n_q, "codec.n_q"),
        (config.processor.num_samples, "processor.num_samples"),
    ]:
        _positive(value, where)
    config.optim.check()
    config.log.check()
    if d.valid_clips < 0:
        raise RecipeError(f"data.valid_clips must be >= 0, got {d.valid_clips}")
    if config.unet.num_steps != config.schedule.num_steps:
        raise RecipeError(
            f"unet.num_steps ({config.unet.num_steps}) must equal schedule.num_steps ({config.schedule.num_steps})"
        )
    if config.unet.channels != 1:
        raise RecipeError("unet.channels must be 1: MBD models mono audio")
    if config.conditioner == "mel":
        m = config.mel
        if m.sample_rate != d.sample_rate:
            raise RecipeError(f"mel.sample_rate ({m.sample_rate}) must equal data.sample_rate ({d.sample_rate})")
        if config.unet.codec_dim != m.n_mels:
            raise RecipeError(f"unet.codec_dim ({config.unet.codec_dim}) must equal mel.n_mels ({m.n_mels})")
        if m.hop_length != config.unet.stride**config.unet.depth:
            raise RecipeError(
                f"mel.hop_length ({m.hop_length}) must equal the U-Net's bottleneck hop, unet.stride ** unet.depth "
                f"({config.unet.stride ** config.unet.depth})"
            )
        for value, where in [(m.n_fft, "mel.n_fft"), (m.n_mels, "mel.n_mels"), (m.norm_std, "mel.norm_std")]:
            _positive(value, where)
    if config.n_bands < 1:
        raise RecipeError(f"n_bands must be >= 1, got {config.n_bands}")
    if not config.band:
        raise RecipeError("add at least one [[band]] table (index = 0 .. n_bands - 1)")
    indices = [b.index for b in config.band]
    if len(set(indices)) != len(indices) or not all(0 <= i < config.n_bands for i in indices):
        raise RecipeError(f"[[band]] indices must be distinct and in [0, {config.n_bands}), got {indices}")
    for b in config.band:
        if b.processor and b.power_std < 0:
            raise RecipeError(f"band {b.index}: power_std must be >= 0, got {b.power_std}")
    return config


def load_recipe(path: str | Path) -> TrainConfig:
    """Read and validate a TOML recipe; relative data/codec paths are made relative to the recipe's folder."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from None
    config = validate(build(TrainConfig, data, path.name))
    return resolve_paths(config, path.resolve().parent)


def resolve_paths(config: TrainConfig, base: Path) -> TrainConfig:
    """Make relative data, cache and codec-weight paths absolute against `base`."""

    def fix(p: str | None) -> str | None:
        return None if p is None else str((base / Path(p).expanduser()).resolve())

    data = dataclasses.replace(
        config.data,
        paths=tuple(fix(p) for p in config.data.paths),
        valid_paths=tuple(fix(p) for p in config.data.valid_paths),
    )
    codec = dataclasses.replace(config.codec, weights=fix(config.codec.weights), cache_dir=fix(config.codec.cache_dir))
    return dataclasses.replace(config, data=data, codec=codec)
