"""Measuring helpers shared by every benchmark: synchronised timers and synthetic test images.

Timings are wall-clock seconds between device synchronisations (``torch.cuda.synchronize`` on CUDA),
so queued asynchronous work is always included. Fast calls are repeated inside one timed block until it
lasts ``min_time`` seconds (launch latency and timer resolution then cost little); the reported figure
is the median over ``repeats`` blocks, with the candidates interleaved (in a new order each round) so that
a machine whose speed drifts favours none of them.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["REPO_ROOT", "ensure_repo_on_path", "sync", "bench", "cpu_clock", "synthetic_images"]

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
    clock: Callable[[], float] = time.perf_counter,
    stat: str = "median",
) -> dict[str, float]:
    """Median (``stat="min"``: best) seconds per call of each function (interleaved repeats, after one warm-up call
    each). The best of the repeats suits memory-bound CPU work on a shared machine, where another process's cache and
    memory traffic only add time (counted as this thread's CPU time too).

    ``min_time``: each timed block repeats a call until it lasts about this long (calibrated on the
    warm-up; at most ``max_inner`` calls per block). ``deadline`` (``time.perf_counter()`` value): stop
    after the current round once it has passed (at least one round is always timed). ``clock``: the timer of the
    calls (default wall time; :func:`cpu_clock` picks the thread's CPU time where that measures the same work).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    inner: dict[str, int] = {}
    for name, fn in fns.items():  # warm-up (kernels, plans, allocator), then calibration if asked
        fn()
        sync(device)
        inner[name] = 1
        if min_time > 0:
            t0 = clock()
            fn()
            sync(device)
            single = max(clock() - t0, 1e-7)
            inner[name] = max(1, min(max_inner, math.ceil(min_time / single)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # a fixed order lets one call's leftovers (cache, freed memory) bias the next
        for name in order:
            fn = fns[name]
            n = inner[name]
            sync(device)
            t0 = clock()
            for _ in range(n):
                fn()
            sync(device)
            times[name].append((clock() - t0) / n)
        if deadline is not None and time.perf_counter() > deadline:
            break
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    pick = min if stat == "min" else statistics.median
    return {k: pick(v) for k, v in times.items()}


def cpu_clock(device: torch.device | str) -> tuple[Callable[[], float], str]:
    """The timer for :func:`bench` and its name: the calling thread's CPU time for CPU work on one torch thread
    (all of it then runs on this thread, so it is the same work as wall time minus the time the thread waits
    for a core: far steadier on a shared machine), else wall time."""
    if torch.device(device).type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time, "thread CPU time"
    return time.perf_counter, "wall time"


def synthetic_images(n: int, size: int, seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    """Smooth random uint8 images ``(n, 3, size, size)``: bilinear-upsampled low-resolution noise, plus
    ``noise`` times per-pixel uniform noise (edges and texture). Content barely affects timing."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    img = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    if noise:
        img = img + noise * torch.rand(n, 3, size, size, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)
