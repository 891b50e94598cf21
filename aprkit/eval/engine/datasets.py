"""Datasets of an evaluation: data specs, tensors and datasets as one kind of dataset, and their cache identity.

``as_dataset`` turns a spec string (``"cifar10:ROOT"``, ``"folder:ROOT"``, ...), ``(images, labels)`` tensors or a
dataset into a dataset yielding ``(uint8 (C, H, W), int)``; ``dataset_id`` names its content for cache keys (the
normalised spec with its files' state, a ``cache_id`` attribute or a content hash). Within
``memo_dataset_ids`` (one ``evaluate`` call) each is read, scanned and hashed once.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..._checks import check_integer_labels, dataset_len, describe_value, outside_level
from ...data.arrays import NO_LABEL

__all__ = ["TensorImageDataset", "as_dataset", "dataset_id", "memo_dataset_ids", "corrupted_cell_id"]


class TensorImageDataset(Dataset):
    """Wrap uint8 images ``(N, C, H, W)`` and integer labels ``(N,)`` as an aprkit dataset (no labels: every label is
    ``NO_LABEL``, so suites that need labels refuse the data instead of scoring against class 0). Tensors on an
    accelerator are copied to the host once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
            raise TypeError(f"images must be a uint8 tensor (N, C, H, W), got {describe_value(images)}")
        if images.shape[1] > 4 and images.shape[-1] in (1, 3):  # the usual transposition; other counts are fine
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}: an (N, H, W, C) batch? "
                             "use images.permute(0, 3, 1, 2)")
        labels = torch.full((len(images),), NO_LABEL, dtype=torch.long) if labels is None else torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must have shape ({len(images)},) to match the images, got {tuple(labels.shape)}")
        check_integer_labels(labels)
        # kept on the host: batches are read into pinned memory and streamed to the model's device (tensors already
        # on an accelerator could be neither pinned nor indexed with the host's indices)
        self.images, self.labels = images.detach().cpu(), labels.long().cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, int]]:
        return list(zip(self.images[idx], self.labels[idx].tolist(), strict=True))

    def get_batch(
        self, indices: slice | list[int] | torch.Tensor, pin_memory: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``uint8 (B, C, H, W)`` and labels ``(B,)`` for a slice or index list (the batch fast path).

        ``pin_memory=True``: the images are copied once into page-locked memory (for asynchronous copies to CUDA).
        """
        if isinstance(indices, slice):  # copies: a caller writing into the batch never changes the dataset
            images, labels = self.images[indices], self.labels[indices].clone()
            return (images.pin_memory() if pin_memory else images.clone()), labels
        idx = torch.as_tensor(indices, dtype=torch.long)
        if not pin_memory:
            return self.images[idx], self.labels[idx]
        out = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
        return torch.index_select(self.images, 0, idx, out=out), self.labels[idx]


def _normalise_spec(spec: str, split: str | None = None) -> str:
    """``spec`` with its generator's version, or its resolved path and the state of its files (``path_state``; a
    CIFAR PNG tree's ``split`` folder to the image files, which lie a level deeper than ``path_state`` looks), and its
    ``?`` options (``folder:ROOT?resize=256&crop=224``) in one order."""
    from aprkit.data.registry import split_spec_options

    try:
        base, opts = split_spec_options(spec)
    except (TypeError, ValueError):  # the reader names the problem
        return spec
    query = "&".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return _normalise_base(base, split) + (f"?{query}" if query else "")


def _normalise_base(spec: str, split: str | None) -> str:
    from aprkit.data.registry import DATASET_KINDS, KIND_ALIASES, parse_spec

    head = spec.partition(":")[0].strip().lower()  # parse_spec's reading of the kind, without its did-you-mean
    if KIND_ALIASES.get(head, head) not in DATASET_KINDS:  # not a spec (a corruption name, a cell's origin): as given
        return spec
    try:  # the reader's own reading of the spec: kind in lower case, the path stripped and ``~`` expanded
        kind, rest = parse_spec(spec)
    except (TypeError, ValueError):  # not a dataset spec: the reader names the problem
        return spec
    sep = ":" if ":" in spec else ""
    rest = rest.lower() if kind == "noise" else str(Path(rest).expanduser()) if rest else rest  # as the readers
    spec = f"{kind}{sep}{rest}"
    if kind == "synthetic":  # generated images: their generator's version names them
        from aprkit.data.synthetic import GENERATOR_VERSION

        return f"{spec}@v{GENERATOR_VERSION}"
    if kind == "noise":  # generated noise sets: their definitions' version names them
        from aprkit.data.noise import NOISE_VERSION

        return f"{spec}@v{NOISE_VERSION}"
    if not rest:  # a downloadable kind without a folder: the data root's copy ($APRKIT_DATA), when present
        from aprkit.data.registry import DOWNLOADABLE, resolve_spec

        if kind in DOWNLOADABLE:
            try:
                kind, sep, rest = resolve_spec(spec).partition(":")
            except FileNotFoundError:  # not there: the reader names what is missing
                return spec
    if sep and rest and Path(rest).exists():  # on-disk data: its path and the state of its files
        from aprkit._hash import path_state

        known = _MEMO.spec_ids.get((spec, split))
        if known is None:
            from aprkit.data.folder import IDENTITY_DEPTH, READER_VERSION

            images = getattr(DATASET_KINDS[kind], "image_files", False)  # images at any depth below a class
            # an image folder down to its deepest images; a CIFAR tree's split below, an ImageNet-C cell per cell
            state = path_state(rest, depth=IDENTITY_DEPTH if kind in ("folder", "tinyimagenet") else 2)
            if kind in ("cifar10", "cifar100") and split and (Path(rest) / split).is_dir():  # root/split/class/image
                state += "+" + path_state(Path(rest) / split, depth=IDENTITY_DEPTH)
            if images:  # how the files are scanned and decoded
                state += f"+reader{READER_VERSION}"
            known = f"{kind}:{Path(rest).resolve()}@{state}"
            if _MEMO.depth:
                _MEMO.spec_ids[(spec, split)] = known
        return known
    return spec


def as_dataset(data: Any, split: str = "test") -> Dataset:
    """A dataset from a spec string (``"cifar10:ROOT"``, ``"folder:ROOT"``, ...), a Dataset or ``(images, labels)``."""
    if isinstance(data, str):
        from aprkit.data import get_dataset

        if not _MEMO.depth:
            return get_dataset(data, split)
        ds = _MEMO.datasets.get((data, split))  # one reader per spec within an evaluate call: a PNG tree's file
        if ds is None:  # index is built (and its images decoded) once, not once per corrupted cell
            ds = _MEMO.datasets[(data, split)] = get_dataset(data, split)
        return ds
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return TensorImageDataset(data[0], data[1])
    if isinstance(data, torch.Tensor):
        return TensorImageDataset(data)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return _seeded_if_drawing(data)
    raise TypeError(
        "data must be a dataset spec string (e.g. 'cifar10:ROOT', 'folder:ROOT'), a Dataset yielding "
        f"(uint8 image (C, H, W), int label), or an (images, labels) tensor pair; got {type(data).__name__}"
    )


#: a caller's dataset -> whether reading it draws random numbers (checked once per dataset)
_READS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _seeded_if_drawing(data: Any) -> Any:
    """``data``, or read under per-item seeds (:class:`aprkit.data.seeded.SeededReads`) when reading its items draws
    random numbers (a random transform): the evaluation's loaders read such a dataset's items from the global
    generators of whichever process and batch they fell in, so its numbers depended on the batch size and worker
    count, and with no workers changed from run to run. Datasets handing out whole batches are read as they are, and
    draws from a generator of the dataset's own (albumentations 2 keeps one) are not seen: only the global ones."""
    from ...data.seeded import SeededReads, draws_random_numbers
    from ...data.subsets import batch_source

    if isinstance(data, SeededReads) or batch_source(data) is not None:
        return data
    try:
        return SeededReads(data) if _READS[data] else data
    except (KeyError, TypeError):  # not seen yet, or not weak-referenceable (then checked each time)
        pass
    drew = draws_random_numbers(data)
    if drew:
        warnings.warn(f"the evaluation data ({type(data).__name__}) draws random numbers when its items are read (a "
                      "random transform?): each item is read under a seed of its own, so its numbers do not depend on "
                      "the batch size or worker count; evaluate without random transforms unless that is meant",
                      RuntimeWarning, stacklevel=outside_level())
    with contextlib.suppress(TypeError):
        _READS[data] = drew  # (a flag: a value holding the dataset would keep it alive for ever)
    return SeededReads(data) if drew else data


def dataset_id(data: Any, split: str = "test") -> str:
    """A stable identifier for cache keys: the normalised spec, a ``cache_id`` attribute or a content hash."""
    if isinstance(data, str):
        return f"{_normalise_spec(data, split)}#{split}"
    value = getattr(data, "cache_id", None)  # documented: the dataset names its content (only this attribute: a
    if isinstance(value, str) and value:  # user's own ``spec`` string was trusted too, its images never read)
        return value
    ds = as_dataset(data, split)
    try:
        return _MEMO.content_ids[_memo_key(ds)]
    except (KeyError, TypeError):  # not seen yet, or not weak-referenceable
        pass
    n = dataset_len(ds)
    h = hashlib.sha1(f"{type(ds).__name__}:{n}".encode())
    images, labels = getattr(ds, "images", None), getattr(ds, "labels", None)
    if isinstance(ds, TensorDataset):  # torch's own in-memory dataset: its images and labels are its tensors
        in_memory: tuple[Any, ...] | None = ds.tensors
    else:
        in_memory = (images, labels) if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) else None
    if in_memory is not None:  # in memory: every image and label
        for t in in_memory:
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)  # its buffer, no copy
    else:  # other datasets: every label they hold and in-memory images (e.g. torchvision's ``data`` array), else
        # 16 images spread over the whole set (reading every image from disk would cost a pass)
        from aprkit.data.loading import attribute_labels

        try:
            all_labels = attribute_labels(ds)
        except (TypeError, ValueError):  # labels that are not class indices (strings): the sampled items say them
            all_labels = None
        if all_labels is not None:
            h.update(b"labels" + all_labels.cpu().contiguous().numpy().tobytes())
        array = _pixel_array(ds, n)
        if array is not None:
            with warnings.catch_warnings():  # a read-only memory map (a -C file's): only read here
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                t = torch.as_tensor(array).detach().cpu().contiguous()
            h.update(f"images{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        else:
            _warn_sampled(ds)
    # 16 items spread over the whole set, as the dataset hands them out: a transform on access (or an own
    # __getitem__) of a dataset that holds its images in memory changes them (they were keyed by the raw tensors)
    for i in sorted({(k * (n - 1)) // 15 for k in range(16)}) if n else []:
        img, label = ds[i]
        h.update(torch.as_tensor(img).detach().cpu().contiguous().numpy().tobytes())
        h.update(str(int(label)).encode())
    ident = f"{type(ds).__name__}-{n}-{h.hexdigest()[:16]}"
    if _MEMO.depth:  # within one evaluate call
        with contextlib.suppress(TypeError):
            _MEMO.content_ids[_memo_key(ds)] = ident
    return ident


def _memo_key(ds: Any) -> Any:
    """The object a dataset's content id is remembered by: a drawing dataset's own (``as_dataset`` wraps it in a new
    ``SeededReads`` of seed 0 each call, whose items are the same), else the dataset."""
    from ...data.seeded import SeededReads

    return ds.base if isinstance(ds, SeededReads) and ds.seed == 0 else ds


def _pixel_array(ds: Any, n: int) -> Any:
    """A dataset's images held in memory as one numeric array of ``n`` rows (``images`` / ``data``, an
    ``ArrayDataset``'s rows of ``array``), else None (file paths, lazily read images)."""
    from aprkit.data.arrays import ArrayDataset

    if isinstance(ds, ArrayDataset):
        return np.asarray(ds.array[ds.start:ds.stop])
    for key in ("images", "data"):
        a = getattr(ds, key, None)
        if isinstance(a, torch.Tensor) and len(a) == n and not a.is_complex():
            return a
        if isinstance(a, np.ndarray) and len(a) == n and a.dtype.kind in "biuf":
            return a
    return None


def _warn_sampled(ds: Any) -> None:
    """Warn once per dataset class that its cache identity reads only 16 of its images."""
    from ...data.seeded import SeededReads

    ds = ds.base if isinstance(ds, SeededReads) else ds  # the user's dataset, by its own name
    name = f"{type(ds).__module__}.{type(ds).__qualname__}"
    if name in _SAMPLED_WARNED:
        return
    _SAMPLED_WARNED.add(name)
    warnings.warn(f"{type(ds).__name__} has no cache_id and no in-memory images: cached results are keyed by its "
                  "length, its labels and 16 of its images, so a change to another image is not seen; give it a "
                  "cache_id attribute naming its content (e.g. its files and their state) if its images can change",
                  RuntimeWarning, stacklevel=3)


_SAMPLED_WARNED: set[str] = set()

class _Memo(threading.local):
    """Per thread, within :func:`memo_dataset_ids`: content ids of in-memory datasets (per object), ids of on-disk
    specs (path and file state) and the datasets read from spec strings, by (spec, split)."""

    def __init__(self) -> None:
        self.depth = 0
        self.content_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.spec_ids: dict[tuple[str, str | None], str] = {}
        self.cell_states: dict[tuple[str, str, int], str | None] = {}
        self.datasets: dict[tuple[str, str], Any] = {}

    def clear(self) -> None:
        self.content_ids.clear()
        self.spec_ids.clear()
        self.cell_states.clear()
        self.datasets.clear()


_MEMO = _Memo()


@contextlib.contextmanager
def memo_dataset_ids() -> Iterator[None]:
    """Within the block (one ``evaluate`` call; per thread, nested calls share the outer one's) each in-memory dataset
    is hashed, each data folder scanned and each spec string read (:func:`as_dataset`) once; outside it, and in the
    next block, afresh: a dataset changed in place between two calls (labels fixed in a notebook, PNG files
    rewritten) gets a new id."""
    if not _MEMO.depth:
        _MEMO.clear()
    _MEMO.depth += 1
    try:
        yield
    finally:
        _MEMO.depth -= 1
        if not _MEMO.depth:
            _MEMO.clear()


def corrupted_cell_id(spec: str, corruption: str, severity: int) -> str | None:
    """:func:`aprkit.data.registry.corrupted_cell_state` of one -C cell (the state of an ImageNet-C cell's images),
    read once per ``evaluate`` call (each model asks for every cell)."""
    from aprkit.data.registry import corrupted_cell_state

    key = (spec, corruption, int(severity))
    if key not in _MEMO.cell_states:
        state = corrupted_cell_state(spec, corruption, severity)
        if not _MEMO.depth:
            return state
        _MEMO.cell_states[key] = state
    return _MEMO.cell_states[key]


def in_memo_block() -> bool:
    """Whether this thread is inside :func:`memo_dataset_ids` (one ``evaluate`` call)."""
    return _MEMO.depth > 0
