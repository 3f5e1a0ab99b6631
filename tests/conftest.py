"""Shared fixtures and builders: the golden AudioCraft bundles (tests/data), stand-in codecs, tiny models and
training runs. Test files import builders from here, never from each other."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from torch import nn

from mbd import MultiBandDiffusion
from mbd.codec import EncodecCodec
from mbd.config import BandConfig, CodecConfig, MBDConfig
from mbd.diffusion import PowerSchedule
from mbd.mel import MelConfig
from mbd.processor import ProcessorConfig
from mbd.unet import UNetConfig

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "data"
"""The AudioCraft reference checkpoints and the tensors AudioCraft computed with them (see data/README.md)."""

# --- golden bundles --------------------------------------------------------------------------------------

# Worst absolute difference seen per golden tensor group, printed at the end of the run.
WORST: dict[str, float] = {}


def record(group: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    """Assert `got` matches the golden `want` within `atol` and remember the difference."""
    assert got.shape == want.shape, f"{group}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got.detach().float() - want.float()).abs().max().item()
    WORST[group] = max(WORST.get(group, 0.0), diff)
    assert diff <= atol, f"{group}: max abs difference {diff:.3g} > {atol:g}"


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    if WORST:
        terminalreporter.section("golden parity: worst max-abs difference per tensor group")
        for group, diff in sorted(WORST.items()):
            terminalreporter.write_line(f"{group:48s} {diff:.3e}")


class Golden:
    """One golden bundle: tensors, metadata and the AudioCraft checkpoint that produced them."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.tensors = load_file(str(GOLDEN / f"golden_{tag}.safetensors"))
        self.meta = json.loads((GOLDEN / f"golden_{tag}.json").read_text())
        self.checkpoint = GOLDEN / self.meta["checkpoint"]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.tensors if k.startswith(prefix))


# --- codecs ----------------------------------------------------------------------------------------------


def random_encodec_24khz(seed: int) -> nn.Module:
    """EnCodec 24 kHz from the encodec package's own factory, with random (non-zero) codebooks."""
    from encodec import EncodecModel

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    for layer in model.quantizer.vq.layers:  # k-means init leaves them at zero until training
        layer._codebook.embed.normal_()
        layer._codebook.inited.fill_(1)
    return model.eval()


