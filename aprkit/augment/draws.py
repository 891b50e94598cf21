"""Per-item random draws: uniforms whose row ``i`` is the same whatever the batch size, on the generator's device.

Every APR-S parameter (and AugMix's op choices) comes from rows of :func:`uniform_rows`, so an image draws the same
in a batch of 8 as in one of 256 (on the CPU the stream fills elements in order; a device kernel may map random
values to elements by the call's size, so devices draw in fixed chunks of rows). ``out=`` draws into a buffer that
stays where it is from step to step (what a CUDA graph reads without copying its inputs).
"""

from __future__ import annotations

from typing import Any

import torch

from .._tensors import generator_device, same_device

__all__ = ["uniform_rows", "uniform_rows_shape", "op_params", "sample_op_params"]

#: rows per draw call by device type (others: 256; None: one call, as the CPU fills elements in order from its stream,
#: whereas a device kernel may map random values to elements by the call's size)
_ROWS_PER_CALL: dict[str, int | None] = {"cpu": None}


def uniform_rows_shape(n: int, k: int, device: torch.device | str) -> tuple[int, int]:
    """The shape of a buffer that :func:`uniform_rows` draws ``n`` rows of ``k`` into on ``device`` (whole chunks)."""
    rows = _ROWS_PER_CALL.get(torch.device(device).type, 256)
    return (n if rows is None else max(1, -(-n // rows)) * rows), k


def uniform_rows(n: int, k: int, generator: torch.Generator | None = None, *, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """``(n, k)`` float64 uniforms in [0, 1) on the generator's device (``None``: torch's global CPU RNG), row ``i``
    the same for every ``n``: item ``i`` of a batch draws the same whatever the batch size.

    ``out``: a float64 buffer of :func:`uniform_rows_shape` on that device to draw into (the same numbers; the
    result is a view of its first ``n`` rows), so that a compiled graph can read the draws where they lie."""
    gdev = generator_device(generator)
    kw: dict[str, Any] = dict(generator=generator, device=gdev, dtype=torch.float64)
    rows = _ROWS_PER_CALL.get(gdev.type, 256)
    if out is not None:
        fits = out.shape == uniform_rows_shape(n, k, gdev) and out.dtype == torch.float64
        if not (fits and same_device(out.device, gdev)):
            raise ValueError(f"out must be float64 {uniform_rows_shape(n, k, gdev)} on {gdev}, got {out.dtype} "
                             f"{tuple(out.shape)} on {out.device}")
        step = max(1, n) if rows is None else rows
        for i in range(0, out.shape[0], step):
            torch.rand(step, k, out=out[i:i + step], **kw)
        return out[:n]
    if rows is None:
        return torch.rand(n, k, **kw)
    return torch.cat([torch.rand(rows, k, **kw) for _ in range(max(1, -(-n // rows)))])[:n]


def op_params(u: torch.Tensor, num_ops: int, severity: float) -> dict[str, torch.Tensor]:
    """Op choices from uniforms ``u`` ``(n, 3)``: ``op`` (uniform index), ``level`` in [0.1, severity), ``negate``."""
    op = (u[:, 0] * num_ops).long().clamp_(max=num_ops - 1)
    return {"op": op, "level": 0.1 + (float(severity) - 0.1) * u[:, 1], "negate": u[:, 2] > 0.5}


def sample_op_params(n: int, num_ops: int, severity: float, generator: torch.Generator | None = None
                     ) -> dict[str, torch.Tensor]:
    """Draw ``n`` op choices on the generator's device (:func:`op_params` of :func:`uniform_rows`: per item)."""
    return op_params(uniform_rows(n, 3, generator), num_ops, severity)
