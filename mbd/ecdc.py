"""EnCodec's `.ecdc` stream format (the `encodec` package's encodec/compress.py), for EnCodec 24 kHz codes.

A stream is the `ECDC` magic, a version byte and a JSON header (`m` model name, `al` audio length in samples,
`nc` codebooks, `lm` entropy coded or not), then the codes frame by frame: plain 10-bit words, or arithmetic
coded with EnCodec's small language model. Both use `encodec`'s own bit packer and arithmetic coder, so our
streams are byte-identical to `python -m encodec`'s.
"""

from __future__ import annotations

import math
import os
import typing as tp

import torch
from torch import nn

from mbd import hub
from mbd.codec import EncodecCodec, validate_codes
from mbd.errors import InputError

_ECDC_MODEL = "encodec_24khz"
_FRAME_RATE = 75  # EnCodec 24 kHz's frame rate as EncodecModel.frame_rate gives it: ceil(24000 / 320)


def load_encodec_lm(weights: str | os.PathLike | None = None) -> nn.Module:
    """EnCodec 24 kHz's entropy-coding language model, used by `.ecdc` files written with `lm: true`.

    Args:
        weights: a local `encodec_lm_24khz-1608e3c0.th`; None fetches it via `mbd.hub`.
    """
    from encodec.model import LMModel

    path = hub.resolve_codec_weights("encodec_lm_24khz") if weights is None else weights
    lm = LMModel(n_q=32, card=1024, num_layers=5, dim=200, past_context=int(3.5 * 75))
    lm.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return lm.eval()


def _ecdc_frames(audio_length: int) -> int:
    # EnCodec's own frame count for an unsegmented stream (encodec/compress.py).
    return int(math.ceil(audio_length / EncodecCodec.sample_rate * _FRAME_RATE))


class _EntropyModel:
    """EnCodec's language model as the entropy model of an `.ecdc` stream: the CDFs of each frame's K codes,
    predicted from the previous frame (encodec/compress.py's order; the LM sees 1 + the previous codes).

    Args:
        lm: EnCodec's LM (`load_encodec_lm`).
        n_q: codebooks per frame.
        range_bits: the arithmetic coder's `total_range_bits`.
    """

    def __init__(self, lm: nn.Module, n_q: int, range_bits: int) -> None:
        self.lm, self.range_bits = lm, range_bits
        self.device = next(lm.parameters()).device
        self.states, self.offset = None, 0
        self.prev = torch.zeros(1, n_q, 1, dtype=torch.long, device=self.device)  # [1, K, 1]

    def next_cdfs(self) -> list[torch.Tensor]:
        """The quantised CDF of each of the next frame's K codes."""
        from encodec.quantization.ac import build_stable_quantized_cdf

        probas, self.states, self.offset = self.lm(self.prev, self.states, self.offset)  # [1, card, K, 1]
        return [build_stable_quantized_cdf(p.cpu(), self.range_bits, check=False) for p in probas[0, :, :, 0].T]

    def advance(self, frame: torch.Tensor) -> None:
        """Move past a frame of codes `[1, K, 1]`."""
        self.prev = 1 + frame.to(self.device)


