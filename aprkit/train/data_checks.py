"""Checks of training data before any training: labels and classes against the model and each other, and the items
(image tensors of the right layout, range and size for the crop and the test resolution).

Each reads class and label attributes, or the first and last item, only (no pass over the data), and refuses with a
message naming the setting that fixes it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset

from .._checks import labels_agree
from ..data.loading import attribute_labels
from .config import Config

__all__ = ["class_mismatch", "check_same_classes", "check_several_classes", "check_labels", "check_label_range",
           "check_test_size", "check_crop_size"]


def class_mismatch(train: Dataset, test: Dataset) -> bool:
    """Whether ``train`` and ``test`` both name their classes and ``test``'s label i is another class than
    ``train``'s (:func:`~aprkit._checks.labels_agree`, the rule evaluations apply too)."""
    return not labels_agree(getattr(train, "classes", None), getattr(test, "classes", None))


def check_same_classes(train: Dataset, test: Dataset, what: str, relabel: bool = False) -> None:
    """Refuse test data ``what`` whose class names differ from the training data's: a class the training lacks, or
    (unless the caller will ``relabel`` it by the training classes) the same classes under other labels (a test
    folder of fewer classes, sorted on its own)."""
    if not class_mismatch(train, test):
        return
    names, own = [str(c) for c in train.classes], [str(c) for c in test.classes]  # type: ignore[attr-defined]
    extra = [c for c in own if c not in names]
    if extra:
        raise ValueError(f"{what} has class(es) the training data lacks: {', '.join(extra[:5])}"
                         f"{' ...' if len(extra) > 5 else ''}; a model cannot predict them (training classes: "
                         f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''})")
    if relabel:
        return
    raise ValueError(f"{what} labels its classes ({', '.join(own[:10])}) unlike the training data "
                     f"({', '.join(names[:10])}): its labels would name other classes; label it with the training "
                     "classes (e.g. ImageFolderDataset(root, classes=train.classes))")


def check_several_classes(ds: Dataset, num_classes: int) -> None:
    """Refuse training data of one class (every prediction of it is right: 100 % accuracy, nothing learnt), and warn
    when ``num_classes`` exceeds the classes it names, or it holds images of only some of them (a CIFAR-10 tree with
    class folders missing): those outputs are never trained. Reads the ``classes`` and label attributes only (no
    image decoded); data without them is not checked."""
    classes = getattr(ds, "classes", None)
    labels = attribute_labels(ds)
    present = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else []
    found: set[int] | None = None  # the labels the data holds
    if labels is not None and labels.numel():
        found = set(labels.unique().tolist())
        present = [present[k] if 0 <= k < len(present) else str(k) for k in sorted(found)]
    if len(present) == 1:
        raise ValueError(f"the training data holds images of one class only ({present[0]}): every prediction of it is "
                         "right and nothing is learnt; expected images of at least two classes (one folder per class)")
    if isinstance(classes, (list, tuple)) and classes and num_classes > len(classes):
        warnings.warn(f"model.num_classes={num_classes} but the training data names {len(classes)} classes: the "
                      f"other {num_classes - len(classes)} outputs are never trained; set model.num_classes="
                      f"{len(classes)} unless that is meant", RuntimeWarning, stacklevel=4)
    elif isinstance(classes, (list, tuple)) and found is not None and 1 < len(present) < len(classes):
        missing = [str(c) for k, c in enumerate(classes) if k not in found]
        warnings.warn(f"the training data names {len(classes)} classes but holds images of {len(present)} of them "
                      f"only (none of {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}): those outputs "
                      "are never trained; a class folder missing or empty?", RuntimeWarning, stacklevel=4)


def check_labels(ds: Dataset, num_classes: int, what: str) -> None:
    """Raise ``ValueError`` when ``ds`` (described by ``what``) has more ``classes`` than ``num_classes`` or a
    ``labels``/``targets`` attribute holding a label outside ``0..num_classes - 1``; no image is decoded.

    Datasets without those attributes are checked batch by batch as they are read (:class:`EpochBatches`).
    """
    n_classes = len(getattr(ds, "classes", None) or ())
    if n_classes > num_classes:
        raise ValueError(f"model.num_classes={num_classes} but {what} has {n_classes} classes; set "
                         f"model.num_classes={n_classes}")
    labels = attribute_labels(ds)
    if labels is not None:
        check_label_range(labels, num_classes, what)


