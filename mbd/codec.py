"""The EnCodec adapter: tokens -> codec latent, tokens -> audio, audio -> tokens (spec §a, "Codec latent").

MBD is conditioned on the codec latent: for codes `[B, K, T]` the latent is the sum of the rows of the K
codebooks, `z[b, :, t] = sum_k E_k[codes[b, k, t]]`, i.e. the quantized EnCodec embedding just before the
decoder. This is the only module that imports a codec library (`encodec`, optionally `transformers`);
codec weights are fetched by `mbd.hub` and never enter MBD checkpoints. EnCodec's own `.ecdc` stream format
is read and written here too, since it needs `encodec`'s bit packer and arithmetic coder.
"""

from __future__ import annotations

import math
import os
import typing as tp
import warnings

import torch
from torch import nn

from mbd import hub

ENCODEC_24KHZ_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)
_CODEC_NAMES = ("encodec_24khz", "encodec_32khz")


@tp.runtime_checkable
class Codec(tp.Protocol):
    """What MBD needs from a neural audio codec. Audio is mono, `[B, 1, L]`."""

    sample_rate: int
    frame_rate: float
    hop_length: int
    channels: int
    n_q: int
    cardinality: int

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio `[B, 1, L]` float -> codes `[B, n_q, T]` int64, `T = ceil(L / hop_length)`."""
        ...

    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> summed codebook rows `[B, D, T]` float32 (D = 128)."""
        ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> the codec's own reconstruction `[B, 1, T * hop_length]`."""
        ...


def bandwidth_to_n_q(bw: float) -> int:
    """Number of codebooks of EnCodec 24 kHz at `bw` kbps: `bw * 1000 / (75 Hz * 10 bits)`."""
    if bw not in ENCODEC_24KHZ_BANDWIDTHS:
        raise ValueError(f"EnCodec 24 kHz has no {bw} kbps mode; choose one of {ENCODEC_24KHZ_BANDWIDTHS}")
    return round(bw * 1000 / (75 * 10))


def n_q_to_bandwidth(n_q: int) -> float:
    """Bandwidth in kbps of EnCodec 24 kHz with `n_q` codebooks (2/4/8/16/32 -> 1.5/3/6/12/24)."""
    for bw in ENCODEC_24KHZ_BANDWIDTHS:
        if bandwidth_to_n_q(bw) == n_q:
            return bw
    valid = [bandwidth_to_n_q(bw) for bw in ENCODEC_24KHZ_BANDWIDTHS]
    raise ValueError(f"EnCodec 24 kHz cannot use n_q={n_q}; choose one of {valid}")


def _check_codes(codes: torch.Tensor, n_q: int, cardinality: int) -> None:
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        kind = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise TypeError(f"codes must be an integer tensor [B, K, T], got {kind}")
    if codes.dim() != 3:
        raise ValueError(f"codes must be [B, K, T], got shape {list(codes.shape)}")
    if codes.shape[1] != n_q:
        raise ValueError(f"codes have K={codes.shape[1]} codebooks but this codec uses n_q={n_q}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cardinality):
        raise ValueError(f"codes must lie in [0, {cardinality}), got [{int(codes.min())}, {int(codes.max())}]")


def _check_wav(wav: torch.Tensor) -> None:
    if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point or wav.dim() != 3:
        raise ValueError("wav must be a float tensor [B, 1, L]")
    if wav.shape[1] != 1:
        raise ValueError(f"wav must be mono [B, 1, L], got {wav.shape[1]} channels")


def _build_encodec_24khz() -> nn.Module:
    """EnCodec 24 kHz architecture from the `encodec` package, as `encodec_model_24khz` builds it."""
    from encodec.model import EncodecModel

    with warnings.catch_warnings():  # encodec uses the deprecated torch.nn.utils.weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        return EncodecModel._get_model(
            list(ENCODEC_24KHZ_BANDWIDTHS), 24_000, 1, causal=True, model_norm="weight_norm",
            audio_normalize=False, name="encodec_24khz",
        )


class EncodecCodec(nn.Module):
    """EnCodec 24 kHz (the `encodec` package) with `n_q` active codebooks.

    Args:
        weights: a state dict file of `encodec`'s `EncodecModel` (e.g. `encodec_24khz-d7cc33bc.th`).
        n_q: codebooks in use, 2/4/8/16/32 for 1.5/3/6/12/24 kbps.
    """

    sample_rate = 24_000
    hop_length = 320
    frame_rate = 75.0
    channels = 1
    cardinality = 1024

    def __init__(self, weights: str | os.PathLike, n_q: int) -> None:
        super().__init__()
        self.bandwidth = n_q_to_bandwidth(n_q)
        self.n_q = n_q
        self.model = _build_encodec_24khz()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.set_target_bandwidth(self.bandwidth)
        self.eval()

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio `[B, 1, L]` -> codes `[B, n_q, ceil(L / 320)]` int64."""
        _check_wav(wav)
        ((codes, scale),) = self.model.encode(wav)  # one frame: the 24 kHz model is not segmented
        assert scale is None
        return codes

    @torch.no_grad()
    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> codec latent `[B, 128, T]`: codebook rows summed for k = 0..n_q-1."""
        _check_codes(codes, self.n_q, self.cardinality)
        return self.model.quantizer.decode(codes.transpose(0, 1))  # [K, B, T] -> [B, 128, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> EnCodec's decoded audio `[B, 1, T * 320]`."""
        _check_codes(codes, self.n_q, self.cardinality)
        return self.model.decode([(codes, None)])


