"""The input side of streaming inference: uint8 batches in dataset order, pinned and read ahead for a GPU.

``iter_batches`` yields ``(uint8 images (B, C, H, W), labels (B,), dataset indices (B,))``. Array-backed
datasets (a ``get_batch(indices)`` method) are sliced once per batch; other datasets go through a
``DataLoader``. For a CUDA device the batches are read straight into page-locked (pinned) host memory, so
``tensor.to(device, non_blocking=True)`` is an asynchronous DMA copy, and (without loader workers) a
background thread reads the next batches while the device computes the current one. Pinned blocks come
from PyTorch's caching host allocator, which does not hand a block out again before the copies that read it
have finished, so no batch is overwritten while in flight. The batches, their order and the numbers computed
from them are the same on every path.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..._checks import dataset_len, describe_value
from ...distributed import group_info

__all__ = ["iter_batches", "prefetch", "default_prefetch"]


def default_prefetch(device: torch.device | None, num_workers: int) -> int:
    """Batches read ahead in a background thread: 2 for CUDA without loader workers, else 0.

    Off on the CPU: there the reading thread would compete with the forward pass for the same cores
    (measured slower with 2 threads), and there is no device to overlap with.
    """
    return 2 if device is not None and device.type == "cuda" and num_workers == 0 else 0


def prefetch(make_iter: Callable[[], Iterable[Any]], depth: int) -> Iterator[Any]:
    """Iterate ``make_iter()`` in a background thread, at most ``depth`` items ahead of the consumer.

    Items arrive in order; an exception raised while producing is re-raised here; closing this generator
    early (or an error in the consumer) stops the thread at its next item.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive number of items, got {depth!r}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in make_iter():
                if not put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((end, exc))
            return
        put((end, None))

    thread = threading.Thread(target=work, name="aprkit-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()


def _collate(samples: list) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*samples, strict=True)
    for img in images[:1]:
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim != 3:
            raise TypeError("datasets must yield (uint8 image tensor (C, H, W), int label); "
                            f"got an image of type {describe_value(img)}")
    if len({img.shape for img in images}) > 1:
        raise _SizeMismatch("images of one batch differ in size")
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)


class _SizeMismatch(ValueError):
    """Raised by ``_collate``; ``iter_batches`` replaces it with a message naming one file of each size."""


def _named_sizes(loader: Any, chunks: list, dataset: Any) -> Iterator[tuple[Any, Any]]:
    it = iter(loader)
    for chunk in chunks:
        try:
            batch = next(it)
        except _SizeMismatch:
            from aprkit.data.loading import describe_size_mismatch

            raise ValueError(describe_size_mismatch(dataset, list(chunk))) from None
        yield chunk, batch


class _BatchFetch(Dataset):
    """Adapter so a DataLoader (with workers) calls ``dataset.get_batch(indices)`` once per batch.

    ``pin_memory=True`` (in-process only): the batch is read into pinned memory, directly when ``get_batch``
    takes a ``pin_memory`` argument (one copy), else pinned afterwards.
    """

    def __init__(self, dataset: Any, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.pin_memory = pin_memory
        try:
            self._direct = pin_memory and "pin_memory" in inspect.signature(dataset.get_batch).parameters
        except (TypeError, ValueError):  # no introspectable signature
            self._direct = False

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(indices, range) and indices.step == 1:
            contiguous = True
        else:
            contiguous = all(b - a == 1 for a, b in zip(indices, indices[1:], strict=False))
        where = slice(indices[0], indices[-1] + 1) if contiguous else list(indices)
        if self._direct:
            images, labels = self.dataset.get_batch(where, pin_memory=True)
        else:
            images, labels = self.dataset.get_batch(where)
            if self.pin_memory and isinstance(images, torch.Tensor) and not images.is_pinned():
                images = images.pin_memory()
        return images, torch.as_tensor(labels, dtype=torch.long)


def iter_batches(
    dataset: Dataset,
    batch_size: int = 256,
    *,
    num_workers: int = 0,
    limit: int | None = None,
    device: torch.device | None = None,
    distributed: bool = True,
    read_ahead: int | None = None,
) -> Generator[tuple[torch.Tensor, torch.Tensor, torch.Tensor], None, None]:
    """Yield ``(uint8 images (B, C, H, W), labels (B,), dataset indices (B,))`` in dataset order.

    For a CUDA ``device`` the images are in pinned host memory. ``read_ahead``: batches read ahead in a
    background thread (default :func:`default_prefetch`: 2 on CUDA without workers, 0 otherwise).
    Under an initialised process group (and ``distributed=True``) each rank gets its strided share;
    the last batches of some ranks repeat a few samples (``DistributedSampler`` padding), which
    ``predict`` removes when gathering.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = dataset_len(dataset)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of images, got {limit}")
        n = min(n, int(limit))
    if n == 0:
        raise ValueError("the dataset is empty; expected at least one image")
    depth = default_prefetch(device, num_workers) if read_ahead is None else int(read_ahead)
    if depth < 0:
        raise ValueError(f"read_ahead must be a number of batches >= 0, got {read_ahead!r}")
    rank, world = group_info() if distributed else (0, 1)
    indices: Sequence[int] = range(n)
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        # the sampler reads only the length of its dataset and yields indices into it
        shard: Iterable[int] = DistributedSampler(Subset(dataset, indices), num_replicas=world, rank=rank,
                                                  shuffle=False)
        indices = [indices[i] for i in shard]
    pin = device is not None and device.type == "cuda"
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]

    def batches() -> Iterator[tuple[Any, Any]]:
        if hasattr(dataset, "get_batch") and num_workers == 0:  # array-backed, in-process: one slice per batch
            loader: Any = map(_BatchFetch(dataset, pin_memory=pin).__getitem__, chunks)
        elif hasattr(dataset, "get_batch"):  # the same in worker processes
            loader = DataLoader(_BatchFetch(dataset), sampler=chunks, batch_size=None, num_workers=num_workers,
                                pin_memory=pin)
        else:
            loader = DataLoader(
                Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                collate_fn=_collate, pin_memory=pin,
            )
        return _named_sizes(loader, chunks, dataset)

    for chunk, (images, labels) in (prefetch(batches, depth) if depth else batches()):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError(f"datasets must yield uint8 images (C, H, W) (batches (B, C, H, W)); "
                            f"got {describe_value(images)}")
        if len(labels) != len(images):
            raise ValueError(f"label/image count mismatch: the dataset returned {len(images)} images "
                             f"but {len(labels)} labels")
        yield images, labels, (torch.arange(chunk.start, chunk.stop) if isinstance(chunk, range)
                               else torch.as_tensor(chunk))
