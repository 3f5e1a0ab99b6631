"""Training checkpoints: resumable training state, per-band inference files and assembling bands.

All files are our safetensors format (`mbd.checkpoint`), written atomically (`mbd.atomic`: temporary file,
then rename), so a crash mid-write leaves the previous file intact.

- `state.safetensors`: the full training state of one band: raw weights, EMA weights, processor buffers,
  Adam moments, step, torch's global RNG state and the recipe. Every other random draw is made from a
  generator seeded from `(seed, step)`, so restoring the step restores the data order and noise exactly.
- `band{K}.safetensors`: a 1-band `MultiBandDiffusion` holding the **EMA weights** (the inference weights)
  and the fitted processor, loadable with `MultiBandDiffusion.from_pretrained`. A sidecar `band{K}.json`
  records which band of how many it is, used by `assemble` to check the order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..atomic import atomic_path
from ..config import BandConfig, CodecConfig, MBDConfig
from ..errors import InputError
from .config import TrainConfig

STATE_KIND = "mbd-train-state"


def band_model_config(config: TrainConfig, band: int) -> MBDConfig:
    """The 1-band inference config of band `band`."""
    mel = config.conditioner == "mel"
    return MBDConfig(
        sample_rate=config.data.sample_rate,
        codec=None if mel else CodecConfig(config.codec.name, config.codec.n_q),
        bands=(BandConfig(config.unet, config.schedule, config.processor_config(band), config.objective),),
        features=config.mel if mel else None,
    )


def export_band(
    path: Path, config: TrainConfig, band: int, ema: nn.Module, processor: nn.Module | None, step: int
) -> None:
    """Write band `band`'s EMA weights and processor as a 1-band model file plus its `.json` sidecar."""
    tensors = {f"bands.0.unet.{k}": v for k, v in ema.state_dict().items()}
    if processor is not None:
        tensors.update({f"bands.0.processor.{k}": v for k, v in processor.state_dict().items()})
    checkpoint.save(path, band_model_config(config, band).to_dict(), tensors)
    info = {"band": band, "n_bands": config.n_bands, "step": step, "recipe": config.name, "weights": "ema"}
    _write_text(path.with_suffix(".json"), json.dumps(info, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text)


def save_state(
    path: Path,
    config: TrainConfig,
    band: int,
    step: int,
    model: nn.Module,
    ema: nn.Module,
    processor: nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Write the resumable training state of one band."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    if processor is not None:
        tensors.update({f"processor.{k}": v for k, v in processor.state_dict().items()})
    optim = optimizer.state_dict()
    for i, slots in optim["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{i}.{name}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [{k: v for k, v in group.items()} for group in optim["param_groups"]]
    meta = {"kind": STATE_KIND, "version": 1, "band": band, "step": step, "recipe": config.to_dict(), "groups": groups}
    checkpoint.save(path, meta, tensors)


def load_state(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a training state: `(meta, tensors)` with `meta` holding `band`, `step`, `recipe`, `groups`."""
    meta, tensors = checkpoint.read_ours(path)
    if meta.get("kind") != STATE_KIND:
        raise checkpoint.CheckpointError(f"{path}: not an mbd training state")
    return meta, tensors


def restore(
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    model: nn.Module,
    ema: nn.Module,
    processor: nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Load a training state into freshly built objects; returns the step to continue from."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    ema.load_state_dict(part("ema."))
    if processor is not None:
        processor.load_state_dict(part("processor."))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optim.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"])


def assemble(paths: list[str | os.PathLike], out: str | os.PathLike) -> MBDConfig:
    """Join band model files (low band first) into one multi-band model file.

    Each input is one of our checkpoints (usually a 1-band `band{K}.safetensors`); all must share the sample
    rate and codec. When every input has a `.json` sidecar from training, the band indices must be
    0..n_bands-1 in order, each exactly once.

    Returns:
        the assembled model's config.
    """
    if not paths:
        raise InputError("assemble needs at least one band file")
    configs, tensors = [], {}
    for path in map(Path, paths):
        config, band_tensors = checkpoint.read_ours(path)
        if "bands" not in config:
            raise checkpoint.CheckpointError(f"{path}: not an mbd model file (a training state? use band*.safetensors)")
        model = MBDConfig.from_dict(config)
        offset = sum(len(c.bands) for c in configs)
        for name, value in band_tensors.items():
            index, rest = name.removeprefix("bands.").split(".", 1)
            tensors[f"bands.{offset + int(index)}.{rest}"] = value
        first = configs[0] if configs else model
        if (model.sample_rate, model.codec, model.features) != (first.sample_rate, first.codec, first.features):
            raise InputError(
                f"{path}: sample rate/codec/features {model.sample_rate}/{model.codec}/{model.features} differ "
                f"from the first file's {first.sample_rate}/{first.codec}/{first.features}"
            )
        configs.append(model)
    _check_order([Path(p) for p in paths], sum(len(c.bands) for c in configs))
    merged = MBDConfig(
        configs[0].sample_rate, configs[0].codec, tuple(b for c in configs for b in c.bands), configs[0].features
    )
    checkpoint.save(out, merged.to_dict(), tensors)
    return merged


def _check_order(paths: list[Path], total: int) -> None:
    sidecars = [p.with_suffix(".json") for p in paths]
    if not all(s.is_file() for s in sidecars):
        return
    infos = [json.loads(s.read_text()) for s in sidecars]
    indices = [info["band"] for info in infos]
    expected = infos[0]["n_bands"]
    if indices != list(range(expected)) or total != expected:
        raise InputError(
            f"band files must be given low to high, one per band 0..{expected - 1}; got bands {indices} "
            f"({', '.join(p.name for p in paths)})"
        )
