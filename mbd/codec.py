"""The EnCodec adapter: tokens -> codec latent, tokens -> audio, audio -> tokens (as AudioCraft's
`CompressionModel.decode_latent`, audiocraft/models/encodec.py).

MBD is conditioned on the codec latent: for codes `[B, K, T]` the latent is the sum of the rows of the K
codebooks, `z[b, :, t] = sum_k E_k[codes[b, k, t]]`, i.e. the quantized EnCodec embedding just before the
decoder. This module and `mbd.ecdc` (EnCodec's stream format) are the only ones that import a codec library
(`encodec`, optionally `transformers`); codec weights are fetched by `mbd.hub` and never enter MBD
checkpoints. `validate_codes` is the one check of codes, for token files, the API and the codecs.
"""

from __future__ import annotations

import os
import typing as tp
import warnings

import numpy as np
import torch
from torch import nn

from mbd import hub
from mbd.chunking import encode_in_pieces
from mbd.errors import InputError, TokenError

ENCODEC_24KHZ_BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)
_CODEC_NAMES = ("encodec_24khz", "encodec_32khz")
ENCODE_CHUNK_SECONDS = 60.0
"""Audio longer than this is encoded in pieces of this length (1 s of context on each side included), so
the encoder's activations (~13 MB per second of audio on CPU) stay bounded; shorter audio in one call."""


@tp.runtime_checkable
class Codec(tp.Protocol):
    """What MBD needs from a neural audio codec. Audio is mono, `[B, 1, L]`."""

    sample_rate: int
    hop_length: int
    n_q: int
    cardinality: int

    def encode(self, wav: torch.Tensor, chunk_seconds: float | None = ENCODE_CHUNK_SECONDS) -> torch.Tensor:
        """Audio `[B, 1, L]` float -> codes `[B, n_q, T]` int64, `T = ceil(L / hop_length)`; audio longer than
        `chunk_seconds` is encoded in pieces (`mbd.chunking.encode_in_pieces`)."""
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
        raise InputError(f"EnCodec 24 kHz has no {bw} kbps mode; choose one of {ENCODEC_24KHZ_BANDWIDTHS}")
    return round(bw * 1000 / (75 * 10))


def n_q_to_bandwidth(n_q: int) -> float:
    """Bandwidth in kbps of EnCodec 24 kHz with `n_q` codebooks (2/4/8/16/32 -> 1.5/3/6/12/24)."""
    for bw in ENCODEC_24KHZ_BANDWIDTHS:
        if bandwidth_to_n_q(bw) == n_q:
            return bw
    valid = [bandwidth_to_n_q(bw) for bw in ENCODEC_24KHZ_BANDWIDTHS]
    raise InputError(f"EnCodec 24 kHz cannot use n_q={n_q}; choose one of {valid}")


def _to_tensor(array: object, name: str) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        if array.dtype.kind not in "biuf":
            raise TokenError(f"{name}: codes must be integers, got an array of {array.dtype}")
        from .arrays import native  # here: mbd.arrays -> mbd.memory -> mbd.codec

        array = native(array)  # e.g. a big-endian file: converted, as torch reads native order only
        if array.dtype.kind == "u":
            array = array.astype(np.int64)  # torch lacks most ops on wide unsigned types
        return torch.from_numpy(np.ascontiguousarray(array))
    if isinstance(array, torch.Tensor):
        if array.layout != torch.strided:
            raise TokenError(f"{name}: codes must be a dense tensor, got a {array.layout} one")
        unsigned = (torch.uint16, torch.uint32, torch.uint64)
        return array.detach().to(torch.int64 if array.dtype in unsigned else array.dtype)
    raise TokenError(f"{name}: expected an array of codes, got {type(array).__name__}")


def validate_codes(
    codes: object, *, n_q: int | None, cardinality: int | None, name: str, min_frames: int = 2
) -> torch.Tensor:
    """Check codes and return them as an int64 tensor `[B, K, T]` on their device.

    Args:
        codes: integer codes `[K, T]`, `[B, K, T]` or Hugging Face `audio_codes` `[1, B, K, T]`
            (a tensor or numpy array).
        n_q: the number of codebooks K the model expects; None accepts any.
        cardinality: codebook size; codes must lie in [0, cardinality). None checks only >= 0.
        name: the file (or other source) to name in error messages.
        min_frames: the fewest frames T accepted (MBD needs 2; a codec alone needs 1).

    Raises:
        TokenError: float, bool or NaN codes, out-of-range values, a wrong shape or number of codebooks,
            or fewer than `min_frames` frames.
    """
    codes = _to_tensor(codes, name)
    if codes.dtype.is_floating_point or codes.dtype.is_complex:
        nan = " (with NaN values)" if codes.is_floating_point() and bool(codes.isnan().any()) else ""
        raise TokenError(f"{name}: codes must be integers, got {codes.dtype}{nan}")
    if codes.dtype == torch.bool:
        raise TokenError(f"{name}: codes must be integers, got booleans")
    if codes.dim() == 4:
        if codes.shape[0] != 1:
            raise TokenError(f"{name}: codes {list(codes.shape)} look like Hugging Face audio_codes "
                             f"[chunks, B, K, T] with {codes.shape[0]} chunks; only unchunked codes (1 chunk) work")
        codes = codes[0]
    elif codes.dim() == 2:
        codes = codes[None]  # [K, T] -> [1, K, T]
    if codes.dim() != 3:
        raise TokenError(f"{name}: codes must be [K, T] or [B, K, T], got shape {list(codes.shape)}")
    batch, n_codebooks, frames = codes.shape
    if batch == 0 or n_codebooks == 0 or frames == 0:
        raise TokenError(f"{name}: codes are empty (shape {list(codes.shape)})")
    if n_q is not None and n_codebooks != n_q:
        raise TokenError(f"{name}: codes have {n_codebooks} codebooks but the model expects {n_q}; "
                         f"use a model made for {n_codebooks} codebooks")
    if frames < min_frames:
        raise TokenError(f"{name}: codes have {frames} frame; at least {min_frames} are needed")
    low, high = int(codes.min()), int(codes.max())
    if low < 0:
        raise TokenError(f"{name}: codes must be >= 0, found {low}")
    if cardinality is not None and high >= cardinality:
        raise TokenError(f"{name}: codes must be < {cardinality} (the codebook size), found {high}")
    return codes.to(torch.int64).contiguous()


