"""mbd.tokens: every token format round-trips, and every bad input gives a TokenError naming the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from mbd.ecdc import load_encodec_lm
from mbd.tokens import TokenError, read_tokens, validate_codes, write_tokens
from tests.conftest import random_encodec_24khz


@pytest.fixture(scope="module")
def encodec_model() -> torch.nn.Module:
    """EnCodec 24 kHz from the encodec package with random weights, named so that its compressor accepts it."""
    model = random_encodec_24khz(seed=0)
    model.name = "encodec_24khz"
    model.set_target_bandwidth(3.0)
    return model.eval()


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    """EnCodec's entropy-coding LM with random weights, loaded back through `load_encodec_lm`."""
    from encodec.model import LMModel

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("lm") / "lm.th"
    torch.save(LMModel(n_q=32, card=1024, num_layers=5, dim=200, past_context=262).state_dict(), path)
    return load_encodec_lm(path)


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    return 0.1 * torch.randn(1, 2401, generator=torch.Generator().manual_seed(2))  # [C, L], 0.1 s


def _codes(*shape: int, high: int = 1024, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def _encodec_stream(model: torch.nn.Module, wav: torch.Tensor, lm: torch.nn.Module | None) -> bytes:
    """An .ecdc stream written by the encodec package's own compressor."""
    from encodec.compress import compress_to_file

    if lm is not None:
        model.get_lm_model = lambda: lm  # instead of downloading the pretrained LM
    buffer = io.BytesIO()
    compress_to_file(model, wav, buffer, use_lm=lm is not None)
    return buffer.getvalue()


# --- round trips -----------------------------------------------------------------------------------------


def test_npy_round_trip(tmp_path: Path) -> None:
    codes = _codes(2, 4, 9)
    assert write_tokens(tmp_path / "t.npy", codes) == tmp_path / "t.npy"
    token_file = read_tokens(tmp_path / "t.npy")
    assert token_file.codes.dtype == torch.int64 and torch.equal(token_file.codes, codes)
    assert token_file.source == str(tmp_path / "t.npy") and token_file.sample_rate is None
    np.save(tmp_path / "kt.npy", codes[0].numpy().astype(np.int16))  # [K, T], narrow dtype
    assert torch.equal(read_tokens(tmp_path / "kt.npy").codes, codes[:1])
    np.save(tmp_path / "hf.npy", codes[None].numpy())  # Hugging Face audio_codes [1, B, K, T]
    assert torch.equal(read_tokens(tmp_path / "hf.npy").codes, codes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf.npy", "kt.npy", "t.npy"]


def test_bark_npz(tmp_path: Path) -> None:
    fine = _codes(8, 20).numpy()
    np.savez(tmp_path / "bark.npz", semantic_prompt=np.arange(50), coarse_prompt=fine[:2], fine_prompt=fine)
    token_file = read_tokens(tmp_path / "bark.npz")
    assert torch.equal(token_file.codes, torch.from_numpy(fine)[None])
    assert (token_file.sample_rate, token_file.bandwidth) == (24000, 6.0)
    assert "fine_prompt" in token_file.source and "Bark" in token_file.source


def test_npz_codes_key_and_single_array(tmp_path: Path) -> None:
    codes = _codes(1, 2, 6)
    np.savez(tmp_path / "a.npz", codes=codes.numpy(), sample_rate=24000, bandwidth=1.5, other=np.zeros(3))
    token_file = read_tokens(tmp_path / "a.npz")
    assert torch.equal(token_file.codes, codes) and (token_file.sample_rate, token_file.bandwidth) == (24000, 1.5)
    np.savez(tmp_path / "b.npz", whatever=codes.numpy())
    assert torch.equal(read_tokens(tmp_path / "b.npz").codes, codes)


def test_pt_tensor_and_dict(tmp_path: Path) -> None:
    codes = _codes(1, 4, 6)
    torch.save(codes, tmp_path / "a.pt")
    assert torch.equal(read_tokens(tmp_path / "a.pt").codes, codes)
    torch.save({"codes": codes.to(torch.int32), "sample_rate": 32000}, tmp_path / "b.pt")
    token_file = read_tokens(tmp_path / "b.pt")
    assert torch.equal(token_file.codes, codes) and token_file.sample_rate == 32000


@pytest.mark.parametrize("use_lm", [False, True])
def test_ecdc_reads_encodec_streams(
    encodec_model: torch.nn.Module, lm: torch.nn.Module, wav: torch.Tensor, tmp_path: Path, use_lm: bool
) -> None:
    stream = _encodec_stream(encodec_model, wav, lm if use_lm else None)
    (tmp_path / "x.ecdc").write_bytes(stream)
    token_file = read_tokens(tmp_path / "x.ecdc", lm=lm)
    with torch.no_grad():
        ((expected, _),) = encodec_model.encode(wav[None])
    assert expected.shape == (1, 4, 8)
    assert torch.equal(token_file.codes, expected)
    assert (token_file.sample_rate, token_file.bandwidth) == (24000, 3.0)
    # Our writer produces the very bytes of EnCodec's compressor for the same codes.
    write_tokens(tmp_path / "ours.ecdc", expected, audio_length=wav.shape[-1], lm=lm if use_lm else None)
    assert (tmp_path / "ours.ecdc").read_bytes() == stream


def test_ecdc_default_audio_length_round_trips(tmp_path: Path) -> None:
    for frames in (2, 21, 42, 51):  # lengths where T * 320 samples would make EnCodec count T + 1 frames
        codes = _codes(1, 2, frames, seed=frames)
        write_tokens(tmp_path / f"{frames}.ecdc", codes)
        assert torch.equal(read_tokens(tmp_path / f"{frames}.ecdc").codes, codes)


# --- validation ------------------------------------------------------------------------------------------


def test_validate_codes_against_a_model() -> None:
    codes = _codes(1, 4, 6)
    assert torch.equal(validate_codes(codes.numpy(), n_q=4, cardinality=1024, name="x"), codes)
    cases = [
        (codes, {"n_q": 2}, "4 codebooks but the model expects 2"),
        (codes.clone().index_fill_(2, torch.tensor([3]), 1024), {}, "< 1024"),
        (codes.float(), {}, "integers, got torch.float32"),
        (torch.full((1, 4, 6), float("nan")), {}, "NaN"),
        (codes.bool(), {}, "booleans"),
        (codes[0, 0], {}, r"\[K, T\] or \[B, K, T\]"),
        (codes[..., :0], {}, "empty"),
        (codes[..., :1], {}, "1 frame"),
        (torch.stack([codes, codes]), {}, "2 chunks"),
        ("codes", {}, "expected an array"),
    ]
    for bad, override, match in cases:
        kwargs = {"n_q": 4, "cardinality": 1024, "name": "song.npy", **override}
        with pytest.raises(TokenError, match=match) as info:
            validate_codes(bad, **kwargs)
        assert str(info.value).startswith("song.npy: ")


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x93NUMPY but not really" * 3)


def _truncated_npz(path: Path) -> None:
    np.savez_compressed(path, codes=_codes(1, 4, 500).numpy())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _ecdc(path: Path, *, header: bytes | None = None, cut: int = 0) -> None:
    write_tokens(path, _codes(1, 4, 30))
    data = path.read_bytes()
    if header is not None:
        data = header + data[len(header) :]
    path.write_bytes(data[: len(data) - cut])


def _ecdc_with_header(path: Path, meta: bytes) -> None:
    import struct

    path.write_bytes(struct.pack("!4sBI", b"ECDC", 0, len(meta)) + meta + b"\x00" * 100)


@pytest.mark.parametrize(
    ("name", "make", "match"),
    [
        ("float.npy", lambda p: np.save(p, np.zeros((4, 6))), "integers, got torch.float64"),
        ("nan.npy", lambda p: np.save(p, np.full((4, 6), np.nan)), "NaN"),
        ("negative.npy", lambda p: np.save(p, -np.ones((4, 6), dtype=np.int64)), ">= 0"),
        ("flat.npy", lambda p: np.save(p, np.zeros(6, dtype=np.int64)), r"\[K, T\]"),
        ("empty.npy", lambda p: np.save(p, np.zeros((4, 0), dtype=np.int64)), "empty"),
        ("one.npy", lambda p: np.save(p, np.zeros((4, 1), dtype=np.int64)), "1 frame"),
        ("chunks.npy", lambda p: np.save(p, np.zeros((2, 1, 4, 6), dtype=np.int64)), "2 chunks"),
        ("object.npy", lambda p: np.save(p, np.array([{}], dtype=object)), "cannot read .npy"),
        ("garbage.npy", _garbage, "cannot read .npy"),
        ("garbage.npz", _garbage, "cannot read .npz"),
        ("truncated.npz", _truncated_npz, "cannot read .npz"),
        ("keys.npz", lambda p: np.savez(p, a=np.zeros(2), b=np.zeros(2)), r"no codes found.*\['a', 'b'\]"),
        ("garbage.pt", _garbage, "cannot read .pt"),
        ("dict.pt", lambda p: torch.save({"tokens": torch.zeros(4, 6)}, p), "a dict with 'codes'"),
        ("garbage.ecdc", _garbage, "cannot read .ecdc"),
        ("truncated.ecdc", lambda p: _ecdc(p, cut=20), "truncated .ecdc stream"),
        ("header.ecdc", lambda p: _ecdc(p, cut=1000), "bad .ecdc header"),
        ("magic.ecdc", lambda p: _ecdc(p, header=b"ECDX"), "not in ECDC format"),
        ("json.ecdc", lambda p: _ecdc_with_header(p, b"{not json"), "bad .ecdc header"),
        (
            "model.ecdc",
            lambda p: _ecdc_with_header(p, b'{"m": "encodec_48khz", "al": 10, "nc": 4, "lm": false}'),
            "unsupported .ecdc model 'encodec_48khz'",
        ),
        (
            "fields.ecdc",
            lambda p: _ecdc_with_header(p, b'{"m": "encodec_24khz", "al": "x", "nc": 4, "lm": false}'),
            "bad .ecdc header",
        ),
        ("tokens.txt", lambda p: p.write_text("1 2 3"), "unknown token file type"),
    ],
)
def test_bad_files_give_token_errors(tmp_path: Path, name: str, make: object, match: str) -> None:
    path = tmp_path / name
    make(path)  # type: ignore[operator]
    with pytest.raises(TokenError, match=match) as info:
        read_tokens(path)
    assert str(info.value).startswith(f"{path}: ")


def test_truncated_entropy_coded_ecdc(lm: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "lm.ecdc"
    write_tokens(path, _codes(1, 2, 10), lm=lm)
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(TokenError, match=f"{path}: cannot read .ecdc file: (truncated|corrupted)"):
        read_tokens(path, lm=lm)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="absent.npy: no such file"):
        read_tokens(tmp_path / "absent.npy")


def test_write_refuses_overwrite_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    write_tokens(path, _codes(1, 2, 5))
    with pytest.raises(FileExistsError, match="already exists"):
        write_tokens(path, _codes(1, 2, 5, seed=9))
    assert torch.equal(read_tokens(path).codes, _codes(1, 2, 5))
    write_tokens(path, _codes(1, 2, 5, seed=9), overwrite=True)
    assert torch.equal(read_tokens(path).codes, _codes(1, 2, 5, seed=9))
    with pytest.raises(ValueError, match=r"one stream \[1, K <= 32, T >= 1\]"):
        write_tokens(tmp_path / "two.ecdc", _codes(2, 2, 5))
    with pytest.raises(ValueError, match="1024"):
        write_tokens(tmp_path / "big.ecdc", _codes(1, 2, 5, high=2048, seed=4) + 1024)
    with pytest.raises(ValueError, match="can write .npy or .ecdc"):
        write_tokens(tmp_path / "t.pt", _codes(1, 2, 5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy"]  # no partial files


# --- byte order, sparse tensors and arrays that would inflate --------------------------------------------


def test_big_endian_and_any_byte_order_are_converted(tmp_path: Path) -> None:
    codes = np.random.default_rng(0).integers(0, 1024, (4, 9))
    for dtype in (">i8", ">i2", "<i4", ">u2"):
        np.save(tmp_path / "c.npy", codes.astype(dtype))
        assert torch.equal(read_tokens(tmp_path / "c.npy").codes, torch.from_numpy(codes)[None])
    np.savez(tmp_path / "c.npz", codes=codes.astype(">i8"))
    assert torch.equal(read_tokens(tmp_path / "c.npz").codes, torch.from_numpy(codes)[None])


def test_sparse_tensor_is_a_token_error(tmp_path: Path) -> None:
    sparse = torch.sparse_coo_tensor(torch.tensor([[0], [5]]), torch.tensor([3]), (4, 10**9))
    torch.save(sparse, tmp_path / "s.pt")
    with pytest.raises(TokenError, match=r"s\.pt: codes must be a dense tensor"):
        read_tokens(tmp_path / "s.pt")
    torch.save({"codes": sparse}, tmp_path / "d.pt")
    with pytest.raises(TokenError, match=r"d\.pt: codes must be a dense tensor"):
        read_tokens(tmp_path / "d.pt")


def test_arrays_are_size_checked_from_their_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .npy header claiming 32 GB (with no data behind it) and an .npz that inflates past the limit are
    refused from their headers, before anything is read or inflated."""
    from numpy.lib import format as npy_format

    with open(tmp_path / "huge.npy", "wb") as fo:
        npy_format.write_array_header_1_0(fo, {"descr": "<i8", "fortran_order": False, "shape": (4, 10**9)})
    with pytest.raises(TokenError, match=r"huge\.npy: holds a \[4, 1000000000\] int64 array of 29\.8 GB, over"):
        read_tokens(tmp_path / "huge.npy")
    monkeypatch.setenv("MBD_MAX_MEMORY", "1M")  # the input limit follows the memory limit when lower
    np.savez_compressed(tmp_path / "bomb.npz", codes=np.zeros((4, 100_000), dtype=np.int64))  # 3.2 MB inflated
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000

    def no_inflation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the member was inflated")

    monkeypatch.setattr(np.lib.format, "read_array", no_inflation)
    with pytest.raises(TokenError, match=r"bomb\.npz \(key 'codes'\): holds a \[4, 100000\] int64 array of 3 MB"):
        read_tokens(tmp_path / "bomb.npz")


def test_hostile_pickle_is_one_line(tmp_path: Path) -> None:
    import io as io_module

    class _OpensAFile:
        def __reduce__(self):
            return io_module.open, (str(tmp_path / "x"), "w")

    torch.save({"codes": _OpensAFile()}, tmp_path / "evil.pt")
    with pytest.raises(TokenError) as err:
        read_tokens(tmp_path / "evil.pt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'evil.pt'}: refused to load: the pickle asks for ") and "\n" not in message
    assert "weights_only" not in message and not (tmp_path / "x").exists()
