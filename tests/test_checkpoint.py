"""Checkpoint formats: AudioCraft pickles read safely, our safetensors round trip, clear errors."""

from __future__ import annotations

import functools
import json
import os
import sys
import zipfile

import pytest
import torch

from mbd import MultiBandDiffusion, checkpoint
from mbd.errors import CheckpointError
from mbd.meta import on_meta
from mbd.processor import BandProcessor, ProcessorConfig
from mbd.unet import DiffusionUNet, UNetConfig
from tests.conftest import GOLDEN


class _RunsCommand:
    """Unpickling this object would run a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "mbd_comp_4.pt"
    torch.save({"sample_rate": 24000, "n_bands": 1, 0: _RunsCommand(str(marker))}, path)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path)
    # one line naming what the pickle asked for, without torch's advice to load it unsafely
    assert str(err.value) == f"{path}: refused to load: the pickle asks for posix.system, not only tensors and configs"
    assert not marker.exists()
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        MultiBandDiffusion.from_pretrained(path, load_codec=False)
    assert not marker.exists()
    # Control: the same file really does run the command when loaded unsafely.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_not_a_checkpoint(tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match="junk.safetensors"):
        checkpoint.load(junk)
    with pytest.raises(checkpoint.CheckpointError, match="no such"):
        checkpoint.load(tmp_path / "missing.pt")


def test_truncated_checkpoint(tmp_path) -> None:
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((GOLDEN / "mbd_comp_2_reduced.pt").read_bytes()[:5000])
    with pytest.raises(checkpoint.CheckpointError, match="cut.pt"):
        checkpoint.load(truncated)


def test_audiocraft_read_without_omegaconf() -> None:
    header, bands = checkpoint.read_audiocraft(GOLDEN / "mbd_comp_4_reduced.pt")
    assert header == {"sample_rate": 24000, "n_bands": 4}
    meta = json.loads((GOLDEN / "golden_nq4.json").read_text())
    for i, band in enumerate(bands):
        assert band["cfg"] == meta["cfg_band"][str(i)]
    # the file's pickle names exactly these omegaconf globals, and none was imported to read it
    with zipfile.ZipFile(GOLDEN / "mbd_comp_4_reduced.pt") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"omegaconf.dictconfig" in data
    assert "omegaconf" not in sys.modules


@pytest.fixture(scope="module")
def nq2() -> tuple[dict, dict]:
    """`checkpoint.load` of the golden n_q = 2 checkpoint, read once for the tests that build from it."""
    return checkpoint.load(GOLDEN / "mbd_comp_2_reduced.pt")


def test_convert_round_trip_is_exact(tmp_path, nq2: tuple[dict, dict]) -> None:
    src = GOLDEN / "mbd_comp_2_reduced.pt"
    dst = tmp_path / "model.safetensors"
    checkpoint.convert(src, dst)
    config_a, tensors_a = nq2  # checkpoint.load(src)
    config_b, tensors_b = checkpoint.load(dst)
    assert config_a == config_b
    assert tensors_a.keys() == tensors_b.keys()
    for name in tensors_a:
        assert torch.equal(tensors_a[name], tensors_b[name]), name
    # converting our own file again gives the same tensors
    again = tmp_path / "again.safetensors"
    checkpoint.convert(dst, again)
    assert checkpoint.load(again)[1].keys() == tensors_b.keys()
    assert not list(tmp_path.glob("*.tmp"))


def test_key_and_shape_errors(nq2: tuple[dict, dict]) -> None:
    config, tensors = nq2
    missing = dict(tensors)
    missing.pop("bands.1.unet.conv_codec.bias")
    with pytest.raises(checkpoint.CheckpointError, match="missing.*conv_codec.bias"):
        MultiBandDiffusion.from_state(config, missing)
    extra = {**tensors, "bands.0.unet.surprise": torch.zeros(1)}
    with pytest.raises(checkpoint.CheckpointError, match="unexpected.*surprise"):
        MultiBandDiffusion.from_state(config, extra)
    wrong = {**tensors, "bands.0.unet.embedding.weight": torch.zeros(3, 3)}
    with pytest.raises(checkpoint.CheckpointError, match="embedding.weight"):
        MultiBandDiffusion.from_state(config, wrong)
    bad_config = json.loads(json.dumps(config))
    bad_config["bands"][0]["unet"]["mystery"] = 1
    with pytest.raises(ValueError, match="mystery"):
        MultiBandDiffusion.from_state(bad_config, tensors)


def test_model_is_built_from_stored_config(nq2: tuple[dict, dict]) -> None:
    config, tensors = nq2
    model = MultiBandDiffusion.from_state(config, tensors)
    assert model.bands[0].unet.config.hidden == 4
    assert [band.processor is not None for band in model.bands] == [False, False, True, True]
    assert model.bands[3].processor.config.power_std == 0.75


@pytest.mark.parametrize("res_blocks", [2, 1])
def test_released_size_on_meta_device(res_blocks: int) -> None:
    released = json.loads((GOLDEN / "released_config_shapes.json").read_text())
    entry = released[f"diffusion_unet_hidden48_growth4_depth4_kernel8_stride4_res_blocks{res_blocks}_codec128"]
    config = UNetConfig(hidden=48, growth=4, depth=4, res_blocks=res_blocks, kernel=8, stride=4, codec_dim=128)
    unet = on_meta(lambda: DiffusionUNet(config))  # as checkpoint.verify builds it
    state = unet.state_dict()
    assert list(state) == list(entry["state_dict"])  # same keys, same order
    assert {k: list(v.shape) for k, v in state.items()} == entry["state_dict"]
    assert sum(p.numel() for p in unet.parameters()) == entry["num_params"]
    processor = BandProcessor(ProcessorConfig(), sample_rate=24000)
    shapes = {k: list(v.shape) for k, v in processor.state_dict().items()}
    assert shapes == released["multi_band_processor_state_sr24000"]
    assert shapes["split_bands.lowpass.filters"] == [7, 1, 629]
    assert list(BandProcessor(ProcessorConfig(), 32000).split_bands.lowpass.filters.shape) == [7, 1, 751]


def test_save_is_atomic_on_failure(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"previous good file")

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"x": 1}, {"t": torch.zeros(2)})
    assert path.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_our_file_is_not_taken_for_a_pickle_when_its_first_byte_is_0x80(tmp_path) -> None:
    """A safetensors file starts with its header size; when that starts with byte 0x80 (a pickle's first
    opcode), the file must still be read as ours (the bundled mel24k.safetensors once hit this)."""
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    for pad in range(256):
        metadata = {"format": "mbd", "format_version": "1", "config": "{}", "pad": "x" * pad}
        save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    config, tensors = checkpoint.read_ours(path)
    assert config == {} and torch.equal(tensors["w"], torch.zeros(2))
    with pytest.raises(CheckpointError, match="bad config: config: missing keys"):  # read as ours, then checked
        checkpoint.load(path)


# --- malformed or hostile checkpoints: one CheckpointError naming the file, before any model is built -------


@functools.cache
def _tiny_models() -> dict[str, tuple[str, dict]]:
    """kind -> (config JSON, tensors) of a tiny token model and a tiny spectral model, built once."""
    import dataclasses

    from mbd.frame_net import FrameNetConfig
    from mbd.spectral_mbd import SpectralMBD, SpectralMBDConfig
    from tests.conftest import tiny

    token = tiny()
    spectral = SpectralMBD(dataclasses.replace(SpectralMBDConfig(net=FrameNetConfig(dim=8, blocks=1))))
    return {"token": (json.dumps(token.config.to_dict()), token.band_state()),
            "spectral": (json.dumps(spectral.config.to_dict()), spectral.state_dict())}


def _tiny_file(kind: str) -> tuple[dict, dict]:
    """A fresh (config, tensors) of the tiny `kind` model ("token" or "spectral"), free to change."""
    text, tensors = _tiny_models()[kind]
    return json.loads(text), {name: t.clone() for name, t in tensors.items()}


def _set(data: dict, path: tuple, value: object) -> dict:
    table = data
    for step in path[:-1]:
        table = table[step]
    table[path[-1]] = value
    return data


def _nan_weight(tensors: dict) -> dict:
    name = next(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 1)
    return {**tensors, name: torch.full_like(tensors[name], float("nan"))}


BAD_CHECKPOINTS = {
    # name: (file kind, change to (config, tensors), expected message)
    "nan_weights": ("token", lambda c, t: (c, _nan_weight(t)), "holds NaN or infinite values"),
    "n_bands_0": ("token", lambda c, t: (_set(c, ("bands",), []), t), "at least one band"),
    "bands_5": ("token", lambda c, t: (_set(c, ("bands",), 5), t), "expected a list of band tables"),
    "null_config": ("token", lambda c, t: (None, t), "the config must be a JSON table, got NoneType"),
    "deep_json": ("token", lambda c, t: ({"x": [[]] * 1}, t), None),  # replaced below: nested 200000 deep
    "negative_width": ("token", lambda c, t: (_set(c, ("bands", 0, "unet", "hidden"), -4), t), "must be in [1"),
    "stride_0": ("token", lambda c, t: (_set(c, ("bands", 0, "unet", "stride"), 0), t), "must be in [1"),
    "huge_unet": ("token", lambda c, t: (_set(c, ("bands", 0, "unet", "hidden"), 10**6), t),
                  "tensor shapes do not match the config"),
    "num_steps_1e9": ("token", lambda c, t: (_set(c, ("bands", 0, "unet", "num_steps"), 10**9), t),
                      "must be in [1, 100000]"),
    "mel_n_bands_0": ("spectral", lambda c, t: (_set(c, ("spectral", "n_bands"), 0), t), "bad config"),
    "mel_n_bands_negative": ("spectral", lambda c, t: (_set(c, ("spectral", "n_bands"), -2), t), "bad config"),
    "mel_hop_0": ("spectral", lambda c, t: (_set(c, ("mel", "hop_length"), 0), t), "bad config"),
    "mel_negative_width": ("spectral", lambda c, t: (_set(c, ("net", "dim"), -256), t), "bad config"),
    "mel_huge_net": ("spectral", lambda c, t: (_set(c, ("net", "dim"), 10**6), t),
                     "tensor shapes do not match the config"),
    "mel_steps_1e9": ("spectral", lambda c, t: (_set(c, ("steps",), 10**9), t), "config.steps: must be in"),
    "mel_nan_weights": ("spectral", lambda c, t: (c, _nan_weight(t)), "holds NaN or infinite values"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_refused_at_load(case: str, tmp_path) -> None:
    from safetensors.torch import save_file

    kind, change, message = BAD_CHECKPOINTS[case]
    config, tensors = change(*_tiny_file(kind))
    text = json.dumps(config)
    if case == "deep_json":
        text, message = "[" * 200_000 + "]" * 200_000, "nested"
    path = tmp_path / f"{case}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"format": "mbd", "format_version": "1", "config": text})
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError):  # and convert writes nothing
        checkpoint.convert(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_removes_what_does_not_load_back(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A converted file that fails to load back (here: a save that corrupts a weight) is removed, not kept."""
    src = tmp_path / "src.safetensors"
    checkpoint.save(src, *_tiny_file("token"))
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, config, tensors: save(path, config, _nan_weight(tensors)))
    with pytest.raises(CheckpointError, match="removed: the converted checkpoint does not load back"):
        checkpoint.convert(src, tmp_path / "dst.safetensors")
    assert not (tmp_path / "dst.safetensors").exists()


def test_malformed_audiocraft_pickle_is_a_checkpoint_error(tmp_path) -> None:
    path = tmp_path / "mbd.pt"
    torch.save({"sample_rate": 24000, "n_bands": 1, 0: {"model_state": {}}}, path)  # no 'cfg'
    with pytest.raises(CheckpointError, match="malformed AudioCraft checkpoint"):
        checkpoint.load(path)
