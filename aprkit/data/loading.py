"""Batch reading: uint8 ``(B, C, H, W)`` batches + int64 labels from any aprkit dataset.

:func:`iter_batches` takes a fast path for array-backed datasets (anything with ``get_batch(indices)``,
e.g. :class:`ArrayDataset` over a memory-mapped ``.npy`` or :class:`NoiseDataset`, and datasets with a
``tensors`` pair such as ``TensorDataset``): whole batches are sliced out of the array, with no per-image
decoding or collation. Other datasets go through a ``DataLoader`` with :func:`collate_uint8`. Either way
``num_workers`` processes can read ahead, ``indices`` selects samples and ``shard=True`` a ``torchrun`` rank's share.
With ``pin_memory`` the batches are read straight into page-locked (pinned) host memory, so
``tensor.to(device, non_blocking=True)`` is an asynchronous DMA copy, and ``read_ahead`` batches can be read in a
background thread while the device computes. Pinned blocks come from PyTorch's caching host allocator, which does
not hand a block out again before the copies that read it have finished, so no batch is overwritten in flight. The
batches, their order and the numbers computed from them are the same on every path.
"""

from __future__ import annotations

import inspect
import numbers
import os
import queue
import signal
import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import check_chw_layout, dataset_len, describe_value
from ..distributed import group_info
from .arrays import ArrayDataset, positions_in
from .subsets import SubsetDataset, attribute_labels, batch_source, first_n, subset

__all__ = ["iter_batches", "collate_uint8", "subset", "first_n", "SubsetDataset", "dataset_tensors", "attribute_labels",
           "to_array_dataset", "batch_source", "describe_size_mismatch", "prefetch"]


def describe_size_mismatch(dataset: Dataset, indices: Sequence[int]) -> str:
    """Why ``indices`` of ``dataset`` cannot be batched: one file (or index) of each image size, and the fix (the
    dataset's own ``size_fix`` text where it has one)."""
    first: dict[tuple[int, ...], int] = {}
    for i in indices:
        first.setdefault(tuple(dataset[int(i)][0].shape), int(i))
    while getattr(dataset, "samples", None) is None and hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        first = {s: int(dataset.indices[i]) for s, i in first.items()}  # subsets: name the parent's files
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    where = [f"{samples[i][0] if samples is not None else f'item {i}'} is {'x'.join(map(str, s[-2:]))}"
             + (f" with {s[0]} channels" if len({t[0] for t in first}) > 1 else "") for s, i in first.items()]
    fix = getattr(dataset, "size_fix", None) or ("get_dataset('folder:ROOT', resize=256, crop=224) (the spec "
                                                "'folder:ROOT?resize=256&crop=224' on the command line)")
    return (f"images differ in size ({'; '.join(where)}); a batch needs one size: resize the files to one size, or in "
            f"Python pass {fix}")


class _SizeMismatch(ValueError):
    """Raised by :func:`collate_uint8`; :func:`iter_batches` replaces it with :func:`describe_size_mismatch`."""