def _transformers() -> tp.Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "the 32 kHz (MusicGen) codec needs Hugging Face transformers: pip install 'mbd[hf]'"
        ) from err
    return transformers


class HFEncodecCodec(nn.Module):
    """A Hugging Face `transformers.EncodecModel` (e.g. MusicGen's 32 kHz EnCodec: 4 codebooks of 2048, 50 Hz).

    Args:
        model: the `transformers.EncodecModel`; its config must have `normalize=False`.
        n_q: codebooks in use; None uses all of them (`config.num_quantizers`).
    """

    def __init__(self, model: nn.Module, n_q: int | None = None) -> None:
        super().__init__()
        config = model.config
        if config.normalize or config.chunk_length_s is not None:
            raise ValueError("MBD needs an EnCodec without normalisation or chunking")
        self.model = model.eval()
        self.sample_rate = int(config.sampling_rate)
        self.hop_length = int(config.hop_length)
        self.frame_rate = self.sample_rate / self.hop_length
        self.channels = int(config.audio_channels)
        self.cardinality = int(config.codebook_size)
        self.n_q = int(config.num_quantizers) if n_q is None else n_q
        rvq = model.quantizer
        bandwidths = [bw for bw in config.target_bandwidths if rvq.get_num_quantizers_for_bandwidth(bw) == self.n_q]
        if not bandwidths:
            raise ValueError(f"this codec has no bandwidth with n_q={self.n_q}; it has {config.target_bandwidths}")
        self.bandwidth = float(bandwidths[0])

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, n_q: int | None = None, *, local_files_only: bool = False
    ) -> HFEncodecCodec:
        """Load with `transformers.EncodecModel.from_pretrained` (a hub repo id or a local folder)."""
        model = _transformers().EncodecModel.from_pretrained(name_or_path, local_files_only=local_files_only)
        return cls(model, n_q)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio `[B, 1, L]` -> codes `[B, n_q, ceil(L / hop_length)]` int64."""
        _check_wav(wav)
        codes = self.model.encode(wav, bandwidth=self.bandwidth, return_dict=True).audio_codes
        return codes[0]  # [chunks = 1, B, K, T] -> [B, K, T]

    @torch.no_grad()
    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> codec latent `[B, D, T]`: codebook rows summed for k = 0..n_q-1."""
        _check_codes(codes, self.n_q, self.cardinality)
        return self.model.quantizer.decode(codes.transpose(0, 1))  # [K, B, T] -> [B, D, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> the codec's decoded audio `[B, 1, T * hop_length]`."""
        _check_codes(codes, self.n_q, self.cardinality)
        return self.model.decode(codes[None], [None], return_dict=True).audio_values


def load_codec(name: str, n_q: int, weights: str | os.PathLike | None = None) -> Codec:
    """Build a codec by name: `"encodec_24khz"` or `"encodec_32khz"` (MusicGen's, via transformers).

    Args:
        name: codec name, as in `checkpoints/manifest.toml`.
        n_q: number of codebooks in use.
        weights: a local weights file (24 kHz) or Hugging Face folder (32 kHz); None fetches them via `mbd.hub`.
    """
    if name == "encodec_24khz":
        return EncodecCodec(hub.resolve_codec_weights(name) if weights is None else weights, n_q)
    if name == "encodec_32khz":
        if weights is not None:
            return HFEncodecCodec.from_pretrained(weights, n_q, local_files_only=True)
        repo = hub.codec_entry(name).hf_repo
        try:
            return HFEncodecCodec.from_pretrained(repo, n_q, local_files_only=hub.offline())
        except OSError as err:
            raise hub.OfflineError(
                f"could not load the {name} codec from Hugging Face '{repo}' ({err}); "
                f"download https://huggingface.co/{repo} to a folder and pass it as `weights`"
            ) from err
    raise ValueError(f"unknown codec '{name}'; known codecs: {', '.join(_CODEC_NAMES)}")


# --- EnCodec's .ecdc stream format (encodec/compress.py), for EnCodec 24 kHz codes -------------------------

_ECDC_MODEL = "encodec_24khz"


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
    return int(math.ceil(audio_length / EncodecCodec.sample_rate * EncodecCodec.frame_rate))