@pytest.fixture(scope="session")
def encodec_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised EnCodec 24 kHz saved as a weights file, loaded like the real one."""
    path = tmp_path_factory.mktemp("encodec") / "encodec_24khz-random.th"
    torch.save(random_encodec_24khz(seed=0).state_dict(), path)
    return path


def encodec_with_codebooks(base: Path, codebooks: torch.Tensor, out: Path) -> Path:
    """Copy the EnCodec weights file `base` to `out`, its first K codebooks replaced by `codebooks` [K, 1024, 128]."""
    state = torch.load(base, weights_only=True)
    for k, table in enumerate(codebooks):
        state[f"quantizer.vq.layers.{k}._codebook.embed"] = table.clone()
    torch.save(state, out)
    return out


class GoldenCodec(EncodecCodec):
    """The golden bundles' codec: a real `EncodecCodec` for the latents, whose decode returns a fixed signal.

    AudioCraft's bundles were made with a stand-in whose decode returned `in.ref_wav`; the latents here come
    from this package's EnCodec path with the bundle's codebooks loaded into EnCodec's quantizer.

    Args:
        weights: an EnCodec weights file holding the bundle's codebooks (see `encodec_with_codebooks`).
        n_q: codebooks in use.
        reference: what `decode` returns, `[B, 1, L]`.
    """

    def __init__(self, weights: Path, n_q: int, reference: torch.Tensor) -> None:
        super().__init__(weights, n_q)
        self.register_buffer("reference", reference)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.reference


class FakeCodec(nn.Module):
    """A codebook codec: latents are summed codebook rows `[B, D, T]`; decode returns a fixed signal.

    Args:
        codebooks: `[K, N, D]`.
        reference: what `decode` returns, `[B, 1, L]`.
        sample_rate, hop: the codec's rate and audio samples per token frame.
        codes: the clips `[B, K, T]` whose decodes are `reference`'s rows, so that any subset of them (e.g.
            one clip at a time) decodes to its own rows; None: `decode` always returns all of `reference`.
    """

    def __init__(
        self,
        codebooks: torch.Tensor,
        reference: torch.Tensor,
        sample_rate: int = 24000,
        hop: int = 320,
        codes: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("codebooks", codebooks)
        self.register_buffer("reference", reference)
        self.sample_rate, self.hop_length = sample_rate, hop
        self.n_q, self.cardinality = codebooks.shape[0], codebooks.shape[1]
        self.codes = codes

    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(self.codebooks[k][codes[:, k]] for k in range(codes.shape[1])).permute(0, 2, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.codes is None:
            return self.reference
        rows = [next(i for i, known in enumerate(self.codes) if torch.equal(known, clip)) for clip in codes]
        return self.reference[rows]


class ToyCodec(nn.Module):
    """Tokens are already latents `[B, D, T]`; decode returns a fixed reference `[B, 1, L]`.

    Args:
        reference: what `decode` returns.
        hop: audio samples per token frame.
    """

    def __init__(self, reference: torch.Tensor, hop: int) -> None:
        super().__init__()
        self.reference = reference
        self.hop_length = hop

    def latents(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.reference


# --- tiny models -----------------------------------------------------------------------------------------

TINY_UNET = UNetConfig(hidden=4, growth=2, depth=3, res_blocks=1, codec_dim=8, num_steps=1000)
TINY_CODEC = CodecConfig("encodec_24khz", 4)


def tiny(
    seed: int = 0,
    unet: UNetConfig = TINY_UNET,
    codec: CodecConfig | None = TINY_CODEC,
    features: MelConfig | None = None,
) -> MultiBandDiffusion:
    """A random 2-band 24 kHz model (band 1 with a fitted EQ processor): a token model, or a mel model with
    `features`."""
    torch.manual_seed(seed)
    bands = (
        BandConfig(unet, PowerSchedule(), None),
        BandConfig(unet, PowerSchedule(), ProcessorConfig(n_bands=4, num_samples=8, power_std=0.5)),
    )
    model = MultiBandDiffusion(MBDConfig(24000, codec, bands, features=features))
    model.bands[1].processor.update(torch.randn(8, 1, 4800), generator=torch.Generator().manual_seed(1))
    return model.eval()


MEL_UNET = UNetConfig(hidden=4, growth=1, depth=4, res_blocks=1, codec_dim=100, num_steps=1000)


def tiny_mel_model(seed: int = 0) -> MultiBandDiffusion:
    """`tiny` conditioned on the default 100-bin log-mel instead of codec latents."""
    return tiny(seed, MEL_UNET, codec=None, features=MelConfig())


TINY_MBD_UNET = UNetConfig(
    hidden=8, depth=3, res_blocks=2, norm_groups=2, kernel=4, stride=2, growth=2.0, codec_dim=16
)
HOP = 32
"""Audio samples per latent frame for `tiny_mbd` (its U-Net downsamples by 2**3; latents are stretched)."""


def tiny_mbd(schedules: list[PowerSchedule] | None = None, unets: list[UNetConfig] | None = None) -> MultiBandDiffusion:
    """Three 16 kHz bands, the middle one without a processor, random weights large enough to matter."""
    schedules = schedules or [PowerSchedule()] * 3
    unets = unets or [TINY_MBD_UNET] * 3
    bands = tuple(
        BandConfig(u, s, None if b == 1 else ProcessorConfig(n_bands=4, power_std=0.7))
        for b, (u, s) in enumerate(zip(unets, schedules))
    )
    model = MultiBandDiffusion(MBDConfig(16000, CodecConfig("test", 2), bands))
    gen = torch.Generator().manual_seed(0)
    for name, p in model.bands.named_parameters():
        p.data = torch.randn(p.shape, generator=gen) * (0.3 if "weight" in name else 0.1)
    for band in model.bands:
        if band.processor is not None:
            band.processor.counts.fill_(10.0)
            band.processor.sum_x.copy_(torch.rand(4, generator=gen) * 0.1)
            band.processor.sum_x2.copy_(1 + torch.rand(4, generator=gen) * 10)
            band.processor.sum_target_x2.copy_(1 + torch.rand(4, generator=gen) * 10)
    return model.eval()


def latents(frames: int = 10, batch: int = 2) -> torch.Tensor:
    """Random latents `[batch, 16, frames]` for `tiny_mbd`."""
    return torch.randn(batch, 16, frames, generator=torch.Generator().manual_seed(1))


def oracle(x0: torch.Tensor, schedule: PowerSchedule):  # noqa: ANN201
    """The exact eps of the forward process x_t = sqrt(ab) x0 / rescale + sqrt(1 - ab) s eps (s = noise_scale)
    for a data set holding the single signal x0 `[B, C, L]`, in float64: `denoise(x, t) -> eps`."""
    alpha_bars = schedule.alpha_bars().double()

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        ab = alpha_bars[t]
        clean = ab.sqrt() * x0.double() / schedule.rescale
        return ((x.double() - clean) / ((1 - ab).sqrt() * schedule.noise_scale)).float()

    return denoise


def tiny_diffusion_model(n_bands: int = 2, seed: int = 0) -> nn.Module:
    """A random 24 kHz `MultiBandDiffusion` of `n_bands` tiny U-Nets (latents `[B, 8, T]`, no processor, a
    `ToyCodec` with hop 320 attached): enough to run `generate(latents)` in milliseconds."""
    from mbd.config import BandConfig, CodecConfig, MBDConfig
    from mbd.diffusion import PowerSchedule
    from mbd.pipeline import MultiBandDiffusion
    from mbd.unet import UNetConfig

    unet = UNetConfig(hidden=4, growth=2, depth=2, res_blocks=1, codec_dim=8)
    torch.manual_seed(seed)
    bands = tuple(BandConfig(unet, PowerSchedule(), None) for _ in range(n_bands))
    model = MultiBandDiffusion(MBDConfig(24000, CodecConfig("encodec_24khz", 4), bands)).eval()
    model.codec = ToyCodec(torch.zeros(1, 1, 320), hop=320)
    return model


# --- training runs ---------------------------------------------------------------------------------------

SR = 24_000

TINY_RECIPE = """
name = "test"
seed = 3
n_bands = 4
[data]
paths = ["audio"]
segment_duration = 0.1
valid_clips = 1
valid_duration = 0.1
[codec]
n_q = 2
weights = "encodec.th"
[unet]
hidden = 4
growth = 2
depth = 2
res_blocks = 1
[processor]
num_samples = 8
[optim]
lr = 1e-2
batch_size = 4
steps = 20
[log]
log_every = 1
valid_every = 0
checkpoint_every = 5
valid_stride = 250
tensorboard = false
progress = false
[[band]]
index = 0
[[band]]
index = 2
processor = true
power_std = 0.4
"""


def write_audio(folder: Path, n: int = 5, seconds: float = 0.6) -> None:
    """`n` 24 kHz mono clips (tones plus noise), a 48 kHz stereo FLAC and an unreadable file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n):
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / f"clip{i}.wav", wav.astype(np.float32), SR)
    t48 = np.arange(int(seconds * 48_000)) / 48_000
    tone = 0.2 * np.sin(2 * np.pi * 440 * t48)
    sf.write(folder / "stereo48k.flac", np.stack([tone, tone], axis=1).astype(np.float32), 48_000)
    (folder / "broken.wav").write_bytes(b"RIFF not really audio")


