"""mbd.codec: the EnCodec adapters, checked against the `encodec` package's own model with random weights."""

from __future__ import annotations

import functools
import hashlib
import http.server
import sys
import threading
from pathlib import Path

import pytest
import torch

from mbd import hub
from mbd.codec import (
    Codec,
    EncodecCodec,
    HFEncodecCodec,
    bandwidth_to_n_q,
    load_codec,
    n_q_to_bandwidth,
)
from mbd.errors import InputError, TokenError
from tests.conftest import random_encodec_24khz


@pytest.fixture(scope="module")
def reference(encodec_weights: Path) -> tuple[torch.nn.Module, Path]:
    """The `encodec` package's model and its weights file (the session's: the same seed-0 model)."""
    return random_encodec_24khz(seed=0), encodec_weights


@pytest.fixture(scope="module")
def codec(reference: tuple[torch.nn.Module, Path]) -> EncodecCodec:
    return load_codec("encodec_24khz", 4, weights=reference[1])


def _manual_latents(codebooks: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """sum_k E_k[codes[:, k]] from a scalar 0 in order k = 0..K-1, permuted to [B, D, T]."""
    total = torch.tensor(0.0)
    for k in range(codes.shape[1]):
        total = total + codebooks[k][codes[:, k]]  # [B, T, D]
    return total.permute(0, 2, 1)


def test_codec_attributes(codec: EncodecCodec) -> None:
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.hop_length, codec.n_q, codec.cardinality) == (24_000, 320, 4, 1024)
    assert not codec.training


def test_latents_equal_summed_codebook_rows(reference: tuple[torch.nn.Module, Path], codec: EncodecCodec) -> None:
    state = torch.load(reference[1], weights_only=True)
    codebooks = [state[f"quantizer.vq.layers.{k}._codebook.embed"] for k in range(4)]
    codes = torch.randint(0, 1024, (2, 4, 7), generator=torch.Generator().manual_seed(1))
    latents = codec.latents(codes)
    assert latents.shape == (2, 128, 7) and latents.dtype == torch.float32
    assert torch.equal(latents, _manual_latents(codebooks, codes))


def test_encode_decode_match_encodec(reference: tuple[torch.nn.Module, Path], codec: EncodecCodec) -> None:
    model = reference[0]
    model.set_target_bandwidth(3.0)
    wav = 0.1 * torch.randn(2, 1, 2241, generator=torch.Generator().manual_seed(2))  # 0.1 s, odd length
    codes = codec.encode(wav)
    assert codes.shape == (2, 4, 8) and codes.dtype == torch.int64
    with torch.no_grad():
        ((expected, scale),) = model.encode(wav)
        assert scale is None
        assert torch.equal(codes, expected)
        audio = codec.decode(codes)
        assert audio.shape == (2, 1, 8 * 320)
        assert torch.equal(audio, model.decode([(expected, None)]))


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (torch.zeros(1, 2, 5, dtype=torch.long), "2 codebooks but the model expects 4"),
        (torch.full((1, 4, 5), 1024), "must be < 1024"),
        (torch.full((1, 4, 5), -1), "must be >= 0"),
        (torch.zeros(1, 4, 5), "must be integers"),
        (torch.zeros(2, 1, 4, 5, dtype=torch.long), r"\[chunks, B, K, T\]"),
        (torch.zeros(1, 4, 0, dtype=torch.long), "empty"),
    ],
)
def test_bad_codes_are_refused(codec: EncodecCodec, codes: torch.Tensor, match: str) -> None:
    # The codec uses the same check as token files, with its one error type.
    with pytest.raises(TokenError, match=match):
        codec.latents(codes)
    with pytest.raises(TokenError, match=match):
        codec.decode(codes)


def test_codec_takes_one_frame_and_unbatched_codes(codec: EncodecCodec) -> None:
    codes = torch.randint(0, 1024, (4, 1), generator=torch.Generator().manual_seed(3))
    assert torch.equal(codec.latents(codes), codec.latents(codes[None]))
    assert codec.latents(codes).shape == (1, 128, 1)


