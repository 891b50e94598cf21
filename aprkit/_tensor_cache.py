"""``tensor_cache``: ``functools.lru_cache`` for functions that build constant tensors (filter banks, index maps,
lookup tables) reused across calls.

A cached tensor first built inside ``torch.inference_mode()`` would be an inference tensor, and every later call that
autograd records would fail on it ("Inference tensors cannot be saved for backward"), depending only on which call
came first. The cached function therefore always runs with inference mode off: its tensors are ordinary ones, usable
inside and outside inference mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["tensor_cache"]

T = TypeVar("T")


def tensor_cache(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``functools.lru_cache(maxsize)`` whose function runs outside inference mode (see the module doc); the arguments
    must be hashable, as for ``lru_cache``."""
    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args: Any, **kwargs: Any) -> T:
            with torch.inference_mode(False):
                return fn(*args, **kwargs)
        return cached
    return decorate
