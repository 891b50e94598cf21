"""Checks of a dataset against the model an evaluation runs: class names (refused when label i would name another
class), the input size the model was made for (warned), and a ``limit`` that would take only the first classes of a
class-sorted dataset (warned). :func:`~aprkit.eval.engine.inference.predict` runs them; the suites use the
predicates on their own. :func:`check_yields_tensors`: ``evaluate``'s look at a dataset's first item."""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..._checks import labels_agree, warning_level
from .datasets import in_memo_block

__all__ = ["check_yields_tensors",
           "names_other_classes", "check_class_names", "sized_spec", "warn_other_size", "class_sorted_limit",
           "warn_class_sorted_limit"]


def names_other_classes(dataset: Any, n_outputs: int) -> bool:
    """Whether ``dataset`` names its classes and they are not the model's ``n_outputs``: its labels then mean nothing
    to the model (e.g. 16 cue-conflict shapes under 1000 ImageNet outputs), so no accuracy is read from them."""
    classes = getattr(dataset, "classes", None)
    return isinstance(classes, (list, tuple)) and bool(classes) and len(classes) != n_outputs


def check_class_names(model: nn.Module, dataset: Any) -> None:
    """Refuse data whose class names put another class under a label than the model's training data did (a test
    folder of fewer classes, sorted on its own): its accuracy would be silently wrong. Only where both are named:
    ``model.aprkit_classes`` (checkpoints written by ``aprkit train``) and ``dataset.classes``."""
    from ...models import unwrap_model

    trained: Any = getattr(unwrap_model(model), "aprkit_classes", None)
    named: Any = getattr(dataset, "classes", None)
    if labels_agree(trained, named):
        return
    names, trained = [str(c) for c in named], [str(c) for c in trained]
    raise ValueError(f"the data labels its classes ({', '.join(names[:10])}{' ...' if len(names) > 10 else ''}) "
                     f"unlike the data the model was trained on ({', '.join(trained[:10])}"
                     f"{' ...' if len(trained) > 10 else ''}): label i would name another class. Evaluate on data "
                     "labelled by the model's classes: a folder with a (possibly empty) folder for each of them, or "
                     "get_dataset('folder:PATH', classes=model.aprkit_classes)")


def sized_spec(size: int) -> str:
    """The folder spec that brings images to ``size`` x ``size`` as a model of that input size is evaluated:
    ImageNet-size models with the Resize(256) + CenterCrop(224) ratio (ImageNet-C's geometry at 224 px), small ones
    (< 64 px, CIFAR's) resized to the size itself."""
    resize = size if size < 64 else round(size * 256 / 224)
    return f"folder:DIR?resize={resize}&crop={size}"


#: the data sizes each model was warned of (:func:`warn_other_size`)
_SIZE_WARNED: weakref.WeakKeyDictionary[nn.Module, set[tuple[int, int]]] = weakref.WeakKeyDictionary()


def warn_other_size(model: nn.Module, size: torch.Size) -> None:
    """Warn (once per pair of sizes) when ``model`` records the input size it was made for (``input_size``, e.g. 32 px
    for a CIFAR ResNet) and the data's images have another: a convolutional net takes them silently, and its numbers
    then measure a change of resolution (a CIFAR ResNet-20 scored 18 % on 64-px CIFAR images)."""
    native = getattr(model, "input_size", None)
    if not isinstance(native, (tuple, list)) or len(native) < 2 or getattr(model, "resize", None) is not None \
            or getattr(model, "input_size_assumed", False):
        return  # no size recorded, a guessed one (Normalize's default), or a model that resizes its inputs itself
    (h, w), (dh, dw) = (int(v) for v in native[-2:]), (int(v) for v in size)
    seen = _SIZE_WARNED.setdefault(model, set())
    if (h, w) != (dh, dw) and (dh, dw) not in seen:
        seen.add((dh, dw))  # once per model and size: every suite and cell checks (a CLI run printed it 2-5 times)
        how = f" (e.g. {sized_spec(h)})" if h == w else ""
        warnings.warn(f"the model was made for {h}x{w} inputs (its input_size) and the data's images are {dh}x{dw}: "
                      f"its numbers measure it at another resolution; bring the images to its size{how} unless that "
                      "is what you mean to measure", RuntimeWarning, stacklevel=_caller_level())


def class_sorted_limit(labels: Any, limit: int) -> str | None:
    """Why ``limit`` (the first N images) would evaluate only the first classes of a dataset whose ``labels`` are
    grouped by class (an image folder lists its images class by class, so ``folder:ROOT`` with ``limit=1000`` scored
    one class), else ``None``: a shuffled order (a CIFAR PNG tree in its test order) is a fair sample."""
    t = torch.as_tensor(labels)
    if t.numel() <= limit:
        return None
    first, every = t[:limit].unique().numel(), t.unique().numel()
    if first == every or int((t[1:] != t[:-1]).sum()) + 1 != every:  # grouped: each class in one run, any order
        return None
    return (f"limit={limit} takes the first {limit} images of a dataset ordered by class: they cover {first} of its "
            f"{every} classes. Pass a shuffled order (a CIFAR PNG tree with its test_order.csv), a seeded random "
            f"sample (aprkit.data.subset(dataset, {limit}, seed=0): "
            + (f"every class, about {limit // every} each, not balanced)" if limit >= every else
               f"{limit} images for {every} classes, so not every class either)")
            + " or evaluate all of it")


def warn_class_sorted_limit(dataset: Dataset, n: int) -> None:
    """Warn when the first ``n`` images of a folder dataset, read class by class, miss some of its classes (not within
    an ``evaluate`` call: it warned once for the run, where every suite and cell would warn again)."""
    if in_memo_block():
        return
    targets = getattr(dataset, "targets", None)
    message = class_sorted_limit(targets, n) if isinstance(targets, list) and targets else None
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=_caller_level())


#: the files of ``predict`` and its checks, whose frames a warning skips
_OWN_FILES = frozenset({__file__, str(Path(__file__).with_name("inference.py"))})


def _caller_level() -> int:
    """The ``stacklevel`` of a warning of this module for the first frame outside ``predict``'s own files: the line
    that called :func:`~.inference.predict` or :func:`~.inference.start_predict`, however they call each other."""
    return warning_level(_OWN_FILES.__contains__, depth=2)  # from the function that calls warnings.warn


def check_yields_tensors(data: Any) -> None:
    """A dataset given to ``evaluate`` (or one of a per-suite mapping) must yield ``(image tensor, label)``: one
    yielding PIL images (a torchvision ``ImageFolder`` without a transform) failed later with an unrelated error in
    every suite. Reads the first item of each dataset once; spec strings and tensors are aprkit's own."""
    from collections.abc import Mapping, Sized

    for ds in (data.values() if isinstance(data, Mapping) else [data]):
        if isinstance(ds, (str, torch.Tensor, tuple)) or not isinstance(ds, Dataset) or not isinstance(ds, Sized) \
                or not len(ds):
            continue  # aprkit's own inputs, a dataset without a length (refused elsewhere) or an empty one
        item = ds[0]
        image = item[0] if isinstance(item, (tuple, list)) and len(item) >= 2 else item
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"datasets must yield (uint8 image tensor (C, H, W), int label); {type(ds).__name__} "
                            f"yields {type(image).__module__}.{type(image).__name__} images: give it a transform that "
                            "makes tensors, e.g. torchvision.transforms.v2.PILToTensor()")
