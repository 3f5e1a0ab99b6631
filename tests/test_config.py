"""mbd.config: stored configs parse strictly; a missing key anywhere is a clear error, not a default."""

from __future__ import annotations

import json
import re

import pytest

from mbd import MultiBandDiffusion, checkpoint
from mbd.config import BandConfig, CodecConfig, MBDConfig
from mbd.diffusion import PowerSchedule
from mbd.mel import MelConfig
from mbd.processor import ProcessorConfig
from mbd.unet import UNetConfig
from tests.conftest import GOLDEN

UNET = UNetConfig(hidden=4, growth=2, depth=3, res_blocks=1, codec_dim=128, num_steps=1000)
CONFIGS = {
    "token": MBDConfig(
        24000,
        CodecConfig("encodec_24khz", 2),
        (
            BandConfig(UNET, PowerSchedule(beta_t1=0.02), None),
            BandConfig(UNET, PowerSchedule(clip=3.0), ProcessorConfig(n_bands=8, num_samples=100, power_std=0.4)),
        ),
    ),
    "mel": MBDConfig(
        24000, None, (BandConfig(UNetConfig(codec_dim=100), PowerSchedule(), None, "flow"),), features=MelConfig()
    ),
}
OPTIONAL = {"features", "objective"}  # the only keys a stored config may leave out


def _stored(config: MBDConfig) -> dict:
    """The config as a file stores it (through JSON, as in a safetensors header)."""
    return json.loads(json.dumps(config.to_dict()))


def _tables(data: dict) -> list[tuple[str, tuple]]:
    """`(where, path)` of every table of a stored config: its name in error messages and its path in `data`."""
    tables: list[tuple[str, tuple]] = [("config", ())]
    tables += [(f"config.{name}", (name,)) for name in ("codec", "features") if data.get(name) is not None]
    for i, band in enumerate(data["bands"]):
        tables.append((f"bands[{i}]", ("bands", i)))
        tables += [(f"bands[{i}].{name}", ("bands", i, name)) for name in ("unet", "schedule", "processor")
                   if band[name] is not None]
    return tables


def _table(data: dict, path: tuple) -> dict:
    for step in path:
        data = data[step]
    return data


CASES = [
    (kind, where, path, key)
    for kind, config in CONFIGS.items()
    for where, path in _tables(_stored(config))
    for key in _table(_stored(config), path)
    if key not in OPTIONAL
]


def test_round_trip() -> None:
    for config in CONFIGS.values():
        assert MBDConfig.from_dict(_stored(config)) == config


def test_the_cases_cover_every_nested_table() -> None:
    names = {where for _, where, _, _ in CASES}
    assert {"config", "config.codec", "config.features", "bands[0]", "bands[0].unet", "bands[0].schedule",
            "bands[1].processor"} <= names
    assert ("token", "bands[1].schedule", ("bands", 1, "schedule"), "clip") in CASES
    assert len(CASES) > 50


@pytest.mark.parametrize("kind, where, path, key", CASES, ids=[f"{c[0]}-{c[1]}.{c[3]}" for c in CASES])
def test_every_missing_key_is_an_error(kind: str, where: str, path: tuple, key: str) -> None:
    """Each required key, dropped on its own, is named in the error: nested tables do not fall back to defaults."""
    data = _stored(CONFIGS[kind])
    del _table(data, path)[key]
    with pytest.raises(ValueError, match=re.escape(f"{where}: missing keys ['{key}']")):
        MBDConfig.from_dict(data)


def test_optional_keys_take_their_documented_defaults() -> None:
    data = _stored(CONFIGS["token"])
    assert "features" not in data and all("objective" not in band for band in data["bands"])
    config = MBDConfig.from_dict(data)
    assert config.features is None and [band.objective for band in config.bands] == ["ddpm", "ddpm"]


def test_unknown_keys_and_wrong_types_are_errors() -> None:
    data = _stored(CONFIGS["token"])
    data["bands"][0]["unet"]["width"] = 3
    with pytest.raises(ValueError, match=re.escape("bands[0].unet: unknown keys ['width']")):
        MBDConfig.from_dict(data)
    data = _stored(CONFIGS["token"])
    data["bands"][1]["schedule"] = [1e-5, 0.029]
    with pytest.raises(ValueError, match=re.escape("bands[1].schedule: expected a table, got list")):
        MBDConfig.from_dict(data)
    with pytest.raises(ValueError, match="at least one band"):
        MBDConfig.from_dict({**_stored(CONFIGS["token"]), "bands": []})


def test_converted_audiocraft_config_is_complete_and_checked() -> None:
    """A converted AudioCraft file carries every key; one dropped from it no longer loads with a default
    (the file's schedule clip is 5, which the default would also give: the error, not the value, is the point)."""
    config, tensors = checkpoint.load(GOLDEN / "mbd_comp_2_reduced.pt")
    assert MBDConfig.from_dict(config).bands[3].processor.power_std == 0.75
    del config["bands"][2]["schedule"]["clip"]
    with pytest.raises(ValueError, match=re.escape("bands[2].schedule: missing keys ['clip']")):
        MultiBandDiffusion.from_state(config, tensors)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("bands", 0, "unet", "hidden"), -4, "bands[0].unet.hidden: must be in [1, "),
        (("bands", 0, "unet", "stride"), 0, "bands[0].unet.stride: must be in [1, "),
        (("bands", 0, "unet", "num_steps"), 10**9, "bands[0].unet.num_steps: must be in [1, 100000]"),
        (("bands", 0, "unet", "depth"), 1000, "bands[0].unet.depth: must be in [1, 16]"),
        (("bands", 0, "unet", "hidden"), "48", "bands[0].unet.hidden: must be an integer, got '48'"),
        (("bands", 0, "unet", "emb_all_layers"), 1, "emb_all_layers: must be true or false"),
        (("bands", 0, "schedule", "num_steps"), 10**9, "bands[0].schedule.num_steps: must be in [1, 100000]"),
        (("bands", 1, "processor", "n_bands"), 10**6, "bands[1].processor.n_bands: must be in [1, 256]"),
        (("sample_rate",), 0, "config.sample_rate: must be in [1, 384000]"),
        (("bands",), 5, "config.bands: expected a list of band tables, got int"),
    ],
)
def test_values_are_checked_as_data(path: tuple, value: object, message: str) -> None:
    """Types, ranges and sizes are refused with the field's name, before any model is built."""
    data = _stored(CONFIGS["token"])
    _table(data, path[:-1])[path[-1]] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        MBDConfig.from_dict(data)


def test_mel_hop_0_is_refused() -> None:
    data = _stored(CONFIGS["mel"])
    data["features"]["hop_length"] = 0
    with pytest.raises(ValueError, match=re.escape("config.features.hop_length: must be in [1, ")):
        MBDConfig.from_dict(data)
