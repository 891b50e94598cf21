"""Measuring helpers shared by every benchmark: synchronised timers and synthetic test images.

Timings are wall-clock seconds between device synchronisations (``torch.cuda.synchronize`` on CUDA),
so queued asynchronous work is always included. Fast calls are repeated inside one timed block until it
lasts ``min_time`` seconds (launch latency and timer resolution then cost little); the reported figure
is the median over ``repeats`` blocks, with the candidates interleaved so that a machine whose speed
drifts favours none of them.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["REPO_ROOT", "ensure_repo_on_path", "sync", "bench", "synthetic_images"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def ensure_repo_on_path() -> None:
    """Put the repository root first on ``sys.path`` (aprkit need not be installed to run a benchmark)."""
    root = str(REPO_ROOT)
    if not sys.path or sys.path[0] != root:
        sys.path.insert(0, root)


def sync(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device | str,
    *,
    min_time: float = 0.0,
    max_inner: int = 1000,
    deadline: float | None = None,
) -> dict[str, float]:
    """Median seconds per call of each function (interleaved repeats, after one warm-up call each).

    ``min_time``: each timed block repeats a call until it lasts about this long (calibrated on the
    warm-up; at most ``max_inner`` calls per block). ``deadline`` (``time.perf_counter()`` value): stop
    after the current round once it has passed (at least one round is always timed).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    inner: dict[str, int] = {}
    for name, fn in fns.items():  # warm-up (kernels, plans, allocator), then calibration if asked
        fn()
        sync(device)
        inner[name] = 1
        if min_time > 0:
            t0 = time.perf_counter()
            fn()
            sync(device)
            single = max(time.perf_counter() - t0, 1e-7)
            inner[name] = max(1, min(max_inner, math.ceil(min_time / single)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = inner[name]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / n)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return {k: statistics.median(v) for k, v in times.items()}


def synthetic_images(n: int, size: int, seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    """Smooth random uint8 images ``(n, 3, size, size)``: bilinear-upsampled low-resolution noise, plus
    ``noise`` times per-pixel uniform noise (edges and texture). Content barely affects timing."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    img = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    if noise:
        img = img + noise * torch.rand(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)
