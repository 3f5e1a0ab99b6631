"""Modules built on PyTorch's meta device: shapes without memory, and without running initialisers.

A meta tensor holds no values, so initialising one does nothing useful, and one initialiser costs real time:
the meta `normal_` (which `nn.Embedding` calls) imports `torch._dynamo`, about 2 s in a fresh process, which
every `mbd` command that checks a checkpoint would otherwise pay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

M = TypeVar("M", bound=nn.Module)

_INITIALISERS = {
    nn.init.normal_, nn.init.uniform_, nn.init.trunc_normal_, nn.init.kaiming_uniform_, nn.init.kaiming_normal_,
    nn.init.xavier_uniform_, nn.init.xavier_normal_, torch.Tensor.normal_, torch.Tensor.uniform_,
}  # fmt: skip


class _SkipInitialisers(TorchFunctionMode):
    """Turns the in-place random initialisers into no-ops."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _INITIALISERS:
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


def on_meta(build: Callable[[], M]) -> M:
    """`build()` with every tensor it creates on the meta device and no random initialisation."""
    with torch.device("meta"), _SkipInitialisers():
        return build()