def read_ecdc(fo: tp.BinaryIO, lm: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, tp.Any]]:
    """Codes `[1, K, T]` int64 and the JSON header of an EnCodec 24 kHz `.ecdc` stream.

    Args:
        fo: binary file object positioned at the `ECDC` magic.
        lm: EnCodec's language model, for streams written with `lm: true`; None loads it via `mbd.hub`.

    Raises:
        ValueError: the stream is not a supported, complete `.ecdc` stream.
    """
    from encodec import binary
    from encodec.quantization.ac import ArithmeticDecoder, build_stable_quantized_cdf

    try:
        header = binary.read_ecdc_header(fo)
    except (EOFError, ValueError, UnicodeDecodeError) as err:  # json errors are ValueErrors
        raise ValueError(f"bad .ecdc header: {err}") from err
    if not isinstance(header, dict) or header.get("m") != _ECDC_MODEL:
        model = header.get("m") if isinstance(header, dict) else header
        raise ValueError(f"unsupported .ecdc model {model!r}; MBD reads only '{_ECDC_MODEL}' streams")
    audio_length, n_q, use_lm = header.get("al"), header.get("nc"), header.get("lm")
    if not isinstance(audio_length, int) or not isinstance(n_q, int) or not isinstance(use_lm, bool):
        raise ValueError(f"bad .ecdc header {header}")
    if audio_length <= 0 or not 1 <= n_q <= 32:
        raise ValueError(f"bad .ecdc header {header}")
    n_frames = _ecdc_frames(audio_length)
    codes = torch.zeros(1, n_q, n_frames, dtype=torch.long)
    if use_lm:
        lm = load_encodec_lm() if lm is None else lm
        device = next(lm.parameters()).device
        decoder = ArithmeticDecoder(fo)
        states, offset = None, 0
        prev = torch.zeros(1, n_q, 1, dtype=torch.long, device=device)  # the LM sees 1 + previous codes
    else:
        unpacker = binary.BitUnpacker(int(math.log2(EncodecCodec.cardinality)), fo)
    try:
        with torch.no_grad():
            for t in range(n_frames):
                if use_lm:
                    probas, states, offset = lm(prev, states, offset)  # [1, card, K, 1]
                for k in range(n_q):
                    if use_lm:
                        cdf = build_stable_quantized_cdf(probas[0, :, k, 0].cpu(), decoder.total_range_bits,
                                                         check=False)
                        code = decoder.pull(cdf)
                    else:
                        code = unpacker.pull()
                    if code is None:
                        raise ValueError(f"truncated .ecdc stream: it ends at frame {t} of {n_frames}")
                    codes[0, k, t] = code
                if use_lm:
                    prev = 1 + codes[:, :, t : t + 1].to(device)
    except (RuntimeError, AssertionError, IndexError) as err:  # the arithmetic decoder on corrupted bits
        raise ValueError(f"corrupted .ecdc stream ({err or type(err).__name__})") from err
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
    from encodec.quantization.ac import ArithmeticCoder, build_stable_quantized_cdf

    _check_codes(codes, codes.shape[1] if codes.dim() == 3 else -1, EncodecCodec.cardinality)
    _, n_q, n_frames = codes.shape
    if codes.shape[0] != 1 or not 1 <= n_q <= 32 or n_frames < 1:
        raise ValueError(f".ecdc holds one stream [1, K <= 32, T >= 1], got codes {list(codes.shape)}")
    if audio_length is None:
        audio_length = n_frames * EncodecCodec.hop_length
        while _ecdc_frames(audio_length) > n_frames:
            audio_length -= 1
    if _ecdc_frames(audio_length) != n_frames:
        raise ValueError(f"audio_length {audio_length} gives {_ecdc_frames(audio_length)} frames, not {n_frames}")
    codes = codes.cpu()
    binary.write_ecdc_header(fo, {"m": _ECDC_MODEL, "al": audio_length, "nc": n_q, "lm": lm is not None})
    if lm is not None:
        device = next(lm.parameters()).device
        coder = ArithmeticCoder(fo)
        states, offset = None, 0
        prev = torch.zeros(1, n_q, 1, dtype=torch.long, device=device)  # the LM sees 1 + previous codes
    else:
        packer = binary.BitPacker(int(math.log2(EncodecCodec.cardinality)), fo)
    with torch.no_grad():
        for t in range(n_frames):
            if lm is not None:
                probas, states, offset = lm(prev, states, offset)  # [1, card, K, 1]
                prev = 1 + codes[:, :, t : t + 1].to(device)
            for k, value in enumerate(codes[0, :, t].tolist()):
                if lm is not None:
                    cdf = build_stable_quantized_cdf(probas[0, :, k, 0].cpu(), coder.total_range_bits, check=False)
                    coder.push(value, cdf)
                else:
                    packer.push(value)
    if lm is not None:
        coder.flush()
    else:
        packer.flush()