def _check_wav(wav: torch.Tensor) -> None:
    if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point or wav.dim() != 3:
        raise InputError("wav must be a float tensor [B, 1, L]")
    if wav.shape[1] != 1:
        raise InputError(f"wav must be mono [B, 1, L], got {wav.shape[1]} channels")


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
    def encode(self, wav: torch.Tensor, chunk_seconds: float | None = ENCODE_CHUNK_SECONDS) -> torch.Tensor:
        """Audio `[B, 1, L]` -> codes `[B, n_q, ceil(L / 320)]` int64.

        Args:
            wav: mono audio at 24 kHz.
            chunk_seconds: audio longer than this is encoded in pieces of at most this length, each with
                1 s of context on both sides (`mbd.chunking.encode_in_pieces`); None encodes in one call.
        """
        _check_wav(wav)
        return encode_in_pieces(self._encode, wav, self.hop_length, self.sample_rate, chunk_seconds)

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        ((codes, scale),) = self.model.encode(wav)  # one frame: the 24 kHz model is not segmented
        assert scale is None
        return codes

    @torch.no_grad()
    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> codec latent `[B, 128, T]`: codebook rows summed for k = 0..n_q-1."""
        codes = validate_codes(codes, n_q=self.n_q, cardinality=self.cardinality, name="codes", min_frames=1)
        return self.model.quantizer.decode(codes.transpose(0, 1))  # [K, B, T] -> [B, 128, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> EnCodec's decoded audio `[B, 1, T * 320]`."""
        codes = validate_codes(codes, n_q=self.n_q, cardinality=self.cardinality, name="codes", min_frames=1)
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
            raise InputError("MBD needs an EnCodec without normalisation or chunking")
        self.model = model.eval()
        self.sample_rate = int(config.sampling_rate)
        self.hop_length = int(config.hop_length)
        self.cardinality = int(config.codebook_size)
        self.n_q = int(config.num_quantizers) if n_q is None else n_q
        rvq = model.quantizer
        bandwidths = [bw for bw in config.target_bandwidths if rvq.get_num_quantizers_for_bandwidth(bw) == self.n_q]
        if not bandwidths:
            raise InputError(f"this codec has no bandwidth with n_q={self.n_q}; it has {config.target_bandwidths}")
        self.bandwidth = float(bandwidths[0])

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, n_q: int | None = None, *, local_files_only: bool = False
    ) -> HFEncodecCodec:
        """Load with `transformers.EncodecModel.from_pretrained` (a hub repo id or a local folder)."""
        model = _transformers().EncodecModel.from_pretrained(name_or_path, local_files_only=local_files_only)
        return cls(model, n_q)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, chunk_seconds: float | None = ENCODE_CHUNK_SECONDS) -> torch.Tensor:
        """Audio `[B, 1, L]` -> codes `[B, n_q, ceil(L / hop_length)]` int64.

        Args:
            wav: mono audio at the codec's rate.
            chunk_seconds: as for `EncodecCodec.encode`.
        """
        _check_wav(wav)
        return encode_in_pieces(self._encode, wav, self.hop_length, self.sample_rate, chunk_seconds)

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        codes = self.model.encode(wav, bandwidth=self.bandwidth, return_dict=True).audio_codes
        return codes[0]  # [chunks = 1, B, K, T] -> [B, K, T]

    @torch.no_grad()
    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> codec latent `[B, D, T]`: codebook rows summed for k = 0..n_q-1."""
        codes = validate_codes(codes, n_q=self.n_q, cardinality=self.cardinality, name="codes", min_frames=1)
        return self.model.quantizer.decode(codes.transpose(0, 1))  # [K, B, T] -> [B, D, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, n_q, T]` -> the codec's decoded audio `[B, 1, T * hop_length]`."""
        codes = validate_codes(codes, n_q=self.n_q, cardinality=self.cardinality, name="codes", min_frames=1)
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
    raise InputError(f"unknown codec '{name}'; known codecs: {', '.join(_CODEC_NAMES)}")
