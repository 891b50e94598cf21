"""The input side of streaming inference: the evaluation's policy for :func:`aprkit.data.loading.iter_batches`.

Batches come in dataset order with their dataset indices, each ``torchrun`` rank reads its share, and for a CUDA
device they are read into pinned host memory (``tensor.to(device, non_blocking=True)`` is then an asynchronous
copy), with a background thread reading ahead while the device computes (:func:`default_prefetch`).
"""

from __future__ import annotations

from collections.abc import Generator

import torch
from torch.utils.data import Dataset

from ...data.loading import iter_batches as _read_batches

__all__ = ["iter_batches", "default_prefetch"]


def default_prefetch(device: torch.device | None, num_workers: int) -> int:
    """Batches read ahead in a background thread: 2 for CUDA without loader workers, else 0.

    Off on the CPU: there the reading thread would compete with the forward pass for the same cores
    (measured slower with 2 threads), and there is no device to overlap with.
    """
    return 2 if device is not None and device.type == "cuda" and num_workers == 0 else 0


def iter_batches(
    dataset: Dataset,
    batch_size: int = 256,
    *,
    num_workers: int = 0,
    limit: int | None = None,
    device: torch.device | None = None,
    distributed: bool = True,
    read_ahead: int | None = None,
) -> Generator[tuple[torch.Tensor, ...], None, None]:
    """Yield ``(uint8 images (B, C, H, W), labels (B,), dataset indices (B,))`` in dataset order, on the host.

    For a CUDA ``device`` the images are in pinned host memory. ``read_ahead``: batches read ahead in a
    background thread (default :func:`default_prefetch`). Under an initialised process group (and
    ``distributed=True``) each rank gets its strided share; the last batches of some ranks repeat a few samples
    (``DistributedSampler`` padding), which ``predict`` removes when gathering.
    """
    depth = default_prefetch(device, num_workers) if read_ahead is None else read_ahead
    pin = device is not None and device.type == "cuda"
    return _read_batches(dataset, batch_size, num_workers=num_workers, limit=limit, pin_memory=pin,
                         shard=distributed, read_ahead=depth, with_indices=True)
