"""All band U-Nets as one network: the fast path of `MultiBandDiffusion.generate(fused=True)`.

The n band models share one architecture and differ only in their weights, so they are stacked into a
single U-Net whose convolutions are grouped (`groups = n`): channel block b of every activation belongs to
band b and only ever meets band b's weights. Each GroupNorm becomes one with `n * norm_groups` groups over
`n * C` channels, which is exact because its groups are contiguous channel blocks that never straddle two
bands. The step-embedding tables and `conv_codec` are stacked along their output channels.

Activations are band-stacked along channels: `[B, n * C, L]`, block b = band b.

Work that does not change during one `generate` call is computed once: the conditioning projection and
its nearest-neighbour stretch to the bottleneck (`condition_embedding`), and the per-level step
embeddings of every step in the list (`step_embeddings`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .diffusion import PowerSchedule, Sampler, StepCallback, sample
from .options import RuntimeOptions
from .unet import DiffusionUNet, UNetConfig


def _stack(modules: Sequence[nn.Module]) -> nn.Module:
    """One grouped module computing `modules` side by side on band-stacked channels."""
    first, n = modules[0], len(modules)
    if isinstance(first, nn.ConvTranspose1d):
        # weight [C_in, C_out / groups, K]: band blocks stack along the input channels.
        fused: nn.Module = nn.ConvTranspose1d(
            n * first.in_channels,
            n * first.out_channels,
            first.kernel_size[0],
            first.stride[0],
            first.padding[0],
            first.output_padding[0],
            n * first.groups,
            first.bias is not None,
            first.dilation[0],
        )
    elif isinstance(first, nn.Conv1d):
        # weight [C_out, C_in / groups, K]: band blocks stack along the output channels.
        fused = nn.Conv1d(
            n * first.in_channels,
            n * first.out_channels,
            first.kernel_size[0],
            first.stride[0],
            first.padding[0],
            first.dilation[0],
            n * first.groups,
            first.bias is not None,
        )
    elif isinstance(first, nn.GroupNorm):
        fused = nn.GroupNorm(n * first.num_groups, n * first.num_channels, first.eps, first.affine)
    elif isinstance(first, nn.Embedding):
        # weight [num_steps, C] -> [num_steps, n * C]
        fused = nn.Embedding(first.num_embeddings, n * first.embedding_dim)
        fused.weight.data = torch.cat([m.weight.detach() for m in modules], dim=1)
        return fused.to(first.weight)
    elif not any(True for _ in first.children()):
        if any(True for _ in first.parameters()):
            raise TypeError(f"cannot fuse {type(first).__name__}: it has parameters")
        return copy.deepcopy(first)  # parameter-free (ReLU, Dropout)
    else:
        if any(True for _ in first.parameters(recurse=False)) or any(True for _ in first.buffers(recurse=False)):
            raise TypeError(f"cannot fuse {type(first).__name__}: it holds its own tensors")
        fused = copy.copy(first)
        fused._parameters, fused._buffers, fused._modules = {}, {}, {}
        for name, _ in first.named_children():
            fused._modules[name] = _stack([getattr(m, name) for m in modules])
        return fused
    for name, _ in first.named_parameters(recurse=False):
        getattr(fused, name).data = torch.cat([getattr(m, name).detach() for m in modules], dim=0)
    return fused.to(next(first.parameters()))


def _shared_input_conv(convs: Sequence[nn.Conv1d]) -> nn.Conv1d:
    """One convolution computing `convs` on the same input, outputs band-stacked along channels."""
    first = convs[0]
    fused = nn.Conv1d(first.in_channels, len(convs) * first.out_channels, first.kernel_size[0])
    fused.weight.data = torch.cat([c.weight.detach() for c in convs], dim=0)  # [n * C_out, C_in, 1]
    fused.bias.data = torch.cat([c.bias.detach() for c in convs], dim=0)
    return fused.to(first.weight)


class FusedUNet(nn.Module):
    """n `DiffusionUNet`s of one config evaluated as one grouped network.

    Args:
        unets: the band models, all built from the same `UNetConfig`.

    On CPU, `mbd.gemm_conv.use_gemm(fused)` then computes the widest layers as GEMMs.
    """

    def __init__(self, unets: Sequence[DiffusionUNet]) -> None:
        super().__init__()
        configs = {u.config for u in unets}
        if len(configs) != 1:
            raise ValueError("only U-Nets with one shared config can be fused")
        self.config: UNetConfig = unets[0].config
        self.n_bands = len(unets)
        self.encoders = _stack([u.encoders for u in unets])
        self.decoders = _stack([u.decoders for u in unets])
        tables = [u.embedding for u in unets]
        self.embedding = _stack(tables)
        self.embeddings = _stack([u.embeddings for u in unets]) if unets[0].embeddings is not None else None
        self.conv_codec = _shared_input_conv([u.conv_codec for u in unets]) if unets[0].conv_codec is not None else None

    def step_embeddings(self, steps: torch.Tensor) -> list[torch.Tensor | None]:
        """Per-level embeddings of each band's step.

        Args:
            steps: the step of each band `[n_bands]` (long).

        Returns:
            one `[1, n_bands * C_d, 1]` tensor per level (None where a level has none).
        """
        tables = [self.embedding.weight]
        for d in range(1, self.config.depth):
            tables.append(self.embeddings[d - 1].weight if self.embeddings is not None else None)
        bands = torch.arange(self.n_bands, device=steps.device)
        out: list[torch.Tensor | None] = []
        for table in tables:
            if table is None:
                out.append(None)
                continue
            per_band = table.view(table.shape[0], self.n_bands, -1)[steps, bands]  # [n_bands, C_d]
            out.append(per_band.reshape(1, -1, 1))
        return out

    def bottleneck_length(self, length: int) -> int:
        """Frames at the bottleneck for an input of `length` samples."""
        for _ in range(self.config.depth):
            length = -(-length // self.config.stride)
        return length

    def condition_embedding(self, condition: torch.Tensor, length: int) -> torch.Tensor:
        """Every band's projected latent, stretched to the bottleneck (see `DiffusionUNet.condition_embedding`).

        Args:
            condition: codec latent `[B, codec_dim, T]`.
            length: input samples L.

        Returns:
            `[B, n_bands * C_last, bottleneck_length(L)]`.
        """
        if self.conv_codec is None:
            raise ValueError("these U-Nets are unconditional")
        frames = self.bottleneck_length(length)
        if condition.shape[-1] > 2 * frames:
            raise ValueError(f"condition has {condition.shape[-1]} frames, more than twice the {frames} bottleneck")
        return F.interpolate(self.conv_codec(condition), size=frames)

    def forward(
        self, x: torch.Tensor, embeddings: Sequence[torch.Tensor | None], condition: torch.Tensor | None
    ) -> torch.Tensor:
        """Predict every band's noise at once.

        Args:
            x: band-stacked noisy audio `[B, n_bands * C, L]`.
            embeddings: `step_embeddings(steps)`.
            condition: `condition_embedding(latent, L)` `[B, n_bands * C_last, L']`, or None if unconditional.

        Returns:
            band-stacked eps `[B, n_bands * C, L]`.
        """
        skips = []
        z = x
        for encoder, emb in zip(self.encoders, embeddings):
            z = encoder(z)
            if emb is not None:
                z = z + emb
            skips.append(z)
        if condition is not None:
            skips[-1] = skips[-1] + condition
        z = skips.pop()
        z = self.decoders[0](z)
        for decoder in self.decoders[1:]:
            s = skips.pop()
            z = decoder(z[..., : s.shape[-1]] + s)
        return z[..., : x.shape[-1]]


def stack_bands(x: torch.Tensor) -> torch.Tensor:
    """`[n_bands, B, C, L]` -> band-stacked `[B, n_bands * C, L]`."""
    n, b, c, length = x.shape
    return x.permute(1, 0, 2, 3).reshape(b, n * c, length)


def unstack_bands(x: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Band-stacked `[B, n_bands * C, L]` -> `[n_bands, B, C, L]`."""
    b, nc, length = x.shape
    return x.view(b, n_bands, nc // n_bands, length).permute(1, 0, 2, 3)


@torch.no_grad()
def sample_fused(
    network: Callable[[torch.Tensor, Sequence[torch.Tensor | None], torch.Tensor | None], torch.Tensor],
    fused: FusedUNet,
    latents: torch.Tensor | None,
    schedules: Sequence[PowerSchedule],
    steps: list[int],
    draws: torch.Tensor,
    sampler: Sampler,
    options: RuntimeOptions,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Sample every band at once with the fused network.

    Args:
        network: `fused` itself, or a compiled version of it.
        fused: the fused network (for its cached step and condition embeddings).
        latents: codec latent `[B, D, T]`, or None for unconditional models.
        schedules: one schedule per band.
        steps: strictly descending steps ending in 0.
        draws: standard Gaussian draws `[n_bands, K, B, C, L]` in AudioCraft's order: `[b, 0]` is band b's
            initial noise, `[b, i]` the noise added after its iteration i - 1 (DDPM needs K = len(steps) - 1,
            the deterministic samplers K = 1).
        sampler: "ddpm", "ddim" or "dpm++2m" (`mbd.sampler`).
        options: the network's dtype (the sampler state stays float32).
        on_step: called as `on_step(i, x)` with the band-stacked state `[B, n_bands * C, L]`.

    Returns:
        each band's final state in diffusion space `[n_bands, B, C, L]`.
    """
    n, _, _, _, length = draws.shape
    dtype = options.torch_dtype
    condition = None if latents is None else fused.condition_embedding(latents.to(dtype), length)
    device = fused.embedding.weight.device
    table = {
        t: [e if e is None else e.to(dtype) for e in fused.step_embeddings(torch.full((n,), t, device=device))]
        for t in steps
    }

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        return network(x.to(dtype), table[t], condition).to(x.dtype)

    stacked = (stack_bands(d) for d in draws.unbind(1))  # [B, n * C, L] each, in draw order
    return unstack_bands(sample(sampler, denoise, lambda: next(stacked), schedules, steps, on_step), n)
