"""A model's forward pass never sees a batch of one image.

PyTorch's CPU convolutions take other kernels for a single image than for two or more (logits move by about 1e-6),
so a pass whose last batch held one image (``N mod batch_size == 1``, or ``batch_size=1``) gave other numbers than
the same images in other batches. A lone image therefore runs on the CPU as a pair of copies and keeps the first
output row: the evaluation's numbers then do not depend on how the batch size divides the images (``batch_size=1``
evaluates pairs: twice the work).
"""

from __future__ import annotations

import torch

__all__ = ["as_pair", "pair_rows"]


def as_pair(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x`` ``(B, ...)``, or two copies of it when ``B == 1`` on the CPU; and whether it was doubled (keep row 0 of
    the output then). Other devices choose their kernels by batch size anyway (cuDNN): a lone image stays alone."""
    if x.shape[0] != 1 or x.device.type != "cpu":
        return x, False
    return torch.cat([x, x]), True


def pair_rows(start: int, stop: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, bool]:
    """The row indices ``start..stop - 1``, a lone row given twice when the model runs on the CPU (``device``); and
    whether it was."""
    rows = torch.arange(start, stop)
    return (rows.repeat(2), True) if rows.numel() == 1 and torch.device(device).type == "cpu" else (rows, False)
