"""mbd.conditioning: the hop, condition, output length and re-EQ of codec-latent and log-mel conditioning."""

from __future__ import annotations

import pytest
import torch

from mbd.codec import EncodecCodec
from mbd.conditioning import CodecLatents, MelFeatures, conditioning_for
from mbd.config import CodecConfig
from mbd.eq import re_eq
from mbd.mel import MelConfig, MelSpectrogram
from tests.conftest import FakeCodec, tiny, tiny_mel_model

SR = 24000


class EncodingCodec(FakeCodec):
    """FakeCodec whose encode keeps every `hop`-th sample's sign as one code (enough to check the plumbing)."""

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav[:, :, :: self.hop_length]  # [B, 1, T]
        return (frames > 0).long().repeat(1, self.n_q, 1)  # [B, K, T]


def _codec(hop: int = 320, sample_rate: int = SR, frames: int = 6, batch: int = 2) -> EncodingCodec:
    g = torch.Generator().manual_seed(0)
    codebooks = torch.randn(4, 16, 8, generator=g)  # [K, N, D]
    reference = torch.randn(batch, 1, frames * hop, generator=g)
    return EncodingCodec(codebooks, reference, sample_rate, hop, codes=_codes(frames, batch))


def _codes(frames: int = 6, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 16, (batch, 4, frames), generator=torch.Generator().manual_seed(1))


# --- codec latents -----------------------------------------------------------------------------------------


def test_codec_hop_comes_from_the_attached_codec() -> None:
    conditioning = CodecLatents(CodecConfig(), SR)
    with pytest.raises(RuntimeError, match="no codec attached.*length="):
        _ = conditioning.hop_length
    conditioning.attach_codec(_codec(hop=640, sample_rate=32000))
    assert conditioning.hop_length == 640


def test_token_model_hop_and_default_length() -> None:
    model = tiny()
    latents = torch.randn(1, 8, 5)
    with pytest.raises(RuntimeError, match="no codec attached"):
        model.generate(latents, steps=[999, 0])
    assert model.generate(latents, length=5 * 300, steps=[999, 0]).shape == (1, 1, 5 * 300)  # no hop needed
    model.codec = _codec(hop=640, sample_rate=32000)  # attaches it to the conditioning
    assert model.conditioning.codec is model.codec and model.hop_length == 640
    assert model.generate(latents, steps=[999, 0]).shape == (1, 1, 5 * 640)


