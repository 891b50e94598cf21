"""Every forward pass aprkit runs on the CPU sees blocks of exactly :data:`CPU_BLOCK` images.

PyTorch's CPU kernels choose their algorithm by the number of rows: a convolution takes another one for a single image,
and MKL's matrix product another one for few rows than for many, the threshold growing with the width (a 64 -> 10
classifier up to 2 rows, 512 -> 10 up to 15, 2048 -> 1000 up to 256). Logits then moved by about 1e-5 with the
batch size, the remainder ``N mod batch_size`` and each ``torchrun`` rank's share. At a fixed number of rows a row's
result does not depend on the other rows, so on the CPU a batch is cut into blocks of :data:`CPU_BLOCK` rows, the last
one padded with copies of its last image, and the numbers are the same to the last bit whatever the batch size. The
block size is a speed choice: ``benchmarks/bench_eval.py`` (ResNet-20, 2 threads, channels_last, 256 images per cell)
ran the evaluation at 0.84x the robustbench-style loop in blocks of 8, 1.14x in blocks of 16 and 1.11x in blocks of 32
(0.93x on whole batches); at its defaults (200 images per cell, 208 rows in blocks of 16) runs alternating with the
code before gave 0.93x and 1.07x against 1.00x and 0.96x: the same within this machine's noise. Batches are read in
whole blocks (:func:`read_size`), so only a pass's last block holds padding.

A model whose outputs depend on the other images of their batch (:func:`batch_dependent`: test-time batch norm) runs on
its batches as they are, as does every model on other devices (cuDNN chooses its kernels by batch size anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["CPU_BLOCK", "batch_dependent", "block_rows", "in_blocks", "pad_rows", "read_size", "row_blocks"]

#: rows of every forward pass on the CPU; a constant, so that results computed at any batch size agree
CPU_BLOCK = 16


def batch_dependent(model: Any) -> bool:
    """Whether ``model``'s outputs in eval mode depend on the other images of their batch: a batch norm without
    running statistics (``track_running_stats=False``: test-time adaptation normalises by the batch's own)."""
    return isinstance(model, torch.nn.Module) and any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and (not m.track_running_stats or m.running_mean is None)
        for m in model.modules())


def block_rows(model: Any, device: torch.device | str) -> int | None:
    """The rows of each forward pass of ``model`` on ``device``: :data:`CPU_BLOCK` on the CPU, ``None`` (the batch as
    it is) elsewhere or for a :func:`batch_dependent` model. Ask once per pass over a dataset (it walks the modules)."""
    return CPU_BLOCK if torch.device(device).type == "cpu" and not batch_dependent(model) else None


def read_size(batch_size: int, block: int | None) -> int:
    """The images to read per batch: ``batch_size`` rounded up to whole blocks, so that only the data's last block
    holds padding (the numbers do not depend on it)."""
    return batch_size if block is None else -(-batch_size // block) * block


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` ``(B, ...)`` with its last row repeated up to ``rows`` rows (``t`` itself when it has them)."""
    extra = rows - t.shape[0]
    return t if extra <= 0 else torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])


def in_blocks(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, block: int | None) -> Any:
    """``fn(x)`` computed on blocks of exactly ``block`` rows of ``x`` (the last padded by :func:`pad_rows`), the
    outputs' rows concatenated; ``fn(x)`` itself when ``block`` is ``None``. An output that is not a tensor with one
    row per input row is left to the caller's checks: ``fn`` then runs once more on ``x`` as it is."""
    n = x.shape[0]
    if block is None or n == 0:
        return fn(x)
    outs = []
    for s in range(0, n, block):
        xb = x[s:s + block]
        out = fn(pad_rows(xb, block))
        if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != block:
            return fn(x)
        outs.append(out[:xb.shape[0]])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def row_blocks(n: int, batch_size: int, block: int | None) -> Iterator[tuple[torch.Tensor, int]]:
    """Row indices of each forward pass over ``n`` images and how many of them are real: batches of ``batch_size``
    rows when ``block`` is ``None``, else blocks of exactly ``block`` rows, the last padded with its last row."""
    step = batch_size if block is None else block
    for s in range(0, n, step):
        rows = torch.arange(s, min(s + step, n))
        yield (rows if block is None else pad_rows(rows, block)), rows.numel()