def make_run(tmp_path: Path, extra: str = "", n_files: int = 5) -> Path:
    """A run folder with synthetic audio, a random EnCodec weights file and the tiny recipe."""
    write_audio(tmp_path / "audio", n_files)
    weights = tmp_path / "encodec.th"
    if not weights.exists():
        torch.save(random_encodec_24khz(seed=0).state_dict(), weights)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(TINY_RECIPE + extra)
    return recipe


# --- fast variants of the builders above -------------------------------------------------------------------


@pytest.fixture(scope="session")
def fast_run(encodec_weights: Path):  # noqa: ANN201
    """`make_run` that copies the session's random EnCodec weights file (the same seed-0 model `make_run`
    would build and save) instead of building it again: `fast_run(tmp_path, extra="", n_files=5) -> recipe`."""
    import shutil

    def make(tmp_path: Path, extra: str = "", n_files: int = 5) -> Path:
        tmp_path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(encodec_weights, tmp_path / "encodec.th")
        return make_run(tmp_path, extra, n_files)

    return make


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training runs skip drawing curves.png (matplotlib takes about a second a figure); for tests that check
    something else."""
    monkeypatch.setattr("mbd.train.trainer.plot_curves", lambda *args, **kwargs: False)
    monkeypatch.setattr("mbd.train.spectral_trainer.plot_curves", lambda *args, **kwargs: False)


@pytest.fixture(scope="session")
def encodec_codec(encodec_weights: Path) -> EncodecCodec:
    """`EncodecCodec(encodec_weights, 4)`, built once per session: tests share it, so they change it only
    through `monkeypatch`."""
    return EncodecCodec(encodec_weights, 4)


@pytest.fixture(scope="session")
def tiny_token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny` on EnCodec 24 kHz's 128-d latents (4 codebooks) saved as a model file, for `mbd.decode` and the
    `mbd` command with `--codec-weights encodec_weights`: a token model cheaper to run than the golden ones."""
    import dataclasses

    path = tmp_path_factory.mktemp("model") / "tiny_tokens.safetensors"
    tiny(unet=dataclasses.replace(TINY_UNET, codec_dim=128)).save(path)
    return path