def test_codec_request_condition_length_and_re_eq() -> None:
    codec = _codec()
    codes = _codes()
    request = CodecLatents(CodecConfig(), SR, codec).from_tokens(codes, n_bands=8, per_clip_eq=False)
    # the latent is the sum of each codebook's row for its code
    want = sum(codec.codebooks[k][codes[:, k]] for k in range(4)).permute(0, 2, 1)  # [B, D, T]
    torch.testing.assert_close(request.condition, want)
    assert request.length == codec.reference.shape[-1] == 6 * 320
    wav = torch.randn(2, 1, request.length, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(request.finish(wav), re_eq(wav, codec.reference, SR, 8))


def test_codec_request_per_clip_eq_equalises_each_clip_alone() -> None:
    codec = _codec()
    request = CodecLatents(CodecConfig(), SR, codec).from_tokens(_codes(), n_bands=8, per_clip_eq=True)
    wav = torch.randn(2, 1, request.length, generator=torch.Generator().manual_seed(2))
    out = request.finish(wav)
    for b in range(2):
        torch.testing.assert_close(out[b : b + 1], re_eq(wav[b : b + 1], codec.reference[b : b + 1], SR, 8))
    assert not torch.allclose(out, re_eq(wav, codec.reference, SR, 8))  # joint EQ differs


FRAMES = 60  # 0.8 s of EnCodec tokens


@pytest.fixture(scope="module")
def long_codes(encodec_codec: EncodecCodec) -> tuple[torch.Tensor, torch.Tensor]:
    """Two clips of EnCodec codes `[2, 4, FRAMES]` and their decode, whole."""
    codes = torch.randint(0, 1024, (2, 4, FRAMES), generator=torch.Generator().manual_seed(4))
    return codes, encodec_codec.decode(codes)


@pytest.mark.parametrize("per_clip_eq", [False, True])
def test_chunked_reference_re_eq_matches_the_whole(
    encodec_codec: EncodecCodec,
    long_codes: tuple[torch.Tensor, torch.Tensor],
    per_clip_eq: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With chunk_seconds, EnCodec's reference is decoded in pieces of at most that length, and the re-EQ
    against it is the whole-signal re-EQ against the unchunked decode, within a small tolerance."""
    codec = encodec_codec
    calls: list[int] = []
    decode = codec.decode

    def spy(codes: torch.Tensor) -> torch.Tensor:
        calls.append(codes.shape[-1])
        return decode(codes)

    monkeypatch.setattr(codec, "decode", spy)
    codes, whole = long_codes  # whole: [B, 1, L]
    request = CodecLatents(CodecConfig(), SR, codec).from_tokens(codes, 32, per_clip_eq, chunk_seconds=0.4)
    assert calls and max(calls) <= 30 and sum(calls) < 2 * FRAMES * (2 if per_clip_eq else 1)  # 0.4 s = 30 frames
    wav = torch.randn(2, 1, request.length, generator=torch.Generator().manual_seed(5))
    if per_clip_eq:
        want = torch.cat([re_eq(wav[b : b + 1], whole[b : b + 1], SR, 32) for b in range(2)])
    else:
        want = re_eq(wav, whole, SR, 32)
    got = request.finish(wav)
    assert (got - want).norm() / want.norm() < 1e-3
    assert (got - wav).norm() / wav.norm() > 0.1  # the re-EQ did change the signal


def test_codec_regenerate_request_keeps_the_input_length_without_re_eq() -> None:
    codec = _codec()
    wav = torch.randn(2, 1, 6 * 320 - 7, generator=torch.Generator().manual_seed(3))
    request = CodecLatents(CodecConfig(), SR, codec).from_audio(wav)
    torch.testing.assert_close(request.condition, codec.latents(codec.encode(wav)))
    assert request.length == wav.shape[-1]
    out = torch.randn(2, 1, request.length)
    assert request.finish(out) is out  # AudioCraft's regenerate does not re-EQ


def test_codec_errors_name_the_missing_piece() -> None:
    conditioning = CodecLatents(CodecConfig(), SR)
    with pytest.raises(RuntimeError, match="without a codec"):
        conditioning.from_tokens(_codes(), 32, False)
    with pytest.raises(RuntimeError, match="without a codec"):
        conditioning.from_audio(torch.zeros(1, 1, 640))
    with pytest.raises(RuntimeError, match="not on mel spectrograms"):
        conditioning.from_mel(torch.zeros(100, 10), 1.0)


# --- log-mel features --------------------------------------------------------------------------------------


def test_mel_hop_comes_from_the_mel_config() -> None:
    assert MelFeatures(MelConfig(hop_length=256)).hop_length == 256
    assert MelFeatures(MelConfig(hop_length=300)).hop_length == 300
    model = tiny_mel_model()
    assert model.hop_length == 256 and model.codec is None


def test_mel_request_condition_length_and_re_eq() -> None:
    config = MelConfig()
    features = MelSpectrogram(config)
    wav = 0.3 * torch.sin(torch.arange(256 * 12) / 9.0)[None, None]
    mel = features.frame_aligned(wav)  # [1, 100, 12]
    conditioning = MelFeatures(config)
    request = conditioning.from_mel(mel[0], 0.5)  # unbatched
    torch.testing.assert_close(request.condition, (mel - config.norm_mean) / config.norm_std)
    assert request.length == 12 * 256
    out = torch.randn(1, 1, request.length, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(request.finish(out), features.equalize(out, mel, 0.5)[0])  # [1, L]: unbatched
    batched = conditioning.from_mel(mel, 0.0)
    assert torch.equal(batched.finish(out), out)  # strictness 0: unchanged, batch kept


def test_mel_regenerate_request_vocodes_each_channel() -> None:
    g = torch.Generator().manual_seed(4)
    wav = torch.randn(2, 2, 1000, generator=g) * 0.1  # [B, C, L], L not a multiple of the hop
    conditioning = MelFeatures(MelConfig())
    request = conditioning.from_audio(wav)
    assert request.condition.shape == (4, 100, 4) and request.length == 4 * 256
    alone = conditioning.from_audio(wav[1:, 1:])  # batch 1, channel 1 on its own
    torch.testing.assert_close(request.condition[3:], alone.condition)
    out = request.finish(torch.randn(4, 1, request.length, generator=g) * 0.1)
    assert out.shape == (2, 2, 1000)


def test_mel_errors_and_no_codec() -> None:
    conditioning = MelFeatures(MelConfig())
    with pytest.raises(RuntimeError, match="mel model"):
        conditioning.from_tokens(_codes(), 32, False)
    with pytest.raises(ValueError, match="uses no codec"):
        conditioning.attach_codec(_codec())
    conditioning.attach_codec(None)  # detaching nothing is fine
    assert conditioning.codec is None


def test_conditioning_follows_the_config() -> None:
    token = tiny()
    assert isinstance(token.conditioning, CodecLatents) and token.features is None
    mel = tiny_mel_model()
    assert isinstance(mel.conditioning, MelFeatures) and mel.features is mel.conditioning.features
    assert isinstance(conditioning_for(mel.config), MelFeatures)
    with pytest.raises(ValueError, match="uses no codec"):
        conditioning_for(mel.config, _codec())
