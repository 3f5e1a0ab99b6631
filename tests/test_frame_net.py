"""mbd.frame_net: the shared frame-level band network."""

from __future__ import annotations

import pytest
import torch

from mbd.frame_net import FrameNet, FrameNetConfig, time_embedding

CONFIG = FrameNetConfig(dim=8, blocks=2, mlp_ratio=2.0, kernel=3)
SIZES = (6, 5, 2)  # channels, cond_dim, n_bands


def test_shapes_for_any_length() -> None:
    net = FrameNet(CONFIG, *SIZES)
    for frames in (1, 7, 33):
        out = net(torch.randn(4, 6, frames), torch.rand(4), torch.tensor([0, 1, 0, 1]), torch.randn(4, 5, frames))
        assert out.shape == (4, 6, frames)


def test_output_depends_on_time_band_and_condition() -> None:
    torch.manual_seed(0)
    net = FrameNet(CONFIG, *SIZES)
    for p in net.parameters():  # layer scale starts small: make every path visible
        torch.nn.init.normal_(p, std=0.5)
    x, cond = torch.randn(1, 6, 9), torch.randn(1, 5, 9)
    base = net(x, torch.tensor([0.3]), torch.tensor([0]), cond)
    assert not torch.allclose(base, net(x, torch.tensor([0.7]), torch.tensor([0]), cond))
    assert not torch.allclose(base, net(x, torch.tensor([0.3]), torch.tensor([1]), cond))
    assert not torch.allclose(base, net(x, torch.tensor([0.3]), torch.tensor([0]), cond + 1))


def test_frames_only_see_their_neighbourhood() -> None:
    # receptive field: (kernel - 1) / 2 frames per conv, one input conv and one depthwise conv per block
    net = FrameNet(CONFIG, *SIZES)
    x, cond = torch.randn(1, 6, 40), torch.randn(1, 5, 40)
    t, b = torch.tensor([0.5]), torch.tensor([1])
    x2 = x.clone()
    x2[..., 0] += 10
    changed = (net(x, t, b, cond) - net(x2, t, b, cond)).abs().amax(dim=1)[0] > 0
    assert changed[: 1 + 2].all() and not changed[1 + 3 :].any()


def test_time_embedding_and_config_checks() -> None:
    emb = time_embedding(torch.tensor([0.0, 1.0]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    with pytest.raises(ValueError, match="odd"):
        FrameNetConfig(kernel=4)
    with pytest.raises(ValueError, match="dim"):
        FrameNetConfig(dim=0)
