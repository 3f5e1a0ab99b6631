"""mbd.ecdc: EnCodec's `.ecdc` stream format, checked against the `encodec` package's own header and bit codec."""

from __future__ import annotations

import io
import math

import pytest
import torch
from encodec import binary

from mbd.ecdc import read_ecdc, write_ecdc
from mbd.errors import InputError, TokenError


def _codes(n_q: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1024, (1, n_q, frames), generator=torch.Generator().manual_seed(seed))


def test_written_stream_is_encodecs_format() -> None:
    codes = _codes(4, 9)
    buffer = io.BytesIO()
    write_ecdc(buffer, codes, audio_length=2800)  # ceil(2800 / 24000 * 75) = 9 frames
    buffer.seek(0)
    assert binary.read_ecdc_header(buffer) == {"m": "encodec_24khz", "al": 2800, "nc": 4, "lm": False}
    unpacker = binary.BitUnpacker(10, buffer)
    values = [unpacker.pull() for _ in range(4 * 9)]
    assert values == codes[0].T.flatten().tolist()  # frame by frame, codebook 0..K-1 within a frame
    assert unpacker.pull() is None


def test_reads_a_stream_packed_by_encodec() -> None:
    codes = _codes(2, 6, seed=1)
    buffer = io.BytesIO()
    binary.write_ecdc_header(buffer, {"m": "encodec_24khz", "al": 1900, "nc": 2, "lm": False})
    packer = binary.BitPacker(10, buffer)
    for value in codes[0].T.flatten().tolist():
        packer.push(value)
    packer.flush()
    buffer.seek(0)
    read, header = read_ecdc(buffer)
    assert math.ceil(1900 / 24000 * 75) == 6
    assert torch.equal(read, codes) and header["nc"] == 2


def test_default_audio_length_gives_the_frame_count() -> None:
    for frames in (2, 21, 42, 51):  # T * 320 samples would make EnCodec count T + 1 frames here
        buffer = io.BytesIO()
        write_ecdc(buffer, _codes(2, frames), audio_length=None)
        buffer.seek(0)
        length = binary.read_ecdc_header(buffer)["al"]
        assert math.ceil(length / 24000 * 75) == frames and math.ceil((length + 1) / 24000 * 75) == frames + 1


def test_bad_requests() -> None:
    with pytest.raises(InputError, match="one stream"):
        write_ecdc(io.BytesIO(), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(TokenError, match="must be < 1024"):
        write_ecdc(io.BytesIO(), torch.full((1, 4, 5), 1024))
    with pytest.raises(InputError, match="gives 2 frames, not 5"):
        write_ecdc(io.BytesIO(), _codes(4, 5), audio_length=400)
    buffer = io.BytesIO()
    binary.write_ecdc_header(buffer, {"m": "encodec_24khz", "al": 3200, "nc": 4, "lm": False})
    buffer.seek(0)
    with pytest.raises(InputError, match="truncated .ecdc stream"):
        read_ecdc(buffer)


def test_entropy_coded_stream_matches_encodecs_own_compressor(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (random) LM, our writer's bytes equal `encodec.compress`'s and our reader recovers its codes."""
    from encodec import compress  # the function: encodec re-exports it over its module name
    from encodec.model import LMModel

    from tests.conftest import random_encodec_24khz

    model = random_encodec_24khz(seed=0)
    model.set_target_bandwidth(3.0)  # 4 codebooks
    model.name = "encodec_24khz"  # what encodec.compress checks; pretrained=False leaves it unset
    torch.manual_seed(5)
    lm = LMModel(model.quantizer.n_q, model.quantizer.bins, num_layers=1, dim=32, past_context=8).eval()
    monkeypatch.setattr(model, "get_lm_model", lambda: lm)
    wav = torch.randn(1, 2400, generator=torch.Generator().manual_seed(1)) * 0.1
    theirs = compress(model, wav, use_lm=True)
    codes, header = read_ecdc(io.BytesIO(theirs), lm=lm)
    with torch.no_grad():
        want = model.encode(wav[None])[0][0]
    assert header["lm"] is True and torch.equal(codes, want)
    ours = io.BytesIO()
    write_ecdc(ours, codes, audio_length=2400, lm=lm)
    assert ours.getvalue() == theirs
