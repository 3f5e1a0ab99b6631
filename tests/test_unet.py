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


def test_bottleneck_length_by_hand() -> None:
    released = UNetConfig()  # kernel 8, stride 4, padding 2: ceil(L / 4) per level
    assert released.bottleneck_length(24000) == 94  # 6000, 1500, 375, 94
    assert released.bottleneck_length(1) == 1
    assert released.max_condition_frames(24000) == 188
    odd = UNetConfig(hidden=4, depth=2, kernel=5, stride=2)  # padding 1: pad to even, (L + 2 - 5) // 2 + 1
    assert odd.bottleneck_length(10) == 1  # 10 -> 4 -> 1
    assert odd.bottleneck_length(11) == 2  # pads to 12 -> 5, pads to 6 -> 2


@pytest.mark.parametrize("config", [TINY, UNetConfig(hidden=4, depth=2, kernel=5, stride=2, codec_dim=None)])
def test_bottleneck_length_matches_the_encoders(config: UNetConfig) -> None:
    unet = DiffusionUNet(config).eval()
    for length in range(12, 70):
        z = torch.zeros(2, 1, length)  # 2 items: GroupNorm refuses a single value per group
        for encoder in unet.encoders:
            z = encoder(z)
        assert z.shape[-1] == config.bottleneck_length(length), length


def test_band_stacked_layers_are_grouped() -> None:
    unet = DiffusionUNet(TINY, bands=3)  # widths 4, 8, 16
    assert unet.encoders[0].conv.weight.shape == (12, 1, 8) and unet.encoders[0].conv.groups == 3
    assert unet.decoders[0].convtr.weight.shape == (48, 8, 8) and unet.decoders[0].convtr.groups == 3
    assert unet.encoders[1].res_blocks[0].norm1.num_groups == 12
    assert unet.embeddings[1].weight.shape == (50, 48) and unet.conv_codec.weight.shape == (48, 16, 1)
    assert unet(torch.randn(2, 3, 100), 4, torch.randn(2, 16, 2)).shape == (2, 3, 100)