def check_label_range(labels: torch.Tensor, num_classes: int, what: str) -> None:
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if hi >= num_classes:
        raise ValueError(f"{what} has label {hi} but model.num_classes={num_classes} (labels must be in "
                         f"0..{num_classes - 1}); set model.num_classes to at least {hi + 1}")
    if lo < 0:
        unlabelled = " (-1: an unlabelled set, such as noise:, has no labels to train or test with)" if lo == -1 else ""
        raise ValueError(f"{what} has label {lo}; labels must be class indices in 0..{num_classes - 1}{unlabelled}")


def _end_shapes(ds: Dataset, n: int, what: str) -> list[tuple[int, tuple[int, ...]]]:
    """``(index, (H, W))`` of the first and last of the ``n`` items of ``ds``, each checked to be an image tensor
    ``(C, H, W)``, uint8 or float in [0, 1] (:func:`_check_item`): what the checks below read before any training."""
    out = []
    for i in sorted({0, n - 1}) if n else []:
        x = ds[i][0]
        _check_item(x, i, what)
        out.append((i, tuple(x.shape[-2:])))
    return out


def _check_item(x: Any, i: int, what: str) -> None:
    """Refuse an item that is not what training reads: a ``(C, H, W)`` tensor (C of 1, 3 or 4), uint8 or float in
    [0, 1]; a PIL image, a channels-last array or 0-255 floats would fail later with a collate error or train on
    wrong values."""
    expected = "expected (C, H, W) image tensors, uint8 (0-255) or float in [0, 1]"
    if not isinstance(x, torch.Tensor):
        hint = " (add torchvision.transforms.v2.PILToTensor() to the dataset)" if hasattr(x, "getpixel") else ""
        raise TypeError(f"{what}: item {i} is a {type(x).__module__}.{type(x).__name__}{hint}; {expected}")
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        hwc = " (channels last: permute it to channels first)" if x.ndim == 3 and x.shape[-1] in (1, 3, 4) else ""
        raise ValueError(f"{what}: item {i} has shape {tuple(x.shape)}{hwc}; {expected}")
    if x.is_floating_point() and x.numel() and not (0 <= float(x.min()) and float(x.max()) <= 1):
        raise ValueError(f"{what}: item {i} holds floats from {float(x.min()):g} to {float(x.max()):g}; {expected} "
                         "(uint8 images are scaled by 1/255 on the device)")
    if not x.is_floating_point() and x.dtype != torch.uint8:
        raise TypeError(f"{what}: item {i} is a {x.dtype} tensor; {expected}")


def check_test_size(ds: Dataset, n: int, size: int) -> None:
    """Without ``data.test_resize`` the test images are used as they are: they must be ``size`` x ``size`` (checked on
    the first and last, before any training: a mismatch used to surface as a collate error after an epoch, or to test
    at another resolution than the training crops)."""
    for i, shape in _end_shapes(ds, n, "the test data"):
        if shape != (size, size):
            raise ValueError(f"test image {i} is {shape[0]}x{shape[1]} but data.image_size is {size}: set "
                             f"data.test_resize (resize the short side, then centre-crop {size}; ImageNet: 256) or "
                             "data.image_size to the test images' size")


def check_crop_size(ds: Dataset, n: int, cfg: Config) -> None:
    """Without ``data.random_resized_crop`` the training images are padded by ``data.crop_padding`` and cropped to
    ``data.image_size``: the padded images must hold the crop (checked on the first and last, before any training:
    a mismatch surfaced at the first step, after the output folder had been written or cleared)."""
    d, warned = cfg.data, False
    for i, shape in _end_shapes(ds, n, "the training data"):
        if d.random_resized_crop:
            continue
        if min(shape) + 2 * d.crop_padding < d.image_size:
            raise ValueError(f"training image {i} is {shape[0]}x{shape[1]}: padded by data.crop_padding="
                             f"{d.crop_padding} it is smaller than the crop data.image_size={d.image_size}; lower "
                             "data.image_size, raise data.crop_padding or set data.random_resized_crop")
        if max(shape) > d.image_size and not warned:
            warnings.warn(f"training image {i} is {shape[0]}x{shape[1]}, larger than data.image_size={d.image_size}: "
                          f"each step trains on a random {d.image_size}x{d.image_size} part of it (pad and crop, the "
                          "CIFAR recipe); set data.random_resized_crop for the ImageNet recipe, or give images of "
                          "that size", RuntimeWarning, stacklevel=4)
            warned = True
