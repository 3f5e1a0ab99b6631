"""mbd.meta: modules on the meta device, without their initialisers."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from mbd.meta import on_meta
from mbd.unet import DiffusionUNet, UNetConfig


def test_same_names_and_shapes_as_a_real_module_and_no_memory() -> None:
    config = UNetConfig(hidden=8, depth=2, growth=2.0, res_blocks=1, codec_dim=16, num_steps=50)
    meta = on_meta(lambda: DiffusionUNet(config, bands=2))
    real = DiffusionUNet(config, bands=2)
    assert {k: t.shape for k, t in meta.state_dict().items()} == {k: t.shape for k, t in real.state_dict().items()}
    assert all(t.is_meta for t in meta.state_dict().values())
    assert not any(t.is_meta for t in nn.Embedding(3, 4).state_dict().values())  # the mode ends with the call


def test_building_an_embedding_does_not_import_dynamo() -> None:
    """torch's meta `normal_` imports torch._dynamo (seconds in a fresh process); `on_meta` never calls it."""
    code = (
        "import sys, torch\n"
        "from mbd.meta import on_meta\n"
        "on_meta(lambda: torch.nn.Embedding(1000, 48))\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "with torch.device('meta'):\n"
        "    torch.nn.Embedding(1000, 48)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"  # the plain meta build does import it: the check above could fail
    assert torch.empty(2).normal_().isfinite().all()  # initialisers work again outside
