"""mbd.gemm_conv: convolutions as shifted GEMMs equal torch's convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mbd.gemm_conv import GemmConv1d, GemmConvTranspose1d, supports, use_gemm

# (kernel, stride, padding, dilation): the U-Net's residual convolutions (dilation 1, 2), its strided encoder
# convolution (K 8, stride 4, padding 2), and edge cases (no padding, large dilation)
GEOMETRIES = [(3, 1, 1, 1), (3, 1, 2, 2), (8, 4, 2, 1), (8, 4, 0, 1), (3, 1, 4, 4), (1, 1, 0, 1)]


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "mm"])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("length", [37, 40])
def test_conv_matches_torch(pack: bool, groups: int, geometry: tuple[int, int, int, int], length: int) -> None:
    torch.manual_seed(0)
    kernel, stride, padding, dilation = geometry
    conv = nn.Conv1d(groups * 6, groups * 5, kernel, stride, padding, dilation, groups, bias=True)
    x = torch.randn(2, groups * 6, length)
    with torch.no_grad():
        want, got = conv(x), GemmConv1d(conv, pack)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "mm"])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("geometry", [(8, 4, 2), (8, 4, 0), (4, 2, 1), (6, 3, 0)], ids=str)
def test_transposed_conv_matches_torch(pack: bool, groups: int, geometry: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    kernel, stride, padding = geometry
    conv = nn.ConvTranspose1d(groups * 6, groups * 5, kernel, stride, padding, groups=groups, bias=True)
    x = torch.randn(2, groups * 6, 23)
    with torch.no_grad():
        want, got = conv(x), GemmConvTranspose1d(conv, pack)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_bfloat16_weights() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 8, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(1, 8, 50, dtype=torch.bfloat16)
    with torch.no_grad():
        got = GemmConv1d(conv)(x)
        want = conv.float()(x.float())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.02)


def test_unsupported_layers_are_kept() -> None:
    odd = nn.Conv1d(4, 4, 5, stride=2, dilation=2)  # strided and dilated: not shifted GEMMs
    reflect = nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect")
    assert not supports(odd) and not supports(reflect) and not supports(nn.ConvTranspose1d(4, 4, 5, 2))
    with pytest.raises(ValueError, match="cannot compute"):
        GemmConv1d(odd)
    net = nn.Sequential(odd, nn.ReLU(), nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), reflect))
    assert use_gemm(net, min_weights=0) == 1
    assert isinstance(net[0], nn.Conv1d) and isinstance(net[2][0], GemmConv1d) and net[2][1] is reflect
    small = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1))
    assert use_gemm(small, min_weights=49) == 0 and use_gemm(small, min_weights=48) == 1  # 4 * 4 * 3 weights


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not built into this torch")
def test_float32_weights_are_packed_for_onednn() -> None:
    conv = nn.Conv1d(8, 8, 3, padding=1)
    assert all(linear.packed is not None for linear in GemmConv1d(conv).linears[0])
    assert all(linear.packed is None for linear in GemmConv1d(conv, pack=False).linears[0])