def collate_uint8(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(uint8 (C, H, W), int)`` samples into ``(uint8 (B, C, H, W), int64 (B,))``."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    images = [b[0] for b in batch]
    if not isinstance(images[0], torch.Tensor) or images[0].dtype != torch.uint8 or images[0].ndim != 3:
        raise TypeError("datasets must yield (uint8 image tensor (C, H, W), int label); "
                        f"got an image of type {describe_value(images[0])}")
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise _SizeMismatch(
            f"images in a batch differ in size ({sorted(shapes)[:3]}...); pass resize=/crop= to the dataset "
            "(e.g. get_dataset('folder:ROOT', resize=256, crop=224))"
        )
    return torch.stack(images), torch.tensor([int(b[1]) for b in batch], dtype=torch.int64)


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


class _Chunks(Dataset):
    """One batch per item: ``source(chunk)``, read into pinned memory when ``pin`` (in-process only), directly
    when the source takes a ``pin_memory`` argument (one copy), else pinned afterwards."""

    def __init__(self, source: Any, chunks: list[Any], pin: bool = False):
        self.source, self.chunks, self.pin = source, chunks, pin
        try:
            self._direct = pin and "pin_memory" in inspect.signature(source).parameters
        except (TypeError, ValueError):  # no introspectable signature
            self._direct = False

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._direct:
            return self.source(self.chunks[i], pin_memory=True)
        images, labels = self.source(self.chunks[i])
        if self.pin and isinstance(images, torch.Tensor) and not images.is_pinned():
            images = images.pin_memory()
        return images, labels


def _end_worker(signum: int, frame: FrameType | None) -> None:
    os._exit(0)  # a clean exit: the main process's DataLoader takes a worker killed by a signal for a failure


def worker_stop_signals(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn`` that leaves a stop to the main process. The worker ignores Ctrl-C
    (``SIGINT``), which a terminal sends to every process of the job: it goes on loading while the main process
    finishes its step (a training run saves it, see ``aprkit.train.signals``); a worker that stopped on it failed
    the next batch ("worker exited unexpectedly"). ``SIGTERM`` ends the worker at once but cleanly (exit status 0):
    it is how the main process ends its workers (the DataLoader's shutdown, Python's exit), so it must work, and a
    scheduler's ``SIGTERM`` to every process of the job then does not fail the main process's step ("killed by
    signal") before it is saved. A worker whose main process is gone ends by itself (the DataLoader's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_worker)


def _chunks(indices: np.ndarray | None, n: int, batch_size: int, drop_last: bool) -> list[Any]:
    if indices is None:
        out: list[Any] = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    else:
        out = [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]
    if drop_last and out:
        last = out[-1]
        size = (last.stop - last.start) if isinstance(last, slice) else len(last)
        if size < batch_size:
            out.pop()
    return out


def _order(dataset: Dataset, indices: Any, limit: int | None, shard: bool) -> tuple[np.ndarray | None, int]:
    """The samples to read, in order (``None``: ``range(n)``), and ``n``: ``indices`` capped at ``limit``, then
    this rank's strided share under an initialised process group (``DistributedSampler`` padding included)."""
    n = dataset_len(dataset)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
            raise ValueError(f"limit must be a positive number of images, got {limit!r}")
        n = min(n, int(limit))
    if n == 0:
        raise ValueError("the dataset is empty; expected at least one image")
    idx = None
    if indices is not None:
        idx = positions_in(indices, dataset_len(dataset))[:limit]  # dataset indices, as with_indices reports them
        if idx.size == 0:
            raise ValueError("indices is empty; expected at least one position of an image (None: every image)")
    rank, world = group_info() if shard else (0, 1)
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        order = idx if idx is not None else np.arange(n)
        # the sampler reads only the length of its dataset and yields positions into it
        share: DistributedSampler[int] = DistributedSampler(Subset(dataset, order.tolist()), num_replicas=world,
                                                            rank=rank, shuffle=False)
        idx = order[np.fromiter(share, dtype=np.int64)]
    return idx, n


#: where the loaders draw their workers' base seeds: a generator of aprkit's own, as from the global one each
#: evaluation advanced the caller's random stream (a training loop evaluating between epochs trained otherwise); the
#: batches draw nothing from it (per-item seeds)
_LOADER_SEEDS = torch.Generator().manual_seed(0)


def iter_batches(
    dataset: Dataset,
    batch_size: int = 256,
    *,
    num_workers: int = 0,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    limit: int | None = None,
    device: torch.device | str | None = None,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    shard: bool = False,
    read_ahead: int = 0,
    with_indices: bool = False,
    prefetch_factor: int = 2,
) -> Generator[tuple[torch.Tensor, ...], None, None]:
    """Yield ``(uint8 (B, C, H, W), int64 (B,))`` batches of ``dataset`` in order (``with_indices``: also the
    int64 dataset indices ``(B,)`` of each batch).

    ``indices`` restricts (and orders) the samples, ``limit`` caps their number; ``shard=True`` under an
    initialised process group gives each rank its strided share, the last batches of some ranks repeating a few
    samples (``DistributedSampler`` padding). ``pin_memory`` (default: ``device`` is CUDA) reads batches into
    page-locked memory; ``device`` moves each batch there (non-blocking when pinned). ``read_ahead``: batches
    read ahead in a background thread (:func:`prefetch`). Images stay uint8: convert and normalise on the device.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
        raise ValueError(f"read_ahead must be a number of batches >= 0, got {read_ahead!r}")
    idx, n = _order(dataset, indices, limit, shard)
    dev = torch.device(device) if device is not None else None
    pin = (dev is not None and dev.type == "cuda") if pin_memory is None else bool(pin_memory)
    if pin and not torch.accelerator.is_available():  # page-locked memory needs an accelerator: as the DataLoader
        warnings.warn("pin_memory=True but no accelerator is available: batches are not pinned", stacklevel=2)
        pin = False
    source = batch_source(dataset)
    wk: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin, "generator": _LOADER_SEEDS}
    if num_workers > 0:
        wk.update(prefetch_factor=prefetch_factor, persistent_workers=False, worker_init_fn=worker_stop_signals)
    chunks = _chunks(idx, n, batch_size, drop_last)
    if source is None:  # item by item: index lists for the DataLoader's batch sampler
        chunks = [list(range(c.start, c.stop)) if isinstance(c, slice) else c.tolist() for c in chunks]

    def batches() -> Iterator[tuple[Any, Any]]:
        if source is not None and num_workers == 0:  # array-backed, in-process: one slice per batch
            fetch = _Chunks(source, chunks, pin)
            for i, chunk in enumerate(chunks):
                yield chunk, fetch[i]
            return
        if source is not None:  # the same in worker processes
            loader: Any = DataLoader(_Chunks(source, chunks), batch_size=None, shuffle=False, **wk)
        else:
            loader = DataLoader(dataset, batch_sampler=chunks, collate_fn=collate_uint8, **wk)
        _LOADER_SEEDS.manual_seed(0)  # every loader the same base seed, whatever ran before it in the process
        it = iter(loader)
        for chunk in chunks:
            try:
                batch = next(it)
            except _SizeMismatch:
                raise ValueError(describe_size_mismatch(dataset, list(chunk))) from None
            yield chunk, batch

    for chunk, (x, y) in (prefetch(batches, read_ahead) if read_ahead else batches()):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
            raise TypeError("datasets must yield uint8 images (C, H, W) (batches (B, C, H, W)); "
                            f"got {describe_value(x)}")
        check_chw_layout(x, "the dataset's image batch")  # (B, H, W, C) reached the model as 32 channels of width 3
        if len(y) != len(x):
            raise ValueError(f"label/image count mismatch: the dataset returned {len(x)} images but {len(y)} labels")
        y = torch.as_tensor(y, dtype=torch.int64)
        if dev is not None:
            x, y = x.to(dev, non_blocking=pin), y.to(dev, non_blocking=pin)
        if with_indices:
            yield x, y, (torch.arange(chunk.start, chunk.stop) if isinstance(chunk, slice) else torch.as_tensor(chunk))
        else:
            yield x, y


def dataset_tensors(
    dataset: Dataset, *, batch_size: int = 256, num_workers: int = 0, progress: bool = False, desc: str = "loading"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of ``dataset`` decoded once: uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)`` (CPU).

    In-memory datasets (:func:`batch_source`, also through subsets) are read in one call; others in batches
    of ``batch_size`` through :func:`iter_batches` (``num_workers`` decoding processes), with a tqdm bar
    labelled ``desc`` when ``progress``. An empty dataset raises ``ValueError``.
    """
    n = dataset_len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    source = batch_source(dataset)
    if source is not None:
        x, y = source(np.arange(n))
        return x, torch.as_tensor(y, dtype=torch.int64)
    from tqdm.auto import tqdm

    xs, ys = [], []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for x, y in iter_batches(dataset, batch_size, num_workers=num_workers):
            xs.append(x)
            ys.append(y)
            bar.update(len(y))
    return torch.cat(xs), torch.cat(ys)


def to_array_dataset(dataset: Dataset, *, batch_size: int = 256, num_workers: int = 0) -> ArrayDataset:
    """Decode every image once into an in-memory :class:`ArrayDataset` (for small sets read many times)."""
    x, y = dataset_tensors(dataset, batch_size=batch_size, num_workers=num_workers)
    return ArrayDataset(x.numpy(), y.numpy(), layout="nchw", classes=getattr(dataset, "classes", None))
