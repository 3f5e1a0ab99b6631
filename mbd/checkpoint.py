"""Checkpoint files: our safetensors format, and AudioCraft's released pickles (as
audiocraft/models/loaders.py's `load_diffusion_models` reads them).

This module deals only in `(config, tensors)`: a JSON-able config dict and a flat dict of named tensors. It
builds no model, except on the meta device (no memory) to check a file's tensor shapes against its config
(`verify`), after the config's values are checked as data. Our format is one `.safetensors` file holding
every band's U-Net weights and processor buffers, with the config as JSON in its metadata. AudioCraft's
`mbd_*.pt` / `.th` files are pickles that embed OmegaConf objects; they are read with torch's restricted
`weights_only` unpickler, allowing only the globals those files use and mapping OmegaConf classes to inert
stand-ins, so neither omegaconf nor any code named by the file ever runs.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import typing
import zipfile
from functools import partial
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


def pickle_error(err: Exception) -> tuple[bool, str]:
    """`(refused, reason)` for an error of torch's `weights_only` loader: whether the pickle asked for a
    global that is not allowed, and the reason in a few words on one line (torch's own message spans lines
    and suggests loading the file unsafely, which is never repeated to the user)."""
    text = str(err)
    if match := re.search(r"GLOBAL ([\w.]+)", text):
        return True, f"the pickle asks for {match[1]}"
    detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else text
    return False, next((line.strip() for line in detail.splitlines() if line.strip()), type(err).__name__)[:200]


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
        refused, reason = pickle_error(err)
        if not refused:
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
        raise CheckpointError(f"{path}: refused to load: {reason}, not only tensors and configs") from None
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
    try:
        return _audiocraft_to_ours(path)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: a malformed AudioCraft checkpoint ({type(err).__name__}: {err})") from None


def _audiocraft_to_ours(path: str | os.PathLike) -> tuple[Config, Tensors]:
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
    return _parse_config(path, metadata["config"]), tensors


MAX_CONFIG_CHARS = 1 << 20
MAX_CONFIG_DEPTH = 16


def _parse_config(path: str | os.PathLike, text: str) -> Config:
    """The config JSON as a dict, refusing huge or deeply nested documents."""
    if len(text) > MAX_CONFIG_CHARS:
        raise CheckpointError(f"{path}: the config is {len(text)} characters long, over {MAX_CONFIG_CHARS}")
    try:
        config = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{path}: the config JSON is nested too deeply") from None
    except ValueError as err:
        raise CheckpointError(f"{path}: the config is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the config must be a JSON table, got {type(config).__name__}")
    level, depth = [config], 0
    while level:  # breadth first, without recursion
        depth += 1
        if depth > MAX_CONFIG_DEPTH:
            raise CheckpointError(f"{path}: the config JSON is nested more than {MAX_CONFIG_DEPTH} levels deep")
        level = [v for node in level for v in (node.values() if isinstance(node, dict) else node)
                 if isinstance(v, (dict, list))]
    return config


def verify(path: str | os.PathLike, config: Config, tensors: Tensors) -> None:
    """Check a checkpoint read from `path` before any real model is built: its config parses and its values
    are in range (`mbd.config.check_values`), a model built from it on the meta device (no memory) has
    exactly the file's tensor names and shapes, and every tensor is finite.

    Raises:
        CheckpointError: naming the file and the first problem.
    """
    from .config import MBDConfig
    from .frame_net import FrameNet
    from .meta import on_meta
    from .processor import BandProcessor
    from .spectral_mbd import FAMILY, SpectralMBD, SpectralMBDConfig, net_args
    from .unet import DiffusionUNet

    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the config must be a table, got {type(config).__name__}")
    try:
        # The networks are built on the meta device; the small fixed parts (filter banks, EQ statistics, their
        # sizes bounded by `check_values`) on the CPU, as some of their constructors compute.
        if config.get("family") == FAMILY:
            spectral = SpectralMBDConfig.from_dict(config)
            net = on_meta(partial(FrameNet, *net_args(spectral)))
            expected = {f"net.{k}": t.shape for k, t in net.state_dict().items()}
            expected.update({k: t.shape for k, t in SpectralMBD.fixed_state(spectral).items()})
        else:
            mbd = MBDConfig.from_dict(config)
            expected = {}
            for i, band in enumerate(mbd.bands):
                unet = on_meta(partial(DiffusionUNet, band.unet))
                expected.update({f"bands.{i}.unet.{k}": t.shape for k, t in unet.state_dict().items()})
                if band.processor is not None:
                    processor = BandProcessor(band.processor, mbd.sample_rate).state_dict()
                    expected.update({f"bands.{i}.processor.{k}": t.shape for k, t in processor.items()})
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{path}: bad config: {err}") from None
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: the tensors do not match the config: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}")
    wrong = [f"{k}: {list(tensors[k].shape)} != {list(s)}" for k, s in expected.items() if tensors[k].shape != s]
    if wrong:
        raise CheckpointError(f"{path}: the tensor shapes do not match the config: {wrong[:4]}")
    for name, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values")


def load(path: str | os.PathLike) -> tuple[Config, Tensors]:
    """Read a checkpoint of either kind, told apart by content: `(config, tensors)` in our layout, checked
    by `verify`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if zipfile.is_zipfile(path):
        config, tensors = audiocraft_to_ours(path)
    else:
        with open(path, "rb") as f:
            head = f.read(9)
        # safetensors: a little-endian u64 header size, then the JSON header. Its first byte can be 0x80, so
        # test for it before the pickle opcode.
        is_safetensors = head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size
        if not is_safetensors and head[:1] == b"\x80":  # a legacy (non-zip) torch pickle
            config, tensors = audiocraft_to_ours(path)
        else:
            config, tensors = read_ours(path)
    verify(path, config, tensors)
    return config, tensors


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Convert any readable checkpoint (an AudioCraft `.pt`/`.th` or ours) to our safetensors format, then
    load the result back (`load`); a file that does not load back is removed and refused."""
    config, tensors = load(src)
    save(dst, config, tensors)
    try:
        load(dst)
    except CheckpointError as err:
        Path(dst).unlink(missing_ok=True)
        raise CheckpointError(f"{dst}: removed: the converted checkpoint does not load back ({err})") from None
