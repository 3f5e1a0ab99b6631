from __future__ import annotations

import pytest
import torch

from mbd.unet import DiffusionUNet, UNetConfig

TINY = UNetConfig(hidden=4, growth=2, depth=3, codec_dim=16, num_steps=50)


@pytest.mark.parametrize("length", [1, 63, 64, 257, 1001])
def test_output_shape_matches_input(length: int) -> None:
    torch.manual_seed(0)
    unet = DiffusionUNet(TINY)
    frames = max(1, length // 64)
    out = unet(torch.randn(2, 1, length), 7, torch.randn(2, 16, frames))
    assert out.shape == (2, 1, length)
    assert torch.isfinite(out).all()


def test_step_tensor_equals_int_step() -> None:
    torch.manual_seed(0)
    unet = DiffusionUNet(TINY)
    x, c = torch.randn(2, 1, 256), torch.randn(2, 16, 4)
    torch.testing.assert_close(unet(x, 9, c), unet(x, torch.tensor([9, 9]), c), rtol=0, atol=0)
    assert not torch.allclose(unet(x, 9, c), unet(x, 10, c))


def test_condition_reaches_the_output() -> None:
    torch.manual_seed(0)
    unet = DiffusionUNet(TINY)
    x = torch.randn(1, 1, 256)
    assert not torch.allclose(unet(x, 3, torch.randn(1, 16, 4)), unet(x, 3, torch.randn(1, 16, 4)))


def test_condition_errors() -> None:
    unet = DiffusionUNet(TINY)
    x = torch.randn(1, 1, 256)
    with pytest.raises(ValueError, match=r"\[B, 16, T\]"):
        unet(x, 3, torch.randn(1, 8, 4))
    with pytest.raises(ValueError, match="too short"):
        unet(x, 3, torch.randn(1, 16, 40))
    with pytest.raises(ValueError, match="conditional"):
        unet(x, 3)
    with pytest.raises(ValueError, match=r"x must be"):
        unet(torch.randn(1, 2, 256), 3, torch.randn(1, 16, 4))


def test_channel_plan() -> None:
    assert UNetConfig().level_channels() == [48, 192, 768, 3072]
    assert UNetConfig(hidden=8, growth=2.0).level_channels() == [8, 16, 32, 64]
    assert UNetConfig(hidden=48, growth=4, max_channels=1000).level_channels() == [48, 192, 768, 1000]
