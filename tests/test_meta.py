"""mbd.meta: modules on the meta device, without their initialisers."""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mbd.meta import on_meta
from mbd.unet import DiffusionUNet, UNetConfig


def test_same_names_and_shapes_as_a_real_module_and_no_memory() -> None:
    config = UNetConfig(hidden=8, depth=2, growth=2.0, res_blocks=1, codec_dim=16, num_steps=50)
    meta = on_meta(lambda: DiffusionUNet(config, bands=2))
    real = DiffusionUNet(config, bands=2)
    assert {k: t.shape for k, t in meta.state_dict().items()} == {k: t.shape for k, t in real.state_dict().items()}
    assert all(t.is_meta for t in meta.state_dict().values())
    assert not any(t.is_meta for t in nn.Embedding(3, 4).state_dict().values())  # the mode ends with the call


class _Calls(TorchFunctionMode):
    """Records every torch function that reaches it (those an inner mode passes on included)."""

    def __init__(self) -> None:
        super().__init__()
        self.funcs: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.funcs.append(func)
        return func(*args, **(kwargs or {}))


def test_no_initialiser_runs() -> None:
    """torch's meta `normal_` imports torch._dynamo (seconds in a fresh process): `on_meta` never lets an
    initialiser through, while a plain build does call it (on the CPU here, so that this test does not pay
    that import itself)."""
    with _Calls() as calls:
        on_meta(lambda: nn.Embedding(1000, 48))
    assert not {nn.init.normal_, torch.Tensor.normal_} & set(calls.funcs)
    with _Calls() as calls:
        nn.Embedding(1000, 48)
    assert nn.init.normal_ in calls.funcs
    assert torch.empty(2).normal_().isfinite().all()  # initialisers work again outside