def test_long_audio_is_encoded_in_pieces(
    reference: tuple[torch.nn.Module, Path], codec: EncodecCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audio longer than `chunk_seconds` reaches the encoder in pieces of at most that length, which start on
    frame boundaries and give the whole signal's codes; shorter audio is encoded in one call, unchanged."""
    model = reference[0]
    model.set_target_bandwidth(3.0)
    wav = 0.1 * torch.randn(1, 1, 24001, generator=torch.Generator().manual_seed(6))  # 1 s, 76 frames
    with torch.no_grad():
        ((whole, _),) = model.encode(wav)
    calls: list[int] = []
    encode = codec.model.encode

    def spy(piece: torch.Tensor) -> list:
        calls.append(piece.shape[-1])
        return encode(piece)

    monkeypatch.setattr(codec.model, "encode", spy)
    assert torch.equal(codec.encode(wav), whole) and calls == [24001]  # the default chunks only past 60 s
    calls.clear()
    codes = codec.encode(wav, chunk_seconds=0.5)  # pieces of 38 frames, 9 of them context on each side
    assert codes.shape == whole.shape and len(calls) == 4
    assert max(calls) <= 38 * 320 and all(n % 320 == 0 for n in calls[:-1])
    # EnCodec's LSTM makes pieces inexact in principle; with the context these random weights agree fully.
    assert (codes == whole).float().mean() > 0.99
    with pytest.raises(InputError, match="chunk_seconds"):
        codec.encode(wav, chunk_seconds=float("inf"))


def test_bad_audio_is_refused(codec: EncodecCodec) -> None:
    with pytest.raises(InputError, match="mono"):
        codec.encode(torch.zeros(1, 2, 320))
    with pytest.raises(InputError, match=r"\[B, 1, L\]"):
        codec.encode(torch.zeros(1, 320))


def test_bandwidth_n_q_mapping() -> None:
    assert [bandwidth_to_n_q(bw) for bw in (1.5, 3, 6, 12, 24)] == [2, 4, 8, 16, 32]
    assert [n_q_to_bandwidth(n) for n in (2, 4, 8, 16, 32)] == [1.5, 3.0, 6.0, 12.0, 24.0]
    with pytest.raises(InputError, match="no 2.0 kbps"):
        bandwidth_to_n_q(2.0)
    with pytest.raises(InputError, match="n_q=3"):
        n_q_to_bandwidth(3)


def test_load_codec_refuses_bad_requests(reference: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown codec 'dac'.*encodec_24khz"):
        load_codec("dac", 4, weights=reference[1])
    with pytest.raises(InputError, match="n_q=3"):
        load_codec("encodec_24khz", 3, weights=reference[1])
    bad = tmp_path / "bad.th"
    torch.save({"encoder.nonsense": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match="Missing key"):  # strict load_state_dict
        load_codec("encodec_24khz", 2, weights=bad)


def test_load_codec_through_hub(
    reference: tuple[torch.nn.Module, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no weights given, the codec weights come from the manifest URL into torch.hub's folder, checked."""
    weights = reference[1]
    prefix = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(weights.parent))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        manifest = tmp_path / "manifest.toml"
        manifest.write_text(
            "[codec.encodec_24khz]\n"
            f'file = "encodec_24khz-{prefix}.th"\n'
            f'url = "http://127.0.0.1:{server.server_address[1]}/{weights.name}"\n'
            f'sha256_prefix = "{prefix}"\nlicense = "MIT"\nlicense_url = "https://example.invalid"\n'
        )
        monkeypatch.setenv("MBD_MANIFEST", str(manifest))
        monkeypatch.setenv("MBD_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.delenv("MBD_OFFLINE", raising=False)
        from_hub = load_codec("encodec_24khz", 2)
    finally:
        server.shutdown()
        server.server_close()
    folder = tmp_path / "torch" / "hub" / "checkpoints"  # torch.hub's, where `encodec` looks too
    assert sorted(p.name for p in folder.iterdir()) == [f"encodec_24khz-{prefix}.th"]
    assert from_hub.n_q == 2
    codes = torch.randint(0, 1024, (1, 2, 5), generator=torch.Generator().manual_seed(3))
    state = torch.load(weights, weights_only=True)
    codebooks = [state[f"quantizer.vq.layers.{k}._codebook.embed"] for k in range(2)]
    assert torch.equal(from_hub.latents(codes), _manual_latents(codebooks, codes))


def test_hf_codec_needs_transformers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"pip install 'mbd\[hf\]'"):
        load_codec("encodec_32khz", 4, weights=tmp_path)


@pytest.fixture(scope="module")
def hf_model() -> torch.nn.Module:
    import transformers

    config = transformers.EncodecConfig(
        sampling_rate=32_000,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=2048,
        num_filters=4,
        num_lstm_layers=1,
        use_causal_conv=False,
    )
    torch.manual_seed(4)
    model = transformers.EncodecModel(config).eval()
    for layer in model.quantizer.layers:  # zero at init, like EnCodec's k-means init
        layer.codebook.embed.normal_()
    return model


def test_hf_codec_matches_transformers(hf_model: torch.nn.Module) -> None:
    codec = HFEncodecCodec(hf_model)
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.hop_length, codec.n_q, codec.cardinality) == (32_000, 640, 4, 2048)
    wav = 0.1 * torch.randn(2, 1, 6401, generator=torch.Generator().manual_seed(5))
    codes = codec.encode(wav)
    assert codes.shape == (2, 4, 11) and codes.dtype == torch.int64
    with torch.no_grad():
        assert torch.equal(codes, hf_model.encode(wav, bandwidth=2.2).audio_codes[0])
    codebooks = [layer.codebook.embed for layer in hf_model.quantizer.layers]
    assert torch.equal(codec.latents(codes), _manual_latents(codebooks, codes))
    assert codec.decode(codes).shape == (2, 1, 11 * 640)
    with pytest.raises(InputError, match="n_q=3"):
        HFEncodecCodec(hf_model, n_q=3)


def test_hf_codec_loads_a_folder(hf_model: torch.nn.Module, tmp_path: Path) -> None:
    hf_model.save_pretrained(tmp_path / "encodec_32khz")
    codec = load_codec("encodec_32khz", 4, weights=tmp_path / "encodec_32khz")
    codes = torch.randint(0, 2048, (1, 4, 3), generator=torch.Generator().manual_seed(6))
    expected = _manual_latents([layer.codebook.embed for layer in hf_model.quantizer.layers], codes)
    assert torch.equal(codec.latents(codes), expected)


def test_hf_codec_offline_message(hf_model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("MBD_OFFLINE", "1")
    monkeypatch.delenv("MBD_MANIFEST", raising=False)
    with pytest.raises(hub.OfflineError, match="facebook/encodec_32khz"):
        load_codec("encodec_32khz", 4)
