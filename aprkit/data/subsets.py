"""Subsets and whole-batch reads: :func:`batch_source` finds a dataset's fast ``get_batch(indices)`` (its own, one
through torch's ``Subset``, or one over a ``tensors`` pair such as ``TensorDataset``), :class:`SubsetDataset`
(:func:`subset`, :func:`first_n`) selects rows and keeps that path, and :func:`attribute_labels` reads the labels
without decoding an image. :func:`aprkit.data.loading.iter_batches` reads whole batches through the fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .._checks import check_integer_labels, dataset_len
from .arrays import _as_index_array, integer_positions

__all__ = ["SubsetDataset", "subset", "first_n", "batch_source", "attribute_labels"]


class SubsetDataset(Dataset):
    """Rows ``indices`` of ``dataset``, keeping its fast ``get_batch`` path and ``classes``."""

    #: set on the seeded random subsets ``aprkit train`` draws for ``data.limit`` (its report says so)
    drawn_by_limit = False

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray | torch.Tensor):
        idx = integer_positions(indices)
        n = dataset_len(dataset)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"subset indices must lie in [0, {n}), got {int(idx.min())}..{int(idx.max())}")
        self.dataset, self.indices = dataset, idx
        self.classes = getattr(dataset, "classes", None)
        if batch_source(dataset) is not None:
            self.get_batch = self._get_batch  # only advertise the fast path when the parent has one

    def __len__(self) -> int:
        return int(self.indices.size)

    def _get_batch(self, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
        sel = _as_index_array(indices, len(self))
        src = batch_source(self.dataset)
        assert src is not None
        return src(self.indices[sel])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[int(self.indices[index])]


def subset(dataset: Dataset, n: int | Sequence[int], *, seed: int | None = None) -> SubsetDataset:
    """A subset: explicit ``indices``, the first ``n`` samples, or (with ``seed``) ``n`` random ones without
    replacement."""
    total = dataset_len(dataset)
    if isinstance(n, bool):
        raise TypeError(f"n must be a count (int) or a sequence of indices, got {n!r}")
    if isinstance(n, (int, np.integer)):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        n = min(int(n), total)
        if seed is None:
            return SubsetDataset(dataset, np.arange(n))
        g = torch.Generator().manual_seed(int(seed))
        return SubsetDataset(dataset, torch.randperm(total, generator=g)[:n].sort().values)
    return SubsetDataset(dataset, n)


def first_n(dataset: Dataset, n: int) -> SubsetDataset:
    """The first ``n`` samples (all of them when ``n`` exceeds the length)."""
    return subset(dataset, n)


class _SubsetSource:
    def __init__(self, inner: Any, idx: np.ndarray):
        self.inner, self.idx = inner, idx

    def __call__(self, i: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(self.idx[_as_index_array(i, len(self.idx))])


class _TensorSource:
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        check_integer_labels(y, "the TensorDataset's labels")  # fractional labels are refused, not truncated
        self.x, self.y = x, y

    def __call__(self, i: Any) -> tuple[torch.Tensor, torch.Tensor]:
        sel = _as_index_array(i, self.x.shape[0])
        sel_t = sel if isinstance(sel, slice) else torch.from_numpy(sel)
        # a slice is a view: copy it, so that a caller writing into the batch never changes the dataset (as the
        # DataLoader path's collated batches and ``ArrayDataset.get_batch`` never alias their source)
        x, y = self.x[sel_t], self.y[sel_t]
        if x.device.type != "cpu" or y.device.type != "cpu":  # a TensorDataset on an accelerator: batches on the host,
            return x.cpu(), y.to("cpu", torch.int64)            # as every source gives them (pinned, then streamed)
        return (x.clone() if isinstance(sel, slice) else x), y.to(torch.int64, copy=isinstance(sel, slice))


def batch_source(dataset: Dataset) -> Any:
    """The dataset's fast ``get_batch(indices) -> (uint8 (B,C,H,W), int64 (B,))``, or ``None``."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch
    if isinstance(dataset, Subset):
        inner = batch_source(dataset.dataset)
        return None if inner is None else _SubsetSource(inner, np.asarray(dataset.indices, dtype=np.int64))
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, (tuple, list)) and len(tensors) >= 2:
        x, y = tensors[0], tensors[1]
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 4 and isinstance(y, torch.Tensor):
            return _TensorSource(x, y)
    return None


def attribute_labels(dataset: Dataset) -> torch.Tensor | None:
    """Labels ``(N,)`` int64 from the dataset's ``labels`` / ``targets`` attribute (also through ``Subset``), without
    decoding an image; ``None`` when it has no such attribute holding one label per item."""
    if isinstance(dataset, (Subset, SubsetDataset)):  # torch's and aprkit's subsets: the parent's labels, selected
        inner = attribute_labels(dataset.dataset)
        return None if inner is None else inner[torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long)]
    n = dataset_len(dataset)
    for attr in ("labels", "targets"):
        value = getattr(dataset, attr, None)
        if value is not None and not callable(value) and len(value) == n:
            return torch.as_tensor(value).long()
    return None
