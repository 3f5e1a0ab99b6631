"""Model configuration: what a checkpoint stores as JSON, parsed strictly (unknown or missing keys are errors)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, Literal

from .diffusion import PowerSchedule
from .mel import MelConfig
from .processor import ProcessorConfig
from .unet import UNetConfig


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
    """Args:
    unet: the band's network.
    schedule: its noise schedule ("ddpm").
    processor: its EQ processor, or None.
    objective: "ddpm" (eps-prediction, AudioCraft's) or "flow" (velocity of the flow-matching path,
        `mbd.flow`; the U-Net's step k stands for flow time 1 - k / (N - 1)). Stored configs without the key
        (all AudioCraft files) read as "ddpm".
    """

    unet: UNetConfig
    schedule: PowerSchedule
    processor: ProcessorConfig | None
    objective: Literal["ddpm", "flow"] = "ddpm"

    def __post_init__(self) -> None:
        if self.objective not in ("ddpm", "flow"):
            raise ValueError(f"objective must be 'ddpm' or 'flow', got {self.objective!r}")


@dataclass(frozen=True)
class MBDConfig:
    """Args:
    sample_rate: audio sample rate in Hz.
    codec: the conditioning codec (token models); None for a feature-conditioned model.
    bands: one entry per band, low to high.
    features: the continuous features that condition the model (mel vocoders); None for token models.
        Exactly one of `codec` and `features` is set. Stored configs without a `features` key (all token
        models, including converted AudioCraft files) read as None.
    """

    sample_rate: int
    codec: CodecConfig | None
    bands: tuple[BandConfig, ...]
    features: MelConfig | None = None

    def __post_init__(self) -> None:
        if (self.codec is None) == (self.features is None):
            raise ValueError("config: set exactly one of `codec` (token model) and `features` (mel model)")
        if self.features is not None:
            if self.features.sample_rate != self.sample_rate:
                raise ValueError(f"config: features.sample_rate {self.features.sample_rate} != {self.sample_rate}")
            for i, band in enumerate(self.bands):
                if band.unet.codec_dim != self.features.n_mels:
                    raise ValueError(f"config: bands[{i}].unet.codec_dim must equal features.n_mels")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.features is None:
            del data["features"]  # token models keep the original layout
        for band in data["bands"]:
            if band["objective"] == "ddpm":
                del band["objective"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MBDConfig:
        """Parse a stored config; unknown or missing keys are errors.

        Every key of every table is required, nested tables included (a stored config lists them all, see
        `to_dict`), so that a truncated config fails here instead of building a model from defaults. Two
        keys may be absent and read as their defaults: `features` (None: a token model) and a band's
        `objective` ("ddpm").
        """
        top = _fields(cls, data, "config", optional={"features"})
        if not isinstance(top["bands"], (list, tuple)):
            raise ValueError(f"config.bands: expected a list of band tables, got {type(top['bands']).__name__}")
        if len(top["bands"]) > MAX_BANDS:
            raise ValueError(f"config.bands: {len(top['bands'])} bands, at most {MAX_BANDS} are supported")
        bands = []
        for i, band in enumerate(top["bands"]):
            entry = _fields(BandConfig, band, f"bands[{i}]", optional={"objective"})
            processor = entry["processor"]
            bands.append(
                BandConfig(
                    unet=UNetConfig(**_fields(UNetConfig, entry["unet"], f"bands[{i}].unet")),
                    schedule=PowerSchedule(**_fields(PowerSchedule, entry["schedule"], f"bands[{i}].schedule")),
                    processor=None
                    if processor is None
                    else ProcessorConfig(**_fields(ProcessorConfig, processor, f"bands[{i}].processor")),
                    objective=entry.get("objective", "ddpm"),
                )
            )
        if not bands:
            raise ValueError("config: a model needs at least one band")
        codec, features = top["codec"], top.get("features")
        config = cls(
            sample_rate=top["sample_rate"],
            codec=None if codec is None else CodecConfig(**_fields(CodecConfig, codec, "config.codec")),
            bands=tuple(bands),
            features=None if features is None else MelConfig(**_fields(MelConfig, features, "config.features")),
        )
        check_values(config, "config")
        return config


MAX_BANDS = 64
MAX_INT = 1 << 24
"""The largest integer a config field may hold unless `INT_LIMITS` says otherwise (widths are further bounded
by the checkpoint's tensors, `mbd.checkpoint.load`)."""
INT_LIMITS = {"num_steps": 100_000, "steps": 100_000, "depth": 16, "res_blocks": 16, "blocks": 64,
              "griffin_lim": 10_000, "n_q": 64, "sample_rate": 384_000, "n_bands": 256, "n_fft": 1 << 16,
              "hop_length": 1 << 16, "n_mels": 1024}
NON_NEGATIVE = {"res_blocks", "griffin_lim"}
"""Integer fields that may be 0; every other integer field must be >= 1."""
MAX_FLOAT = 1e7


def check_values(config: object, where: str) -> None:
    """Check a config's values as data, recursively: each field's JSON type against its annotation, integers
    in [1, MAX_INT] (or `INT_LIMITS`, `NON_NEGATIVE`), floats finite and within +-MAX_FLOAT, so that a
    malformed or hostile config is refused before a tensor is allocated.

    Raises:
        ValueError: naming the field, e.g. "config.bands[0].unet.hidden: must be in [1, 16777216], got -4".
    """
    for f in fields(config):
        value, name, kind = getattr(config, f.name), f"{where}.{f.name}", str(f.type)
        if is_dataclass(value):
            check_values(value, name)
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if is_dataclass(item):
                    check_values(item, f"{name}[{i}]")
        elif value is None:
            if "None" not in kind:
                raise ValueError(f"{name}: must not be null")
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: must be an integer, got {value!r}")
            low, high = (0 if f.name in NON_NEGATIVE else 1), INT_LIMITS.get(f.name, MAX_INT)
            if not low <= value <= high:
                raise ValueError(f"{name}: must be in [{low}, {high}], got {value}")
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: must be a number, got {value!r}")
            if not math.isfinite(value) or abs(value) > MAX_FLOAT:
                raise ValueError(f"{name}: must be finite and within +-{MAX_FLOAT:g}, got {value}")
        elif kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{name}: must be true or false, got {value!r}")
        elif (kind == "str" or kind.startswith(("Literal", "Objective", "flow.Solver"))) and not isinstance(value, str):
            raise ValueError(f"{name}: must be a string, got {value!r}")


def _fields(cls: type, data: Any, where: str, optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The keys of table `data` for dataclass `cls`: every field is required except those in `optional`."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    missing = names - set(data) - set(optional)
    if missing:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")
    return dict(data)
