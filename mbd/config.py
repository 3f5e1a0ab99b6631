"""Model configuration: what a checkpoint stores as JSON, parsed strictly (unknown or missing keys are errors)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .processor import ProcessorConfig
from .schedule import PowerSchedule
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
