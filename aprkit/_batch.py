"""A model's forward pass never sees a batch of one image.

PyTorch's CPU convolutions take other kernels for a single image than for two or more (logits move by about 1e-6),
so a pass whose last batch held one image (``N mod batch_size == 1``, or ``batch_size=1``) gave other numbers than
the same images in other batches. A lone image therefore runs as a pair of copies and keeps the first output row:
the evaluation's numbers then do not depend on how the batch size divides the images.
"""

from __future__ import annotations

import torch

__all__ = ["as_pair", "pair_rows"]


def as_pair(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x`` ``(B, ...)``, or two copies of it when ``B == 1``; and whether it was doubled (keep row 0 of the
    output then)."""
    if x.shape[0] != 1:
        return x, False
    return torch.cat([x, x]), True


def pair_rows(start: int, stop: int) -> tuple[torch.Tensor, bool]:
    """The row indices ``start..stop - 1``, a lone row given twice; and whether it was."""
    rows = torch.arange(start, stop)
    return (rows.repeat(2), True) if rows.numel() == 1 else (rows, False)
