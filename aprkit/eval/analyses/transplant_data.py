"""Images and labels for the transplant test (:mod:`aprkit.eval.analyses.transplant`): from tensors, datasets,
loaders or a folder of ``<class>/*.png``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ..._checks import check_chw_layout, check_positive_int, value_range_problem
from ...data.arrays import NO_LABEL

__all__ = ["Data", "load_data", "read_folder"]

Data = torch.Tensor | tuple | Iterable | torch.utils.data.Dataset


@runtime_checkable
class _MapStyle(Protocol):
    """A map-style dataset: ``len`` and items by index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def _holds_batches(data: Any) -> bool:
    """Whether a map-style ``data``'s items are batches ``(B, C, H, W)`` (a list of a loader's batches): those are read
    in order, not spread."""
    if not len(data):
        return False
    first = data[0]
    return isinstance(first, (tuple, list)) and bool(first) and getattr(first[0], "ndim", 0) == 4


def _take(labels: Any, taken: torch.Tensor | None) -> Any:
    return labels if labels is None or taken is None else torch.as_tensor(labels)[taken]


def load_data(
    data: Data, labels: torch.Tensor | None = None, max_images: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images ``(N, C, H, W)`` float in [0, 1] and labels ``(N,)`` (or ``None``) from a tensor, an
    ``(images, labels)`` pair, a dataset of ``(image, label)`` or an iterable of such batches.

    From a tensor, a pair or a map-style dataset, ``max_images`` are taken evenly spaced over its length (data sorted
    by class keeps every class); from an iterable of batches (a loader), the first ``max_images``."""
    if max_images is not None:
        max_images = check_positive_int(max_images, "max_images")
    # labels= may be the whole data's: n_total (its length, None for a loader) and taken (the positions kept) map them
    n_total: int | None = None
    taken: torch.Tensor | None = None
    if isinstance(data, torch.Tensor) or (isinstance(data, (tuple, list)) and len(data) == 2
                                          and isinstance(data[0], torch.Tensor) and data[0].ndim == 4):
        images, own = (data, None) if isinstance(data, torch.Tensor) else (data[0], data[1])
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
        n_total = images.shape[0]
        if max_images is not None and n_total > max_images:  # spread: class-sorted data keeps every class
            taken = torch.linspace(0, n_total - 1, max_images).round().long().unique()
            own = _take(own, taken) if own is not None and len(own) == n_total else own
            images = images[taken]
        labels = own if labels is None else labels
    else:
        xs, ys, n = [], [], 0
        if (max_images is not None and isinstance(data, _MapStyle)  # (a sized IterableDataset: read in order)
                and not isinstance(data, torch.utils.data.IterableDataset) and not _holds_batches(data)):
            size = len(data)  # a map-style dataset: spread the pick over it (folders are sorted by class)
            taken = torch.linspace(0, size - 1, min(max_images, size)).round().long().unique()
            data, n_total = [data[i] for i in taken.tolist()], size
        for item in iter(data):  # a dataset yields (C,H,W) (read by index without __iter__), a loader (B,C,H,W)
            if not (isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], torch.Tensor)):
                raise TypeError("data must be images (N, C, H, W), (images, labels) or an iterable of (image, label)")
            x, y = item[0], torch.as_tensor(item[1])
            if x.ndim == 4:  # a batch: positions in images are no item indices (a loader, a list of batches)
                n_total = taken = None
            xs.append(x if x.ndim == 4 else x.unsqueeze(0))
            ys.append(y.reshape(-1))
            n += xs[-1].shape[0]
            if max_images is not None and n >= max_images:
                break
        if not xs:
            raise ValueError("data is empty; expected at least two images")
        images, own = torch.cat(xs), torch.cat(ys)
        if max_images is not None and images.shape[0] > max_images:  # a loader's last batch overshoots
            images, own = images[:max_images], own[:max_images]
        labels = own if labels is None else labels
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    check_chw_layout(images, "images")  # (N, H, W, C) named here, not as the model's error on a 16-row block
    if labels is not None and len(labels) != images.shape[0]:  # labels= of the whole data: those of the images kept
        if n_total is not None and taken is not None and len(labels) == n_total:
            labels = _take(labels, taken)
        elif n_total is None and max_images is not None and len(labels) > images.shape[0]:
            labels = torch.as_tensor(labels)[: images.shape[0]]  # a loader: its first images (refused below if short)
    if images.shape[0] == 0:
        raise ValueError("data is empty; expected at least two images")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    elif images.numel():
        lo, hi = (float(v) for v in torch.aminmax(images.detach()))
        if value_range_problem(images, lo, hi) == "0..255":
            raise ValueError(f"images are float with values up to {hi:.4g}: 0..255 floats? pass float images in [0, 1] "
                             "(divide by 255) or uint8")
    if labels is not None:
        labels = torch.as_tensor(labels).long().reshape(-1).cpu()  # beside the predictions, which come to the host
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have one entry per image: {images.shape[0]} images, "
                             f"{labels.shape[0]} labels")
        if labels.numel() and bool((labels == NO_LABEL).all()):  # an unlabelled set (noise:, TensorImageDataset)
            labels = None
        elif labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"labels must be class indices >= 0 (or all {NO_LABEL}: unlabelled), got "
                             f"{int(labels.min())}")
    return images, labels


def read_folder(
    root: str | os.PathLike[str], per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images ``(N, 3, H, W)``, labels ``(N,)`` and class names from ``root/<class>/*.png|jpg``.

    Class index = sorted folder order; at most ``per_class`` files (sorted by name) per class. All images
    must share one size. Decoding goes through :func:`aprkit.data.folder.read_image`.
    """
    from ...data.folder import find_classes, read_image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; expected a folder of <class>/*.png")
    classes = find_classes(root)
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders <class>/*.png")
    xs, ys = [], []
    for k, c in enumerate(classes):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for f in files[:per_class]:
            xs.append(read_image(f))
            ys.append(k)
    if not xs:
        raise FileNotFoundError(f"no .png/.jpg images in the class folders of {root}")
    sizes = {tuple(x.shape) for x in xs}
    if len(sizes) > 1:
        raise ValueError(f"images under {root} differ in size ({sorted(sizes)[:3]}...); expected one size")
    return torch.stack(xs), torch.tensor(ys), classes