def read_ecdc(fo: tp.BinaryIO, lm: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, tp.Any]]:
    """Codes `[1, K, T]` int64 and the JSON header of an EnCodec 24 kHz `.ecdc` stream.

    Args:
        fo: binary file object positioned at the `ECDC` magic.
        lm: EnCodec's language model, for streams written with `lm: true`; None loads it via `mbd.hub`.

    Raises:
        InputError: the stream is not a supported, complete `.ecdc` stream.
    """
    from encodec import binary
    from encodec.quantization.ac import ArithmeticDecoder

    try:
        header = binary.read_ecdc_header(fo)
    except (EOFError, ValueError, UnicodeDecodeError) as err:  # json errors are ValueErrors
        raise InputError(f"bad .ecdc header: {err}") from err
    if not isinstance(header, dict) or header.get("m") != _ECDC_MODEL:
        model = header.get("m") if isinstance(header, dict) else header
        raise InputError(f"unsupported .ecdc model {model!r}; MBD reads only '{_ECDC_MODEL}' streams")
    audio_length, n_q, use_lm = header.get("al"), header.get("nc"), header.get("lm")
    if not isinstance(audio_length, int) or not isinstance(n_q, int) or not isinstance(use_lm, bool):
        raise InputError(f"bad .ecdc header {header}")
    if audio_length <= 0 or not 1 <= n_q <= 32:
        raise InputError(f"bad .ecdc header {header}")
    n_frames = _ecdc_frames(audio_length)
    codes = torch.zeros(1, n_q, n_frames, dtype=torch.long)
    if use_lm:
        decoder = ArithmeticDecoder(fo)
        model = _EntropyModel(load_encodec_lm() if lm is None else lm, n_q, decoder.total_range_bits)
    else:
        unpacker = binary.BitUnpacker(int(math.log2(EncodecCodec.cardinality)), fo)
    try:
        with torch.no_grad():
            for t in range(n_frames):
                cdfs = model.next_cdfs() if use_lm else [None] * n_q
                for k, cdf in enumerate(cdfs):
                    code = decoder.pull(cdf) if use_lm else unpacker.pull()
                    if code is None:
                        raise InputError(f"truncated .ecdc stream: it ends at frame {t} of {n_frames}")
                    codes[0, k, t] = code
                if use_lm:
                    model.advance(codes[:, :, t : t + 1])
    except (RuntimeError, AssertionError, IndexError) as err:  # the arithmetic decoder on corrupted bits
        raise InputError(f"corrupted .ecdc stream ({err or type(err).__name__})") from err
    return codes, header


def write_ecdc(
    fo: tp.BinaryIO, codes: torch.Tensor, *, audio_length: int | None = None, lm: nn.Module | None = None
) -> None:
    """Write EnCodec 24 kHz codes `[1, K, T]` as an `.ecdc` stream that `encodec`'s decompressor reads.

    Args:
        fo: binary file object to write to.
        codes: codes `[1, K, T]`, values in [0, 1024).
        audio_length: audio length in samples stored in the header; None uses the largest length
            whose frame count is T (about `T * 320`).
        lm: EnCodec's language model for entropy coding (smaller files); None writes plain 10-bit codes.
    """
    from encodec import binary
    from encodec.quantization.ac import ArithmeticCoder

    codes = validate_codes(codes, n_q=None, cardinality=EncodecCodec.cardinality, name="codes", min_frames=1)
    _, n_q, n_frames = codes.shape
    if codes.shape[0] != 1 or not 1 <= n_q <= 32 or n_frames < 1:
        raise InputError(f".ecdc holds one stream [1, K <= 32, T >= 1], got codes {list(codes.shape)}")
    if audio_length is None:
        audio_length = n_frames * EncodecCodec.hop_length
        while _ecdc_frames(audio_length) > n_frames:
            audio_length -= 1
    if _ecdc_frames(audio_length) != n_frames:
        raise InputError(f"audio_length {audio_length} gives {_ecdc_frames(audio_length)} frames, not {n_frames}")
    codes = codes.cpu()
    binary.write_ecdc_header(fo, {"m": _ECDC_MODEL, "al": audio_length, "nc": n_q, "lm": lm is not None})
    if lm is not None:
        coder = ArithmeticCoder(fo)
        model = _EntropyModel(lm, n_q, coder.total_range_bits)
    else:
        packer = binary.BitPacker(int(math.log2(EncodecCodec.cardinality)), fo)
    with torch.no_grad():
        for t in range(n_frames):
            if lm is not None:
                for value, cdf in zip(codes[0, :, t].tolist(), model.next_cdfs()):
                    coder.push(value, cdf)
                model.advance(codes[:, :, t : t + 1])
            else:
                for value in codes[0, :, t].tolist():
                    packer.push(value)
    if lm is not None:
        coder.flush()
    else:
        packer.flush()
