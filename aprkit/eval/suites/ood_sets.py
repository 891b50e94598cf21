"""Opening an OOD set for the OOD suite: generated noise at the in-distribution size, or a dataset brought to that size
(option ``ood_resize``) or checked to hold images of one size (scored at their own size, ``ood_resize`` off)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset

from ..._checks import dataset_len, describe_value
from ..._text import add_note
from ..engine.data_checks import class_sorted_limit
from ..engine.datasets import as_dataset

__all__ = ["open_ood"]


def _mixed_sizes(name: str, index: int, size: tuple[int, int], first: tuple[int, int]) -> ValueError:
    return ValueError(f"OOD set {name}: image {index} is {size[0]}x{size[1]}, image 0 {first[0]}x{first[1]}; with "
                      "ood_resize off a set is scored at its own size and must hold images of one size: set "
                      "ood_resize=true (each image resized to the in-distribution size) or give a set of one size")


class OneSizeDataset(Dataset):
    """``dataset`` whose every image must have ``size`` ``(H, W)`` (that of its image 0): an OOD set scored at its own
    size. Checked image by image, so that a set of mixed sizes is refused at every batch size (batches of one would
    score it, larger ones fail to stack it)."""

    def __init__(self, dataset: Any, size: tuple[int, int], name: str) -> None:
        self.dataset, self.size, self.name = dataset, size, name
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return dataset_len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.dataset[index]
        size = (int(img.shape[-2]), int(img.shape[-1]))
        if size != self.size:
            raise _mixed_sizes(self.name, index, size, self.size)
        return img, label


def _warn_first_classes(spec: Any, ds: Any, limit: int | None) -> str | None:
    """Warn when ``limit`` (the first N images) takes only the first classes of an OOD folder read class by class: a
    held-out-class or natural OOD set would shrink to a few of its classes (as the runner warns for the data). Returns
    the warning's text (a caveat the suite keeps with its numbers), else ``None``."""
    from aprkit.data.loading import attribute_labels

    if limit is None:
        return None
    labels = attribute_labels(ds)
    message = class_sorted_limit(labels, limit) if labels is not None else None
    if not message:
        return None
    name = spec if isinstance(spec, str) else describe_value(spec)
    warnings.warn(f"OOD set {name}: {message}", RuntimeWarning, stacklevel=4)
    return f"OOD set {name}: {message}"


def open_ood(spec: Any, like: Any, n: int, seed: int, resize: bool,
             limit: int | None = None) -> tuple[Any, dict[str, list[int] | str], str | None]:
    """An OOD dataset; for the report, ``{"resized_from": [H, W]}`` (``"mixed sizes"`` when the sampled images
    differ among themselves) or, ``resize`` off, ``{"own_size": [H, W]}`` when images of another size than the
    in-distribution ones are seen among the first, middle and last image it is scored on (a mixed folder's first image
    may have the in-distribution size), else ``{}``; and a caveat (text) when ``limit`` took only the first classes of
    a class-sorted set, else ``None``.

    ``resize``: every image of another size is brought to the in-distribution size; off: every image must have the
    size of image 0 (a set of mixed sizes is refused, up front when the sampled images show it, else at the first
    image of another size). Synthetic ``noise:`` specs are generated at the in-distribution size. ``limit``: the
    images the suite reads of it (the first N; a warning when they miss some of a class-sorted folder's classes)."""
    img, _ = like[0]
    c, h, w = (int(d) for d in img.shape)
    if isinstance(spec, str) and spec.startswith("noise:"):
        from aprkit.data import get_dataset

        return get_dataset(spec, "test", size=(h, w), channels=c, n=n, seed=seed), {}, None
    name = spec if isinstance(spec, str) else describe_value(spec)
    try:
        ds = as_dataset(spec)
    except (OSError, ValueError) as err:  # which data it was: the message named a folder only
        add_note(err, f"OOD set {name} (--ood)")
        raise
    size = dataset_len(ds)
    if size == 0:
        raise ValueError(f"OOD set {name} holds no images; expected a dataset of (C, H, W) images")
    last = min(size, limit or size) - 1
    sizes: dict[int, tuple[int, int]] = {}
    for i in dict.fromkeys((0, last // 2, last)):
        image = ds[i][0]
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            got = f"shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"OOD set {name}: expected images as (C, H, W) tensors (uint8 or float in [0, 1]), "
                             f"got {got} (image {i})")
        sizes[i] = (int(image.shape[-2]), int(image.shape[-1]))
    caveat = _warn_first_classes(spec, ds, limit)
    other = next((list(s) for s in sizes.values() if s != (h, w)), None)
    if resize:
        from aprkit.data.folder import ResizedDataset

        mixed = len(set(sizes.values())) > 1  # the report names no one size of them
        note = {} if other is None else {"resized_from": "mixed sizes" if mixed else other}
        return ResizedDataset(ds, (h, w)), note, caveat
    odd = next((i for i, s in sizes.items() if s != sizes[0]), None)
    if odd is not None:
        raise _mixed_sizes(name, odd, sizes[odd], sizes[0])
    ds = OneSizeDataset(ds, sizes[0], name)
    if other is None:
        return ds, {}, caveat
    warnings.warn(f"OOD set {name}: its images are {other[0]}x{other[1]}, the in-distribution ones {h}x{w}, and "
                  "ood_resize is off: the scores also measure the change of resolution", RuntimeWarning, stacklevel=3)
    return ds, {"own_size": other}, caveat
