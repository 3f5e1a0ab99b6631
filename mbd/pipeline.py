"""MultiBandDiffusion: tokens or log-mels to waveform with one diffusion model per frequency band.

Each band pairs a U-Net with its noise schedule and, optionally, its EQ processor. Every band samples the
whole waveform band-limited to its range; the outputs are summed and re-EQ'd. What conditions the U-Nets,
and what the sum is re-EQ'd against, is the model's `conditioning` (`mbd.conditioning`): a codec's latents
(token models, re-EQ'd against the codec's own decode) or a log-mel (mel models, re-EQ'd against the mel).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, diffusion, flow, fused
from .band import Band
from .chunking import decode_in_chunks
from .conditioning import Conditioning, Request, conditioning_for
from .config import MBDConfig
from .diffusion import Sampler, sample
from .eq import re_eq
from .fused import Network, fuse, sample_fused, unstack_bands
from .gemm_conv import use_gemm
from .mel import MelSpectrogram
from .noise import Generators, all_draws, band_draws, clip_by_clip, per_clip
from .options import DTYPES, FAITHFUL, DType, RuntimeOptions
from .resample import at_rate
from .unet import DiffusionUNet

StepCallback = Callable[[int, int, torch.Tensor], None]
"""`on_step(band, iteration, x)`: the diffusion-space state after each sampler iteration."""


class MultiBandDiffusion(nn.Module):
    """Multi-Band Diffusion decoder (San Roman et al., 2023).

    Args:
        config: model configuration.
        codec: the codec that turns tokens into latents and audio; needed by `tokens_to_wav` and
            `regenerate` of token models, not by `generate`. Mel models (`config.features`) have none.
    """

    def __init__(self, config: MBDConfig, codec: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.bands = nn.ModuleList(Band(band, config.sample_rate) for band in config.bands)
        self.conditioning: Conditioning = conditioning_for(config, codec)
        self._fused_cache: dict[tuple, tuple[Network, DiffusionUNet]] = {}

    @property
    def codec(self) -> nn.Module | None:
        """The conditioning's codec (None for mel models, or a token model loaded without one)."""
        return self.conditioning.codec

    @property
    def features(self) -> MelSpectrogram | None:
        """The conditioning's log-mel definition (None for token models)."""
        return self.conditioning.features

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "codec":  # the codec lives in the conditioning: `model.codec = codec` attaches it there
            self.conditioning.attach_codec(value)
        else:
            super().__setattr__(name, value)

    # --- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_state(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], codec: nn.Module | None = None
    ) -> MultiBandDiffusion:
        """Build from a stored `(config, tensors)` pair, checking every key and shape."""
        model = cls(MBDConfig.from_dict(config), codec)
        expected = {name: t.shape for name, t in model.band_state().items()}
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise checkpoint.CheckpointError(
                f"checkpoint does not match its config: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
            )
        wrong = [
            f"{name}: {tuple(tensors[name].shape)} != {tuple(shape)}"
            for name, shape in expected.items()
            if tensors[name].shape != shape
        ]
        if wrong:
            raise checkpoint.CheckpointError(f"checkpoint shapes do not match its config: {wrong[:8]}")
        # Files may store fp16 weights to stay small; the model always runs from float32 weights.
        state = {name.removeprefix("bands."): t.float() if t.is_floating_point() else t for name, t in tensors.items()}
        model.bands.load_state_dict(state)
        return model.eval()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        codec: nn.Module | None = None,
        *,
        load_codec: bool = True,
        codec_weights: str | os.PathLike | None = None,
    ) -> MultiBandDiffusion:
        """Load a released AudioCraft checkpoint (`.pt`/`.th`), one of ours (`.safetensors`), or a model name.

        Args:
            name_or_path: a file, or a name from the pretrained manifest (downloaded and cached once).
            codec: the codec to use; by default the one named in the checkpoint's config is loaded.
            load_codec: set False to load only the diffusion models (enough for `generate` with `length`).
            codec_weights: a local codec weights file (24 kHz) or Hugging Face folder (32 kHz) instead of the
                cached download.
        """
        path = Path(name_or_path)
        if not path.exists():
            from . import hub

            path = hub.resolve_model(name_or_path)
        model = cls.from_state(*checkpoint.load(path), codec)
        if codec is None and load_codec:
            model.conditioning.load_codec(codec_weights)  # nothing for mel models
        return model

    def band_state(self) -> dict[str, torch.Tensor]:
        """Weights and buffers of all bands, named as in our checkpoint format."""
        return {f"bands.{name}": t for name, t in self.bands.state_dict().items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the diffusion models (never the codec) as one safetensors file."""
        checkpoint.save(path, self.config.to_dict(), self.band_state())

    # --- inference --------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def device(self) -> torch.device:
        return next(self.bands.parameters()).device

    @torch.no_grad()
    def generate(
        self,
        latents: torch.Tensor,
        *,
        length: int | None = None,
        steps: list[int] | None = None,
        generator: Generators = None,
        noise: torch.Tensor | None = None,
        on_step: StepCallback | None = None,
        sampler: Sampler = "ddpm",
        options: RuntimeOptions = FAITHFUL,
    ) -> torch.Tensor:
        """Sample every band from the conditioning (codec latent or normalised log-mel) and return their sum.

        Random draws happen in AudioCraft's order: band 0's initial noise, band 0's step noises, then
        band 1, and so on, each the shape of the output. With `generator=None` they come from torch's global
        generator, so `torch.manual_seed(s)` replays AudioCraft's own seeded output. With one generator per
        clip, a clip's output does not depend on its batch (`mbd.noise`; bit for bit on a CPU).

        Args:
            latents: the condition `[B, D, T]`: a codec latent, or a mel model's normalised log-mel.
            length: output samples; default `T * hop_length` (e.g. 320 for EnCodec 24 kHz latents).
            steps: descending step list ending in 0; default AudioCraft's 20-step list for "ddpm" and
                `spaced_steps(10)` for "ddim" and "dpm++2m" (see `step_list`).
            generator: source of all random draws: one generator, or a sequence of one per clip (or per equal
                group of consecutive clips; see `mbd.noise.randn`).
            noise: instead of drawing, use these standard Gaussian draws `[n_bands, K, B, C, length]`: index
                0 is each band's initial noise, index i the noise added after iteration i - 1
                (K = len(steps) - 1 for "ddpm", K >= 1 otherwise).
            on_step: called with `(band, iteration, state)` after every sampler iteration.
            sampler: "ddpm" (AudioCraft's ancestral loop), "ddim" or "dpm++2m" (`mbd.diffusion`).
            options: precision, fusion, compilation and chunking; the default is the faithful path.

        Returns:
            audio `[B, C, length]`.
        """
        if latents.dim() != 3:
            raise ValueError(f"latents must be [B, D, T], got {tuple(latents.shape)}")
        length = latents.shape[-1] * self.hop_length if length is None else int(length)
        num_steps = min(band.schedule.num_steps for band in self.bands)
        steps = diffusion.resolve_steps(steps, num_steps, sampler)  # the one check of the step list
        latents = latents.to(device=self.device, dtype=next(self.bands.parameters()).dtype)
        if options.chunk_seconds is None:
            return self._generate(latents, length, steps, generator, noise, on_step, sampler, options)
        if noise is not None:
            raise ValueError("pass `generator`, not `noise`, with chunk_seconds")
        frame_rate = self.sample_rate / self.hop_length
        chunk = max(1, round(options.chunk_seconds * frame_rate))
        overlap = min(round(options.overlap_seconds * frame_rate), chunk - 1)

        def decode(span: torch.Tensor, samples: int) -> torch.Tensor:
            return self._generate(span, samples, steps, generator, None, on_step, sampler, options)

        return decode_in_chunks(decode, latents, self.hop_length, length, chunk, overlap)

    def step_list(self, evaluations: int | None = None, sampler: Sampler = "ddpm") -> list[int]:
        """The steps a sampler visits for a number of model evaluations (see `mbd.diffusion.step_list`)."""
        return diffusion.step_list(self.config.bands[0].schedule.num_steps, evaluations, sampler)

    def _generate(
        self,
        latents: torch.Tensor,
        length: int,
        steps: list[int],
        generator: Generators,
        noise: torch.Tensor | None,
        on_step: StepCallback | None,
        sampler: Sampler,
        options: RuntimeOptions,
    ) -> torch.Tensor:
        """`generate` on one span: latents `[B, D, T]` to audio `[B, C, length]`; `steps` already checked."""
        shape = (latents.shape[0], self.config.bands[0].unet.channels, length)
        alone = per_clip(generator) and self.device.type == "cpu"  # see `mbd.noise.clip_by_clip`
        out = torch.zeros(shape, device=self.device, dtype=latents.dtype)
        n_draws = len(steps) - 1 if sampler == "ddpm" else 1
        n_bands = len(self.bands)
        schedules = [band.schedule for band in self.bands]
        flows = any(band.config.objective == "flow" for band in self.bands)
        configs = {band.config.unet for band in self.bands}
        if options.fused and not flows and len(configs) == 1 and fused.fused_pays(configs.pop(), self.device):
            draws = all_draws(shape, n_draws, n_bands, generator, noise, out)
            network, fused_net = self.fused_network(options.dtype, options.compile)
            network = clip_by_clip(network) if alone else network
            callback = None if on_step is None else lambda i, x: self._unstacked_step(on_step, i, x)
            x = sample_fused(network, fused_net, latents, schedules, steps, draws, sampler, options, callback, alone)
            for band, x_b in zip(self.bands, x):
                out += band.unproject(x_b)
            return out
        autocast = torch.autocast(self.device.type, options.torch_dtype, enabled=options.dtype != "float32")
        for b, band in enumerate(self.bands):
            unet = clip_by_clip(band.unet) if alone else band.unet

            def denoise(x: torch.Tensor, t: int | torch.Tensor, unet: Callable = unet) -> torch.Tensor:
                with autocast:
                    return unet(x, t, latents).float()

            draw = band_draws(shape, n_draws, b, n_bands, generator, noise, out)
            callback = None if on_step is None else lambda i, x, b=b: on_step(b, i, x)
            if band.config.objective == "flow":  # len(steps) - 1 Euler steps on a uniform time grid
                num = band.schedule.num_steps

                def velocity(x: torch.Tensor, t: torch.Tensor, denoise=denoise, num: int = num) -> torch.Tensor:
                    return denoise(x, flow.step_index(t, num))

                x = flow.sample(velocity, draw(), flow.FlowSchedule().times(len(steps) - 1), on_step=callback)
                out += band.unproject(x)
                continue
            out += band.unproject(sample(sampler, denoise, draw, band.schedule, steps, callback))
        return out

    def _unstacked_step(self, on_step: StepCallback, i: int, x: torch.Tensor) -> None:
        for b, x_b in enumerate(unstack_bands(x, len(self.bands))):
            on_step(b, i, x_b)

    def fused_network(self, dtype: DType = "float32", compile: bool = False) -> tuple[Network, DiffusionUNet]:
        """The bands' U-Nets fused into one network (built once per device, dtype and weights version).

        Returns:
            `(network, fused)`: the function to call (`fused.denoise`, compiled or not) and the band-stacked
            `DiffusionUNet` it belongs to.
        """
        params = list(self.bands.parameters())
        key = (self.device, dtype, compile, tuple((id(p), p._version) for p in params))
        cache = self._fused_cache
        if key not in cache:
            cache.clear()  # keep at most one extra copy of the weights
            fused_net = fuse([band.unet for band in self.bands]).to(DTYPES[dtype]).eval()
            if self.device.type == "cpu" and not compile:  # pays on CPU only (benchmarks/README.md)
                use_gemm(fused_net)
            network = torch.compile(fused_net.denoise, dynamic=False) if compile else fused_net.denoise
            cache[key] = (network, fused_net)
        return cache[key]

    @property
    def hop_length(self) -> int:
        """Audio samples per condition frame (latent or mel frame), from the conditioning."""
        return self.conditioning.hop_length

    @property
    def min_samples(self) -> int:
        """The shortest audio `regenerate` takes, at the model's rate (from the conditioning)."""
        return self.conditioning.min_samples

    def re_eq(self, wav: torch.Tensor, ref: torch.Tensor, n_bands: int = 32, strictness: float = 1.0) -> torch.Tensor:
        """Match the band energies of `wav` `[B, C, L]` to `ref` `[B, C, L]` (see `mbd.eq.re_eq`)."""
        return re_eq(wav, ref, self.sample_rate, n_bands, strictness)

    def _run(
        self,
        request: Request,
        steps: list[int] | None,
        generator: Generators,
        noise: torch.Tensor | None,
        sampler: Sampler,
        options: RuntimeOptions,
    ) -> torch.Tensor:
        """Sample a request's condition to its length and finish it (re-EQ)."""
        kwargs = dict(steps=steps, generator=generator, noise=noise, sampler=sampler, options=options)
        return request.finish(self.generate(request.condition, length=request.length, **kwargs))

    @torch.no_grad()
    def tokens_to_wav(
        self,
        tokens: torch.Tensor,
        n_bands: int = 32,
        *,
        steps: list[int] | None = None,
        generator: Generators = None,
        noise: torch.Tensor | None = None,
        sampler: Sampler = "ddpm",
        options: RuntimeOptions = FAITHFUL,
        per_clip_eq: bool = False,
    ) -> torch.Tensor:
        """Decode codec tokens `[B, K, T]` to audio `[B, C, T * hop]`, re-EQ'd against the codec's decode
        (token models only).

        The re-EQ runs once over the whole output, also when `options.chunk_seconds` decodes it in chunks;
        then the codec's reference decode is made in pieces of that length too (1 s of context on each side,
        `mbd.chunking.decode_codes_in_pieces`) and the re-EQ streams over segments, so memory follows the
        chunk, not the clip.
        Like AudioCraft it equalises the batch jointly (one gain per band for all clips); `per_clip_eq`
        equalises each clip against its own reference instead, so that a clip's output does not depend on
        the rest of the batch. The other arguments are those of `generate`.
        """
        request = self.conditioning.from_tokens(tokens.to(self.device), n_bands, per_clip_eq, options.chunk_seconds)
        return self._run(request, steps, generator, noise, sampler, options)

    @torch.no_grad()
    def regenerate(
        self,
        wav: torch.Tensor,
        sample_rate: int,
        *,
        steps: list[int] | None = None,
        generator: Generators = None,
        sampler: Sampler = "ddpm",
        options: RuntimeOptions = FAITHFUL,
    ) -> torch.Tensor:
        """Turn audio `[B, C, L]` into the model's condition and decode it again, at the input's rate.

        Token models encode it with the codec and, as in AudioCraft, do not re-EQ; mel models vocode each
        channel's log-mel (re-EQ'd against it, as `vocode`). The other arguments are those of `generate`.
        """
        def process(wav: torch.Tensor) -> torch.Tensor:
            return self._run(self.conditioning.from_audio(wav), steps, generator, None, sampler, options)

        return at_rate(wav.to(self.device), sample_rate, self.sample_rate, self.min_samples, process)

    @torch.no_grad()
    def vocode(
        self,
        mel: torch.Tensor,
        *,
        steps: list[int] | None = None,
        generator: Generators = None,
        sampler: Sampler = "ddpm",
        options: RuntimeOptions = FAITHFUL,
        mel_eq: float = 1.0,
    ) -> torch.Tensor:
        """Log-mel spectrogram to audio (mel models only).

        The mel follows the model's `config.features` (e.g. Vocos' 24 kHz, hop 256, 100-bin natural-log
        magnitude mel; see `mbd.mel`). In place of the codec models' re-EQ against the codec decode, the sum of
        the bands is re-EQ'd against the mel itself, per frame and mel band (`MelSpectrogram.equalize`; chosen
        by measurement, see checkpoints/mel24k.md).

        Args:
            mel: log-mel `[n_mels, T]` or `[B, n_mels, T]`; checked by `MelSpectrogram.check` (errors for
                the wrong bins, a transposed input or NaN/inf; a warning for a linear-looking scale).
            steps, generator, sampler, options: as for `generate`.
            mel_eq: strictness of that re-EQ, 0 (off) to 1 (match the mel fully).

        Returns:
            audio `[B, 1, T * hop]` (`[1, T * hop]` for a `[n_mels, T]` input).
        """
        return self._run(self.conditioning.from_mel(mel, mel_eq), steps, generator, None, sampler, options)
