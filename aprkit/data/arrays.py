"""Array-backed datasets: uint8 image arrays (in memory or memory-mapped ``.npy``) plus labels.

The fast path of :func:`aprkit.data.iter_batches`: ``get_batch(indices)`` returns a whole uint8 batch
``(B, C, H, W)`` by slicing the array (one contiguous read for a contiguous range), with no per-image
decoding. Memory-mapped files are opened lazily in each process, so DataLoader workers never pickle
the data itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_integer_labels

__all__ = ["ArrayDataset", "NO_LABEL", "load_npy"]

#: label yielded by datasets without class labels (synthetic OOD sets)
NO_LABEL = -1


def integer_positions(indices: Any) -> np.ndarray:
    """``indices`` (sequence, array or tensor of integer positions) as a flat int64 array. A boolean mask or
    non-integer values raise ``TypeError``: cast to positions, a mask ``[F, T, F, T]`` had picked images 0, 1, 0, 1."""
    idx = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if idx.size and idx.dtype.kind not in "iu":
        hint = " (a boolean mask: pass mask.nonzero() for its positions)" if idx.dtype.kind == "b" else ""
        raise TypeError(f"indices must be integer positions, got dtype {idx.dtype}{hint}")
    return idx.astype(np.int64).reshape(-1)


def positions_in(indices: Any, n: int) -> np.ndarray:
    """``indices`` (:func:`integer_positions`) as positions ``0..n - 1`` of ``n`` images, negative ones counted from
    the end; ``IndexError`` naming a position outside them."""
    idx = integer_positions(indices)
    if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
        bad = int(idx.min()) if int(idx.min()) < -n else int(idx.max())
        raise IndexError(f"indices holds {bad}, outside the dataset's {n} images (positions 0..{n - 1}, or -{n}..-1 "
                         "from the end)")
    return np.where(idx < 0, idx + n, idx)


def _as_index_array(indices: Any, n: int) -> np.ndarray | slice:
    """Indices as a slice when they form a contiguous ascending range, else an int64 array."""
    if isinstance(indices, slice):
        start, stop, step = indices.indices(n)
        if step == 1:
            return slice(start, max(stop, start))
        indices = np.arange(start, stop, step)  # other steps (reversed, strided): explicit positions
    idx = positions_in(indices, n)
    if idx.size > 1 and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    if idx.size == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    return idx


#: open memory maps by file version (device, inode, mtime, size): a file's identity without resolving its path (a
#: ``realpath`` is one ``lstat`` per path component, most of the cost of opening a cached map); at most _MAPS_KEPT
_MAPS: dict[tuple[int, int, int, int], np.ndarray] = {}
_MAPS_KEPT = 64


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load(path, mmap_mode="r")``, memoised per file version in this process.

    A -C evaluation opens the same ``<corruption>.npy`` and ``labels.npy`` once per severity; the
    read-only maps are shared instead of re-parsing the header each time (also between two spellings of one path; a
    file rewritten in place has another mtime or size, and a new file another inode).
    """
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _MAPS.get(key)
    if hit is not None:
        return hit
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, EOFError, OSError) as err:  # truncated data, a pickle or random bytes
        if isinstance(err, FileNotFoundError):
            raise
        why = "not a numeric array" if "pickle" in str(err) else str(err)
        raise ValueError(f"{path} is not a readable .npy array ({why}); expected a complete file written by numpy.save "
                         "(truncated or corrupted?)") from None
    if len(_MAPS) >= _MAPS_KEPT:
        _MAPS.pop(next(iter(_MAPS)))  # the oldest
    _MAPS[key] = arr
    return arr


