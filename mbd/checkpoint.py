"""Checkpoint files: our safetensors format, and AudioCraft's released pickles (as
audiocraft/models/loaders.py's `load_diffusion_models` reads them).

This module deals only in `(config, tensors)`: a JSON-able config dict and a flat dict of named tensors. It
builds no model. Our format is one `.safetensors` file holding every band's U-Net weights and processor
buffers, with the config as JSON in its metadata. AudioCraft's `mbd_*.pt` / `.th` files are pickles that
embed OmegaConf objects; they are read with torch's restricted `weights_only` unpickler, allowing only the
globals those files use and mapping OmegaConf classes to inert stand-ins, so neither omegaconf nor any
code named by the file ever runs.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import typing
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .errors import CheckpointError

FORMAT_NAME = "mbd"
FORMAT_VERSION = 1

Config = dict[str, Any]
Tensors = dict[str, torch.Tensor]


# --- AudioCraft pickles ---------------------------------------------------------------------------------


class _OmegaConfStub:
    """Inert stand-in for an OmegaConf node: unpickling only stores its state."""

    def __setstate__(self, state: Any) -> None:
        for part in state if isinstance(state, tuple) else (state,):
            if isinstance(part, dict):
                self.__dict__.update(part)


_OMEGACONF_CLASSES = [
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
]
_SAFE_GLOBALS: list[Any] = [
    *[(type(name.rsplit(".", 1)[1], (_OmegaConfStub,), {}), name) for name in _OMEGACONF_CLASSES],
    typing.Any,
    collections.defaultdict,
    dict,
]


def _plain(node: Any) -> Any:
    """Turn unpickled OmegaConf stand-ins into plain dicts, lists and values."""
    if isinstance(node, _OmegaConfStub):
        if "_content" in node.__dict__:
            return _plain(node.__dict__["_content"])
        return _plain(node.__dict__.get("_val"))
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(value) for value in node]
    return node


def read_audiocraft(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read an AudioCraft MBD checkpoint without executing pickle code.

    Returns:
        `(header, bands)`: `header` holds `sample_rate` and `n_bands`; each band is a dict with `cfg` (plain
        dict), `model_state` and `processor_state` (tensor dicts).
    """
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the pickle asks for something other than tensors and configs "
            f"({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from None
    if not isinstance(pkg, dict) or "n_bands" not in pkg or "sample_rate" not in pkg:
        raise CheckpointError(f"{path}: not an AudioCraft MBD checkpoint (no 'sample_rate'/'n_bands' entries)")
    bands = []
    for i in range(int(pkg["n_bands"])):
        if i not in pkg:
            raise CheckpointError(f"{path}: band {i} is missing")
        entry = pkg[i]
        bands.append(
            {
                "cfg": _plain(entry["cfg"]),
                "model_state": dict(entry["model_state"]),
                "processor_state": dict(entry.get("processor_state") or {}),
            }
        )
    return {"sample_rate": int(pkg["sample_rate"]), "n_bands": int(pkg["n_bands"])}, bands


# AudioCraft's constructor defaults, which apply to any key a cfg leaves out.
_AC_UNET_DEFAULTS = {
    "hidden": 24,
    "depth": 3,
    "growth": 2.0,
    "max_channels": 10_000,
    "emb_all_layers": False,
    "codec_dim": None,
    "kernel": 4,
    "stride": 2,
    "norm_groups": 4,
    "res_blocks": 1,
    "dropout": 0.0,
    "bilstm": False,
    "transformer": False,
    "cross_attention": False,
}
_AC_SCHEDULE_DEFAULTS = {
    "beta_t0": 1e-4,
    "beta_t1": 0.02,
    "num_steps": 1000,
    "beta_exp": 1.0,
    "clip": 5.0,
    "rescale": 1.0,
    "noise_scale": 1.0,
    "repartition": "power",
    "n_bands": None,
}
_AC_PROCESSOR_DEFAULTS = {"use": False, "n_bands": 8, "num_samples": 10_000, "power_std": 1.0}
_AC_CODECS = {24000: "encodec_24khz", 32000: "encodec_32khz"}


