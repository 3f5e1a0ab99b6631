"""`mbd info`: a short description of a token file, checkpoint or audio file."""

from __future__ import annotations

from pathlib import Path

import soundfile

from . import checkpoint
from .audio import AudioError
from .batch import TOKEN_SUFFIXES, printable
from .codec import EncodecCodec
from .errors import InputError
from .tokens import read_tokens

CHECKPOINT_SUFFIXES = (".pt", ".th", ".safetensors")


def describe(path: Path) -> str:
    """Describe `path` in a few lines (its name shown by `printable`); raises an `MBDError` naming the file
    when it cannot. Only regular files are opened: a FIFO or a device would block or never end."""
    if not path.is_file():
        raise InputError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES and not (suffix == ".pt" and _is_token_tensor(path)):
        return _describe_checkpoint(path)
    if suffix in TOKEN_SUFFIXES:
        tokens = read_tokens(path)
        batch, n_q, frames = tokens.codes.shape
        lines = [
            f"{printable(path)}: tokens [B={batch}, K={n_q}, T={frames}] from {tokens.source}",
            f"  code range {int(tokens.codes.min())}..{int(tokens.codes.max())}",
        ]
        if tokens.sample_rate:
            lines.append(f"  codec sample rate {tokens.sample_rate} Hz{_duration(frames, tokens.sample_rate)}")
        return "\n".join(lines)
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as err:
        raise AudioError(f"{path}: not a token file, checkpoint or readable audio file ({err})") from None
    return (
        f"{printable(path)}: audio, {info.samplerate} Hz, {info.channels} channel(s), {info.duration:.2f} s, "
        f"{info.subtype}"
    )


def _duration(frames: int, sample_rate: int) -> str:
    """`", 1.23 s"` for token frames of a codec whose hop is fixed without loading it (EnCodec 24 kHz: 320);
    empty for others (MusicGen's 32 kHz EnCodec reads its hop from its Hugging Face config)."""
    if sample_rate != EncodecCodec.sample_rate:
        return ""
    return f", {frames * EncodecCodec.hop_length / sample_rate:.2f} s"


def _is_token_tensor(path: Path) -> bool:
    try:
        checkpoint.load(path)
    except checkpoint.CheckpointError:
        return True
    return False


def _describe_checkpoint(path: Path) -> str:
    config, tensors = checkpoint.load(path)
    if config.get("family") == "spectral":
        return _describe_spectral(path, config, tensors)
    params = sum(t.numel() for name, t in tensors.items() if ".unet." in name)
    lines = [
        f"{printable(path)}: MBD checkpoint, {len(config['bands'])} band(s), {config['sample_rate']} Hz, "
        f"{_condition(config)}, {params:,} U-Net parameters"
    ]
    for i, band in enumerate(config["bands"]):
        unet, processor = band["unet"], band["processor"]
        eq = "no EQ processor" if processor is None else f"EQ processor (power_std {processor['power_std']})"
        lines.append(f"  band {i}: U-Net hidden {unet['hidden']}, depth {unet['depth']}, {eq}")
    return "\n".join(lines)


def _describe_spectral(path: Path, config: dict, tensors: dict) -> str:
    params = sum(t.numel() for name, t in tensors.items() if name.startswith("net."))
    s, net, mel = config["spectral"], config["net"], config["mel"]
    return (
        f"{printable(path)}: spectral MBD checkpoint, {s['n_bands']} STFT bands of "
        f"{s['n_fft'] // 2 // s['n_bands']} bins, "
        f"{config['sample_rate']} Hz, {mel['n_mels']}-bin log-mel input (n_fft {mel['n_fft']}, hop "
        f"{mel['hop_length']}), objective {config['objective']}, {config['steps']} steps by default\n"
        f"  shared frame network: {net['blocks']} ConvNeXt blocks, width {net['dim']}, {params:,} parameters"
    )


def _condition(config: dict) -> str:
    if config.get("features") is not None:
        mel = config["features"]
        return f"{mel['n_mels']}-bin log-mel input (n_fft {mel['n_fft']}, hop {mel['hop_length']})"
    return f"codec {config['codec']['name']} with {config['codec']['n_q']} codebooks"