class ArrayDataset(Dataset):
    """Images from a uint8 array ``(N, H, W, C)`` (``layout="nhwc"``, the CIFAR/-C files) or ``(N, C, H, W)``.

    ``images`` is an array, a tensor, or a path to a ``.npy`` file opened with ``np.load(mmap_mode="r")``;
    ``start``/``stop`` select rows (e.g. one severity of a -C file) without reading the rest.
    ``labels`` is an int array ``(stop - start,)`` or ``None`` (then every label is :data:`NO_LABEL`).
    Yields ``(uint8 tensor (C, H, W), int label)``.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor | str | Path,
        labels: np.ndarray | torch.Tensor | Sequence[int] | None,
        *,
        layout: str = "nhwc",
        start: int = 0,
        stop: int | None = None,
        classes: Sequence[str] | None = None,
    ):
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"layout must be 'nhwc' or 'nchw', got {layout!r}")
        self.layout = layout
        self._path: Path | None = None
        self._array: np.ndarray | None = None
        if isinstance(images, (str, Path)):
            self._path = Path(images)
            if not self._path.is_file():
                raise FileNotFoundError(f"image array {self._path} does not exist")
            arr = self._array = self._open()
        else:
            arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
            self._array = arr
        if arr.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got dtype {arr.dtype}")
        if arr.ndim != 4:
            raise ValueError(f"images must have 4 dimensions ({layout.upper()}), got shape {arr.shape}")
        total = arr.shape[0]
        stop = total if stop is None else stop
        if not 0 <= start <= stop <= total:
            raise ValueError(f"rows [{start}, {stop}) are out of range for an array of {total} images")
        self.start, self.stop = int(start), int(stop)
        n = self.stop - self.start
        if labels is None:
            self.labels = np.full(n, NO_LABEL, dtype=np.int64)
        else:
            lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if lab.ndim != 1 or lab.shape[0] != n:
                raise ValueError(f"labels must have shape ({n},) (one per image), got shape {lab.shape}")
            check_integer_labels(lab)
            self.labels = lab.astype(np.int64)
        self.classes = list(classes) if classes is not None else None
        if layout == "nhwc":
            h, w, c = arr.shape[1], arr.shape[2], arr.shape[3]
        else:
            h, w, c = arr.shape[2], arr.shape[3], arr.shape[1]
        other_c = arr.shape[1] if layout == "nhwc" else arr.shape[3]
        if c > 4 and other_c in (1, 3):  # an (N, C, H, W) array read as NHWC (or the reverse): H or W "channels"
            other = "nchw" if layout == "nhwc" else "nhwc"
            raise ValueError(f"images of shape {arr.shape} read as {layout.upper()} would have {c} channels: pass "
                             f"layout={other!r} if the array is {other.upper()}")
        self.image_shape = (int(c), int(h), int(w))

    def _open(self) -> np.ndarray:
        assert self._path is not None
        return load_npy(self._path)

    @property
    def array(self) -> np.ndarray:
        """The underlying (possibly memory-mapped) array, opened on first use in this process."""
        if self._array is None:
            self._array = self._open()
        return self._array

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._path is not None:
            state["_array"] = None  # reopen the memmap in the worker instead of pickling its contents
        return state

    def __len__(self) -> int:
        return self.stop - self.start

    def _to_chw(self, out: torch.Tensor) -> torch.Tensor:
        # NHWC files give a (B, C, H, W) view with channels_last strides, the layout the convolutions
        # prefer (no transpose copy needed)
        return out.permute(0, 3, 1, 2) if self.layout == "nhwc" else out

    def get_batch(self, indices: Any, pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``uint8 (B, C, H, W)`` and labels ``int64 (B,)`` for ``indices`` (slice, sequence or tensor).

        The images are one fresh copy out of the (possibly memory-mapped) array, never aliasing the file; with
        ``pin_memory=True`` that copy is made straight into page-locked memory (for asynchronous copies to
        CUDA). For ``layout="nhwc"`` they are a channels_last-strided view (call ``.contiguous()`` for NCHW memory).
        """
        n = len(self)
        idx = _as_index_array(indices, n)
        if isinstance(idx, slice):
            src = self.array[slice(idx.start + self.start, idx.stop + self.start, idx.step)]
            out = torch.empty(src.shape, dtype=torch.uint8, pin_memory=pin_memory)
            out.numpy()[...] = src  # the only copy: file (or array) -> out
        else:
            order = np.argsort(idx, kind="stable")  # sorted reads are much faster on a memmap
            x_sorted = self.array[idx[order] + self.start]
            out = torch.empty(x_sorted.shape, dtype=torch.uint8, pin_memory=pin_memory)
            out.numpy()[order] = x_sorted
        y = self.labels[idx]
        return self._to_chw(out), torch.from_numpy(np.asarray(y, dtype=np.int64))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index = index % n
        x = self.array[self.start + index]
        arr = x.transpose(2, 0, 1) if self.layout == "nhwc" else x
        return torch.from_numpy(np.array(arr, order="C", copy=True)), int(self.labels[index])

    def __repr__(self) -> str:
        src = str(self._path) if self._path is not None else "in-memory array"
        return f"ArrayDataset({src}, rows {self.start}:{self.stop}, image_shape={self.image_shape})"
