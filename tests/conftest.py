"""Shared fixtures: the golden AudioCraft bundles and a stand-in codec."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"

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


class FakeCodec(nn.Module):
    """The golden bundles' stand-in codec: latents are summed codebook rows, decode returns a fixed signal."""

    def __init__(self, codebooks: torch.Tensor, reference: torch.Tensor, sample_rate: int = 24000, hop: int = 320):
        super().__init__()
        self.register_buffer("codebooks", codebooks)  # [K, N, D]
        self.register_buffer("reference", reference)  # [B, 1, L]
        self.sample_rate, self.hop_length, self.channels = sample_rate, hop, 1
        self.n_q, self.cardinality = codebooks.shape[0], codebooks.shape[1]
        self.frame_rate = sample_rate / hop

    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        z = torch.tensor(0.0)
        for k in range(codes.shape[1]):
            z = z + self.codebooks[k][codes[:, k]]  # [B, T, D]
        return z.permute(0, 2, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.reference

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def golden_available() -> bool:
    return (GOLDEN / "golden_nq4.safetensors").is_file()


# Outside CI the golden tests skip when ../shared is absent; in CI (CI=true) its absence is a failure.
requires_golden = pytest.mark.skipif(
    not golden_available() and os.environ.get("CI") != "true", reason="../shared/golden is not present"
)


def random_encodec_24khz(seed: int) -> nn.Module:
    """EnCodec 24 kHz from the encodec package's own factory, with random (non-zero) codebooks."""
    import warnings

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


def oracle(x0: torch.Tensor, schedule):  # noqa: ANN001, ANN201
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
    `FakeCodec` with hop 320 attached): enough to run `generate(latents)` in milliseconds."""
    from mbd.config import BandConfig, CodecConfig, MBDConfig
    from mbd.diffusion import PowerSchedule
    from mbd.pipeline import MultiBandDiffusion
    from mbd.unet import UNetConfig

    unet = UNetConfig(hidden=4, growth=2, depth=2, res_blocks=1, codec_dim=8)
    torch.manual_seed(seed)
    bands = tuple(BandConfig(unet, PowerSchedule(), None) for _ in range(n_bands))
    model = MultiBandDiffusion(MBDConfig(24000, CodecConfig("encodec_24khz", 4), bands)).eval()
    model.codec = FakeCodec(torch.randn(4, 16, 8), torch.zeros(1, 1, 320))
    return model