def _band_config(cfg: dict[str, Any], where: str) -> Config:
    """Map one AudioCraft band cfg onto our band config schema."""
    unet = {**_AC_UNET_DEFAULTS, **cfg.get("diffusion_unet", {})}
    for feature in ("bilstm", "transformer", "cross_attention"):
        if unet.pop(feature):
            raise CheckpointError(f"{where}: diffusion_unet.{feature}=true is not used by MBD and not supported")
    unknown = set(unet) - set(_AC_UNET_DEFAULTS)
    if unknown:
        raise CheckpointError(f"{where}: unknown diffusion_unet keys {sorted(unknown)}")
    schedule = {**_AC_SCHEDULE_DEFAULTS, **cfg.get("schedule", {})}
    if schedule.pop("repartition") != "power" or schedule.pop("n_bands") is not None:
        raise CheckpointError(f"{where}: only the single-band power schedule is supported")
    processor = {**_AC_PROCESSOR_DEFAULTS, **cfg.get("processor", {})}
    if isinstance(processor["power_std"], (list, tuple)):
        raise CheckpointError(f"{where}: a per-band list for processor.power_std is not supported")
    return {
        "unet": {"channels": int(cfg.get("channels", 1)), "num_steps": int(schedule["num_steps"]), **unet},
        "schedule": {
            key: schedule[key]
            for key in ("beta_t0", "beta_t1", "beta_exp", "num_steps", "clip", "rescale", "noise_scale")
        },
        "processor": {key: processor[key] for key in ("n_bands", "num_samples", "power_std")}
        if processor["use"]
        else None,
    }


def audiocraft_to_ours(path: str | os.PathLike) -> tuple[Config, Tensors]:
    """Read an AudioCraft MBD checkpoint as `(config, tensors)` in our layout."""
    header, bands = read_audiocraft(path)
    sample_rate = header["sample_rate"]
    if sample_rate not in _AC_CODECS:
        raise CheckpointError(f"{path}: no known codec runs at {sample_rate} Hz")
    n_q = bands[0]["cfg"].get("n_q", 4)
    config: Config = {
        "sample_rate": sample_rate,
        "codec": {"name": _AC_CODECS[sample_rate], "n_q": int(n_q)},
        "bands": [_band_config(band["cfg"], f"{path}: band {i}") for i, band in enumerate(bands)],
    }
    tensors: Tensors = {}
    for i, band in enumerate(bands):
        tensors.update({f"bands.{i}.unet.{k}": v for k, v in band["model_state"].items()})
        tensors.update({f"bands.{i}.processor.{k}": v for k, v in band["processor_state"].items()})
    return config, tensors


# --- our format -----------------------------------------------------------------------------------------


def save(path: str | os.PathLike, config: Config, tensors: Tensors) -> None:
    """Write `(config, tensors)` as one safetensors file, atomically (temp file, then rename)."""
    path = Path(path)
    metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "config": json.dumps(config)}
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    with atomic_path(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_ours(path: str | os.PathLike) -> tuple[Config, Tensors]:
    """Read one of our safetensors checkpoints."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not an mbd checkpoint (no mbd config metadata)")
    version = int(metadata.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version} is newer than this mbd reads ({FORMAT_VERSION})")
    return json.loads(metadata["config"]), tensors


def load(path: str | os.PathLike) -> tuple[Config, Tensors]:
    """Read a checkpoint of either kind, told apart by content: `(config, tensors)` in our layout."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if zipfile.is_zipfile(path):
        return audiocraft_to_ours(path)
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: a little-endian u64 header size, then the JSON header. Its first byte can be 0x80, so
    # test for it before the pickle opcode.
    is_safetensors = head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size
    if not is_safetensors and head[:1] == b"\x80":  # a legacy (non-zip) torch pickle
        return audiocraft_to_ours(path)
    return read_ours(path)


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Convert any readable checkpoint (an AudioCraft `.pt`/`.th` or ours) to our safetensors format."""
    config, tensors = load(src)
    save(dst, config, tensors)
