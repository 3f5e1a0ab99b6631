"""Conditioning for training: the codec latent (as in AudioCraft's
audiocraft/solvers/diffusion.py) or the log-mel of the full-band clip.

`Conditioner` computes codec latents, `MelConditioner` log-mel features (`mbd.mel`, the same definition as at
inference); the recipe's `conditioner` picks one. Both map a batch of crops to `[B, D, T]`.

For the codec:
By default every crop is encoded on the fly, as AudioCraft does. With a cache folder, each file is encoded
once as a whole and its latent stored on disk; a crop then takes the latent frames under it (crop starts
are aligned to the codec hop). That is much faster; the frames near a crop's edges then see the audio
around the crop, as they do at inference on long clips, so they differ slightly from on-the-fly latents.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..codec import Codec
from ..errors import RecipeError
from ..mel import MelConfig, MelSpectrogram
from .data import AudioFile, Crop, read_clip


class Conditioner:
    """Computes `[B, D, T]` latents for a batch of crops.

    Args:
        codec: the conditioning codec (on the training device).
        cache_dir: folder for whole-file latents; None computes them per crop.
        sample_rate: training sample rate (must equal the codec's).
        length: crop length in samples.
        tag: identifies the codec and its weights in cache keys.
    """

    def __init__(self, codec: Codec, cache_dir: str | None, sample_rate: int, length: int, tag: str) -> None:
        if int(codec.sample_rate) != sample_rate:
            raise RecipeError(f"data.sample_rate {sample_rate} differs from the codec's {codec.sample_rate} Hz")
        self.codec, self.sample_rate, self.length, self.tag = codec, sample_rate, length, tag
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.frames = -(-length // int(codec.hop_length))  # latent frames of one crop
        self._memory: dict[str, torch.Tensor] = {}
        self.device = torch.device("cpu")

    @property
    def align(self) -> int:
        """Crop starts must be multiples of this."""
        return int(self.codec.hop_length) if self.cache_dir is not None else 1

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Latent of full-band audio `[B, 1, L]` -> `[B, D, ceil(L / hop)]`."""
        return self.codec.latents(self.codec.encode(wav))

    def __call__(self, wav: torch.Tensor, crops: list[Crop], files: list[AudioFile]) -> torch.Tensor:
        """Latents of the crops `wav` `[B, 1, L]` (cut from `files` at `crops`), `[B, D, frames]`."""
        if self.cache_dir is None:
            return self.encode(wav)
        hop = int(self.codec.hop_length)
        rows = [self._file_latent(files[c.file])[:, c.start // hop : c.start // hop + self.frames] for c in crops]
        return torch.stack(rows).to(wav.device)

    def _file_latent(self, file: AudioFile) -> torch.Tensor:
        """Whole-file latent `[D, T]`, from memory, the disk cache, or the codec."""
        key = self._key(file)
        if key in self._memory:
            return self._memory[key]
        assert self.cache_dir is not None
        path = self.cache_dir / f"{key}.safetensors"
        if path.is_file():
            latent = load_file(str(path))["latent"]
        else:
            length = max(file.length_at(self.sample_rate), self.length)
            wav = read_clip(file, 0, length, self.sample_rate)[None, None]  # [1, 1, L]
            latent = self.encode(wav.to(self.device))[0].float().cpu()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, overwrite=True) as tmp:
                save_file({"latent": latent.contiguous()}, str(tmp))
        self._memory[key] = latent
        return latent

    def _key(self, file: AudioFile) -> str:
        stat = os.stat(file.path)
        ident = f"{file.path}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}|{self.length}|{self.tag}"
        return hashlib.sha1(ident.encode()).hexdigest()


class MelConditioner:
    """Computes the U-Net's log-mel conditioning `[B, n_mels, ceil(L / hop)]` for a batch of crops.

    The mel of each crop is computed on the fly (cheap next to the U-Net), normalised as at inference
    (`MelSpectrogram.condition`), and its last centred frame dropped when `L` is a multiple of the hop, so
    that one frame is one bottleneck frame, as in `MultiBandDiffusion.vocode`.

    Args:
        config: the mel definition.
        sample_rate: training sample rate (must equal the mel's).
    """

    align = 1

    def __init__(self, config: MelConfig, sample_rate: int) -> None:
        if config.sample_rate != sample_rate:
            raise RecipeError(f"data.sample_rate {sample_rate} differs from mel.sample_rate {config.sample_rate}")
        self.mel = MelSpectrogram(config)
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, device: torch.device) -> None:
        self._device = torch.device(device)
        self.mel = self.mel.to(self._device)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Conditioning of full-band audio `[B, 1, L]` -> `[B, n_mels, ceil(L / hop)]`."""
        return self.mel.condition(self.mel.frame_aligned(wav.to(self._device)))

    def __call__(self, wav: torch.Tensor, crops: list[Crop], files: list[AudioFile]) -> torch.Tensor:
        """Conditioning of the crops `wav` `[B, 1, L]`, `[B, n_mels, ceil(L / hop)]`."""
        return self.encode(wav)
