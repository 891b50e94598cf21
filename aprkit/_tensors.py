"""Tensor helpers shared by aprkit's modules that check nothing: devices (where a generator draws, whether two
devices are the same, a copy that is asynchronous only where that is safe), broadcasting without building tensors,
the dtype and memory format of an op's result, and a region without autocast. Nothing here is public API."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

__all__ = [
    "autocast_off",
    "generator_device",
    "same_device",
    "to_device",
    "needs_grad",
    "broadcast_shape",
    "compute_dtype",
    "keep_layout",
    "restore_dtype",
]


def generator_device(generator: torch.Generator | None, default: torch.device | str = "cpu") -> torch.device:
    """Where ``generator`` draws (``default`` without one): a sampler given it must create its draws there. Anything
    but a ``torch.Generator`` or ``None`` is refused here, where every sampler asks (a NumPy Generator or an int seed
    failed with "has no attribute 'device'")."""
    if generator is None:
        return torch.device(default)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None (pass an int as seed= where a function takes "
                        f"one), got {type(generator).__name__}")
    return generator.device


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether ``a`` and ``b`` name the same device, an index-less CUDA device being the current one (a generator made
    with ``device="cuda"`` reports ``cuda``, its tensors ``cuda:0``; ``.to("cuda")`` puts tensors there); an
    index-less device of another type matches any of its type."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.index == b.index:
        return True
    if a.index is not None and b.index is not None:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``t.to(device, dtype)``, asynchronous (``non_blocking``) unless the target is the host: a copy from an
    accelerator to the host made with ``non_blocking=True`` returns before its values have landed, and reading them
    without a synchronisation gives stale values."""
    device = torch.device(device)
    return t.to(device=device, dtype=dtype, non_blocking=device.type != "cpu")


def needs_grad(*ts: object) -> bool:
    """Whether autograd must track an op on ``ts`` (tensors; numbers and ``None`` need none)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in ts)


def broadcast_shape(*shapes: Sequence[int]) -> torch.Size:
    """``torch.broadcast_shapes`` in plain Python (that one builds tensors: tens of microseconds a call, which
    add up on hot paths); raises ``RuntimeError`` alike when the shapes do not broadcast. (No ``max`` over a
    generator: torch 2.11's Dynamo, the GPU image's, cannot trace it.)"""
    ndim = max([0, *[len(s) for s in shapes]])
    out = [1] * ndim
    for shape in shapes:
        for i, n in enumerate(shape, ndim - len(shape)):
            if n != 1:
                if out[i] not in (1, n):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast to one shape")
                out[i] = n
    return torch.Size(out)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The floating dtype used for FFT work on ``x``: float64 stays, everything else uses float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def keep_layout(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in ``like``'s memory format: channels_last if ``like`` is a channels_last batch (one copy, after the
    cast to the output dtype), else ``out`` as it is (the FFTs return contiguous NCHW)."""
    if like.ndim == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def restore_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float result back to ``dtype``; uint8 is rounded and clamped to [0, 255], never wrapped."""
    if dtype == torch.uint8:
        return y.round().clamp_(0, 255).to(torch.uint8)
    return y.to(dtype)


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A region free of an enclosing ``torch.autocast`` on ``device``'s type (a no-op where it has none: ``meta``)."""
    # torch 2.11's Dynamo cannot trace torch._C._is_autocast_available (a fullgraph compile fails on it): compiled code
    # runs on a device type with autocast (cuda, cpu, ...), so the check is skipped there
    if torch.compiler.is_compiling() or torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
