"""The U-Net's widest convolutions as plain GEMMs: the CPU fast path of the fused network.

On CPUs, oneDNN's direct convolution is slow for the bottom of the released U-Net, 3072 channels per band
over only L / 256 frames (a 1 s clip: 94 frames): it reached ~80 GFLOP/s on 2 cores where a packed GEMM of
the same work reaches ~210 (benchmarks/README.md). A convolution whose kernel is a multiple of its stride
(or whose stride is 1) is a sum of GEMMs over time-shifted, contiguous row views of the time-major input,
so no im2col copy is needed. With X the input as rows (time-major, `[L, C_in]`):

    stride 1, dilation d:   y[t] = sum_j X[t + j * d] @ W_j           W_j = w[:, :, j].T       [C_in, C_out]
    stride s, K = m * s:    y[t] = sum_j X_s[t + j] @ W_j             X_s: rows of s samples   [L / s, s * C_in]

A transposed convolution with K = m * s is the mirror image: `Y_j = X @ W_j` (`[T, s * C_out]`), overlap-added
at block offset j, then cropped by the padding. Grouped layers (those of the band-stacked
`DiffusionUNet(config, bands=n)`, group b = band b) are one GEMM set per group. `WinogradConv1d` computes the
3-tap convolutions with fewer multiplications (Winograd's minimal filtering).

Weights are packed once for oneDNN's matmul (`torch.ops.mkldnn._linear_pointwise`, the kernel that
PyTorch's inductor uses on CPU) where that is available, and kept for `torch.mm` otherwise. The result
equals the convolution up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GEMM_MIN_WEIGHTS = 2**23
"""Per-group weight count from which a layer is computed as GEMMs: on the released size that is the
3072-channel level (its residual convolutions, the 768 -> 3072 encoder and 3072 -> 768 decoder
convolutions) and nothing above it, which is where it pays (benchmarks/README.md)."""


WINOGRAD_TILE: int | None = 2
"""Outputs per Winograd tile for the replaced 3-tap convolutions (benchmarks/README.md); None: shifted GEMMs."""


class _Linear:
    """`x [M, K] -> x @ weight.T [M, N]` for a fixed `weight [N, K]`, packed for oneDNN when possible."""

    def __init__(self, weight: torch.Tensor, pack: bool = True) -> None:
        self.packed: torch.Tensor | None = None
        if pack and weight.device.type == "cpu" and torch.backends.mkldnn.is_available():
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())
                self._packed_call(torch.zeros(1, weight.shape[1], dtype=weight.dtype), packed)  # supported?
                self.packed = packed
            except (RuntimeError, AttributeError, NotImplementedError):
                self.packed = None
        self.weight_t = None if self.packed is not None else weight.t().contiguous()  # [K, N]

    @staticmethod
    def _packed_call(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return self._packed_call(x, self.packed)
        return x @ self.weight_t


def _geometry(kernel: int, stride: int, dilation: int) -> tuple[int, int] | None:
    """(taps, block samples) of a supported layer, None when it cannot be written as shifted GEMMs."""
    if stride == 1:
        return kernel, 1
    if dilation == 1 and kernel % stride == 0:
        return kernel // stride, stride
    return None


def supports(module: nn.Module) -> bool:
    """Whether `module` is a convolution that `GemmConv1d` / `GemmConvTranspose1d` can replace."""
    if isinstance(module, nn.ConvTranspose1d):
        plain = module.dilation[0] == 1 and module.output_padding[0] == 0
        return plain and module.kernel_size[0] % module.stride[0] == 0
    if isinstance(module, nn.Conv1d):
        plain = module.padding_mode == "zeros" and isinstance(module.padding, tuple)
        return plain and _geometry(module.kernel_size[0], module.stride[0], module.dilation[0]) is not None
    return False


class GemmConv1d(nn.Module):
    """A (grouped) `Conv1d` computed as shifted GEMMs. `[B, G * C_in, L] -> [B, G * C_out, L_out]`.

    Args:
        conv: the convolution to replace (zero padding, stride 1 or a kernel that is a multiple of the stride).
        pack: pack the weights for oneDNN when available (False: `torch.mm`).
    """

    def __init__(self, conv: nn.Conv1d, pack: bool = True) -> None:
        super().__init__()
        geometry = _geometry(conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        if not supports(conv) or geometry is None:
            raise ValueError(f"cannot compute {conv} as shifted GEMMs")
        self.taps, self.block = geometry
        self.groups, self.kernel = conv.groups, conv.kernel_size[0]
        self.stride, self.padding, self.dilation = conv.stride[0], conv.padding[0], conv.dilation[0]
        self.c_in, self.c_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        w = conv.weight.detach().view(self.groups, self.c_out, self.c_in, self.kernel)  # [G, C_out, C_in, K]
        s = self.block
        # tap j covers kernel positions j*s .. j*s+s-1; its rows are ordered (sample r, channel c)
        self.linears = [
            [_Linear(w[g, :, :, j * s : (j + 1) * s].permute(0, 2, 1).reshape(self.c_out, s * self.c_in), pack)
             for j in range(self.taps)]
            for g in range(self.groups)
        ]  # fmt: skip
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, length = x.shape
        span = self.dilation * (self.kernel - 1) + 1
        out_len = (length + 2 * self.padding - span) // self.stride + 1
        shift = self.dilation if self.block == 1 else 1  # row offset between taps
        rows = out_len + shift * (self.taps - 1)  # rows of `block` samples that the output reads
        right = rows * self.block - length - self.padding  # may be negative: samples no output reads
        xt = F.pad(x, (self.padding, right)).view(b, self.groups, self.c_in, rows * self.block)
        xt = xt.transpose(-1, -2).contiguous().view(b, self.groups, rows, self.block * self.c_in)  # [B, G, R, s*C_in]
        ys = []
        for g in range(self.groups):
            y = None
            for j, linear in enumerate(self.linears[g]):
                part = linear(xt[:, g, j * shift : j * shift + out_len].reshape(b * out_len, -1))  # [B*L_out, C_out]
                y = part if y is None else y.add_(part)
            ys.append(y)
        y = torch.stack(ys).view(self.groups, b, out_len, self.c_out).permute(1, 0, 3, 2)  # [B, G, C_out, L_out]
        y = y.reshape(b, self.groups * self.c_out, out_len)
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None]


class GemmConvTranspose1d(nn.Module):
    """A (grouped) `ConvTranspose1d` with K = m * stride computed as GEMMs and an overlap-add.

    `[B, G * C_in, T] -> [B, G * C_out, (T - 1) * stride - 2 * padding + K]`.

    Args:
        conv: the transposed convolution to replace (dilation 1, no output padding).
        pack: pack the weights for oneDNN when available (False: `torch.mm`).
    """

    def __init__(self, conv: nn.ConvTranspose1d, pack: bool = True) -> None:
        super().__init__()
        if not supports(conv):
            raise ValueError(f"cannot compute {conv} as GEMMs")
        self.groups, self.stride, self.padding = conv.groups, conv.stride[0], conv.padding[0]
        self.taps = conv.kernel_size[0] // self.stride
        self.c_in, self.c_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        w = conv.weight.detach().view(self.groups, self.c_in, self.c_out, conv.kernel_size[0])  # [G, C_in, C_out, K]
        s = self.stride
        # One GEMM per group for all taps: output row (j, r, o) is tap j's write to sample r of block t + j.
        # [G, C_in, C_out, m, s] -> [G, m, s, C_out, C_in]
        w = w.view(self.groups, self.c_in, self.c_out, self.taps, s).permute(0, 3, 4, 2, 1)
        self.linears = [_Linear(w[g].reshape(self.taps * s * self.c_out, self.c_in), pack) for g in range(self.groups)]
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, frames = x.shape
        s, blocks = self.stride, frames + self.taps - 1
        out_len = blocks * s - 2 * self.padding
        xt = x.view(b, self.groups, self.c_in, frames).transpose(-1, -2).contiguous()  # [B, G, T, C_in]
        ys = []
        for g, linear in enumerate(self.linears):
            taps = linear(xt[:, g].reshape(b * frames, self.c_in)).view(b, frames, self.taps, s * self.c_out)
            full = x.new_zeros(b, blocks, s * self.c_out)  # [B, blocks, s*C_out]
            for j in range(self.taps):
                full[:, j : j + frames] += taps[:, :, j]
            ys.append(full.view(b, blocks * s, self.c_out)[:, self.padding : self.padding + out_len])
        y = torch.stack(ys, dim=1).permute(0, 1, 3, 2).reshape(b, self.groups * self.c_out, out_len)
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None]


# Winograd's minimal filtering F(m, 3) for a 3-tap correlation (Lavin and Gray, "Fast Algorithms for
# Convolutional Neural Networks", 2016): tile outputs Y = A^T [(G g) * (B^T d)] from alpha = m + 2 inputs d,
# alpha multiplications instead of 3 m. Matrices (A^T, G, B^T); F(2, 3) uses points 0, 1, -1 and infinity,
# F(4, 3) adds 2 and -2.
WINOGRAD: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 1, 1, 0], [0, 1, -1, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    ),
    4: (
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
    ),
}


def supports_winograd(module: nn.Module) -> bool:
    """Whether `module` is a 3-tap, stride-1, zero-padded `Conv1d` that `WinogradConv1d` can replace."""
    return (
        isinstance(module, nn.Conv1d)
        and module.kernel_size[0] == 3
        and module.stride[0] == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


class WinogradConv1d(nn.Module):
    """A (grouped) 3-tap, stride-1 `Conv1d` by Winograd F(m, 3), its alpha products as GEMMs.

    `[B, G * C_in, L] -> [B, G * C_out, L_out]`. A dilation d splits the time axis into d phases, each a
    dilation-1 correlation; the tiles of every phase and batch item are the rows of one GEMM per product:
    `V_i [rows, C_in] @ U_i [C_in, C_out]`, with `U_i = sum_k G[i, k] w[:, :, k]` computed once (float64).

    Args:
        conv: the convolution to replace.
        tile: outputs per tile m (2 or 4): F(4, 3) does half the multiplications of the direct convolution,
            F(2, 3) two thirds, with smaller transform constants (less rounding).
        pack: pack the weights for oneDNN when available (False: `torch.mm`).
    """

    def __init__(self, conv: nn.Conv1d, tile: int = 4, pack: bool = True) -> None:
        super().__init__()
        if not supports_winograd(conv):
            raise ValueError(f"cannot compute {conv} by Winograd F(m, 3)")
        a_t, g, b_t = (torch.tensor(m, dtype=torch.float64) for m in WINOGRAD[tile])
        self.tile, self.alpha = tile, tile + 2
        self.groups, self.padding, self.dilation = conv.groups, conv.padding[0], conv.dilation[0]
        self.c_in, self.c_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        w = conv.weight.detach().view(self.groups, self.c_out, self.c_in, 3)
        u = torch.einsum("ik,gock->gioc", g, w.double()).to(w.dtype)  # [G, alpha, C_out, C_in]
        self.linears = [[_Linear(u[gr, i], pack) for i in range(self.alpha)] for gr in range(self.groups)]
        self.a_t, self.b_t = a_t.to(w.dtype), b_t.to(w.dtype)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, length = x.shape
        d, m, alpha = self.dilation, self.tile, self.alpha
        out_len = length + 2 * self.padding - 2 * d
        per_phase = -(-out_len // d)  # outputs per phase (ceil)
        tiles = -(-per_phase // m)
        rows = tiles * m + 2  # input samples per phase
        right = rows * d - length - self.padding
        xt = F.pad(x, (self.padding, right)).view(b, self.groups, self.c_in, rows, d)  # sample r * d + p
        xt = xt.permute(3, 1, 0, 4, 2)  # [rows, G, B, d, C_in]
        taps = torch.stack([xt[j : j + m * tiles : m] for j in range(alpha)])  # [alpha, T, G, B, d, C_in]
        taps = taps.permute(0, 2, 3, 4, 1, 5).reshape(alpha, -1)  # tap j of tile (g, b, p, t), channel c
        v = (self.b_t.to(x.dtype) @ taps).view(alpha, self.groups, -1, self.c_in)  # [alpha, G, B * d * T, C_in]
        prods = torch.stack(
            [torch.stack([linear(v[i, gr]) for i, linear in enumerate(ls)]) for gr, ls in enumerate(self.linears)]
        )  # [G, alpha, B * d * T, C_out]
        y = torch.matmul(self.a_t.to(x.dtype), prods.view(self.groups, alpha, -1))  # [G, m, B * d * T * C_out]
        y = y.view(self.groups, m, b, d, tiles, self.c_out).permute(2, 0, 5, 4, 1, 3)  # [B, G, C_out, T, m, d]
        y = y.reshape(b, self.groups * self.c_out, tiles * m * d)[..., :out_len]
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None]


def use_gemm(
    module: nn.Module, min_weights: int = GEMM_MIN_WEIGHTS, pack: bool = True, tile: int | None | str = "default"
) -> int:
    """Replace, in place, every supported convolution with at least `min_weights` weights per group.

    Args:
        module: the network to rewrite.
        min_weights: per-group weight count from which a layer is replaced.
        pack: pack the weights for oneDNN when available.
        tile: compute 3-tap, stride-1 convolutions by Winograd F(tile, 3) (`WinogradConv1d`); None: as
            shifted GEMMs (`GemmConv1d`) like the others; "default": `WINOGRAD_TILE` (read at each call).

    Returns:
        how many layers were replaced.
    """
    tile = WINOGRAD_TILE if tile == "default" else tile
    replaced = 0
    for name, child in module.named_children():
        if supports(child) and child.weight.numel() // child.groups >= min_weights:
            if isinstance(child, nn.ConvTranspose1d):
                module._modules[name] = GemmConvTranspose1d(child, pack)
            elif tile is not None and supports_winograd(child):
                module._modules[name] = WinogradConv1d(child, tile, pack)
            else:
                module._modules[name] = GemmConv1d(child, pack)
            replaced += 1
        else:
            replaced += use_gemm(child, min_weights, pack, tile)
    return replaced
