"""Kornia-style replay, ``apply(images, params)``, on torch modules without losing ``nn.Module.apply(fn)``.

Kornia's augmentations draw their randomness in ``generate_parameters`` and replay it with ``apply(images,
params)``; aprkit's batch transforms follow that protocol, which shadows ``nn.Module.apply(fn)``. Torch calls
``child.apply(fn)`` on every submodule, so ``model.apply(init_fn)`` over a module tree holding such a transform (in
``nn.Sequential``, or as the core of a kornia adapter) must still visit it. :class:`ReplayModule` gives both: with
``params`` it calls the subclass's :meth:`ReplayModule.replay`, without it is torch's ``apply(fn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import torch
from torch import nn

from ._checks import describe_value

__all__ = ["ReplayModule"]

_M = TypeVar("_M", bound="ReplayModule")


class ReplayModule(nn.Module):
    """A module whose ``apply(images, params)`` replays the draws of its ``generate_parameters`` (see the module
    docstring); subclasses implement :meth:`replay`."""

    @overload
    def apply(self: _M, x: Callable[[nn.Module], None], params: None = None) -> _M: ...
    @overload
    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def apply(self, x: Any, params: dict[str, torch.Tensor] | None = None) -> Any:
        """``replay(x, params)`` with ``params``; without, ``nn.Module.apply(fn)`` (returns the module)."""
        if params is not None:
            return self.replay(x, params)
        if isinstance(x, torch.Tensor) or not callable(x):
            raise TypeError(
                f"{type(self).__name__}.apply takes (images, params) to replay the draws of generate_parameters, "
                f"or a function fn(module) as nn.Module.apply does; got {describe_value(x)} without params")
        return nn.Module.apply(self, x)

    def replay(self, x: Any, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The transform of ``x`` with the draws ``params``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement replay")
