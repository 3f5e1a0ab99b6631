"""mbd.gemm_conv: convolutions as shifted GEMMs equal torch's convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mbd.gemm_conv import WINOGRAD, GemmConv1d, GemmConvTranspose1d, WinogradConv1d, supports, use_gemm

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
    assert use_gemm(net, min_weights=0, tile=None) == 1
    assert isinstance(net[0], nn.Conv1d) and isinstance(net[2][0], GemmConv1d) and net[2][1] is reflect
    small = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1))
    assert use_gemm(small, min_weights=49) == 0 and use_gemm(small, min_weights=48) == 1  # 4 * 4 * 3 weights
    assert isinstance(small[0], WinogradConv1d) and small[0].tile == 2
    strided = nn.Sequential(nn.Conv1d(4, 4, 8, stride=4, padding=2), nn.ConvTranspose1d(4, 4, 8, 4, 2))
    assert use_gemm(strided, min_weights=0, tile=4) == 2
    assert isinstance(strided[0], GemmConv1d) and isinstance(strided[1], GemmConvTranspose1d)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not built into this torch")
def test_float32_weights_are_packed_for_onednn() -> None:
    conv = nn.Conv1d(8, 8, 3, padding=1)
    assert all(linear.packed is not None for linear in GemmConv1d(conv).linears[0])
    assert all(linear.packed is None for linear in GemmConv1d(conv, pack=False).linears[0])


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("geometry", [(1, 1), (2, 2), (0, 1), (4, 4), (3, 1)], ids=str)  # (padding, dilation)
@pytest.mark.parametrize("length", [5, 37, 40])
def test_winograd_matches_torch(tile: int, groups: int, geometry: tuple[int, int], length: int) -> None:
    torch.manual_seed(0)
    padding, dilation = geometry
    conv = nn.Conv1d(groups * 6, groups * 5, 3, 1, padding, dilation, groups, bias=True)
    x = torch.randn(2, groups * 6, length)
    with torch.no_grad():
        want, got = conv(x), WinogradConv1d(conv, tile)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_matrices_compute_a_correlation(tile: int) -> None:
    # A^T [(G g) * (B^T d)] = y with y[t] = sum_k g[k] d[t + k], in exact rational arithmetic (float64 here)
    a_t, g, b_t = (torch.tensor(m, dtype=torch.float64) for m in WINOGRAD[tile])
    torch.manual_seed(0)
    d, w = torch.randn(tile + 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    want = torch.stack([(w * d[t : t + 3]).sum() for t in range(tile)])
    torch.testing.assert_close(a_t @ ((g @ w) * (b_t @ d)), want, rtol=1e-12, atol=1e-12)
