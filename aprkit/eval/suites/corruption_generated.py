"""Corruption cells generated on the fly, made as the published -C sets were, and what still sets them apart.

A generated cell corrupts the clean images with :func:`aprkit.corruptions.corrupt` (each image seeded by its index)
and, where the published set was stored as JPEG (ImageNet-C and Tiny-ImageNet-C: quality 85, Pillow's defaults),
passes the result through the same JPEG round trip, so that a generated cell equals the cell ``aprkit corrupt``
writes (CIFAR-10-C is stored losslessly: no round trip) for images stored at their evaluation size; images that are
resized on the way are resized by PIL in ``aprkit corrupt`` (as ``make_imagenet_c.py``) and as tensors by the
``folder:`` reader, one level apart at a few pixels, which the corruptions can widen (up to 20 levels at 0.4-2.6 % of a
cell's values seen). Their one remaining difference from a published set is the
random draws. A model that resizes and crops its input itself (:class:`aprkit.models.normalize.Preprocess`: the
``timm:`` / ``torchvision:`` / ``robustbench:`` models) sees a generated corruption after its resize when the images
are not stored at its input size, while the published sets corrupted the resized crops: :func:`geometry_caveat`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypedDict

import torch
from torch import nn

from aprkit.corruptions.dataset import IMAGENET_C_QUALITY

__all__ = ["Caveats", "STORED_QUALITY", "stored_quality", "generated_transform", "geometry_caveat", "warn_geometry"]


class Caveats(TypedDict, total=False):
    """A suite result's optional ``caveats``: why its generated cells differ from the benchmark's
    (:func:`geometry_caveat`); the run keeps them with the numbers (``results.json``, the report's header)."""

    caveats: list[str]


#: the JPEG quality each preset's published set was stored with (absent: stored losslessly)
STORED_QUALITY = {"tinyimagenet": IMAGENET_C_QUALITY, "imagenet": IMAGENET_C_QUALITY}


def stored_quality(option: int | str | None, preset: str) -> int | None:
    """The JPEG quality of generated cells: ``"auto"`` the published set's (:data:`STORED_QUALITY`), ``None`` or 0
    none (the corrupted images as computed), an int in 1..100 that quality."""
    if option == "auto":
        return STORED_QUALITY.get(preset)
    return int(option) if option else None


def generated_transform(corruption: str, severity: int, preset: str, seed: int,
                        quality: int | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The on-the-fly corruption of one cell: ``(uint8 images (B, C, H, W), dataset indices (B,)) -> images``, then
    the JPEG round trip at ``quality`` (None: none).

    Image ``i`` is seeded by ``item_seeds(seed, corruption, severity, preset, i)`` only: the same for every
    batch size, worker count, process count and ``limit``."""
    from aprkit.corruptions import corrupt, item_seeds

    def apply(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        seeds = item_seeds(seed, corruption, severity, preset, indices)
        out = corrupt(images, corruption, severity, preset=preset, seeds=seeds)
        if quality is None:
            return out
        from aprkit.corruptions.digital import jpeg_bytes

        return jpeg_bytes(out.cpu(), quality).to(out.device)

    return apply


def geometry_caveat(model: Any, dataset: Any) -> str | None:
    """Why generated corruptions of ``dataset`` do not act as the benchmark's on ``model`` (None when they do): the
    model resizes its input itself (a :class:`~aprkit.models.normalize.Preprocess` anywhere in it) and the images,
    not stored at its input size, are rescaled, so each corruption is made at the stored size and then rescaled
    (noise and blur at another scale), where the published sets corrupted the resized crops (ImageNet-C: resize 256,
    centre crop 224). A crop alone changes no scale: no caveat."""
    from aprkit.models.normalize import Preprocess

    modules = model.modules() if isinstance(model, nn.Module) else ()
    pre = next((m for m in modules if isinstance(m, Preprocess)), None)
    if pre is None or len(dataset) == 0:
        return None
    h, w = (int(v) for v in dataset[0][0].shape[-2:])
    if pre.resized_size(h, w) is None:
        return None
    from ..engine.data_checks import sized_spec

    return (f"generated corruptions were made on the images at their stored size ({h}x{w}, the first image) and "
            f"then rescaled to {pre.crop} px by the model's own preprocessing, where the published -C sets corrupted "
            "the resized crops: noise and blur act at another scale than the benchmark's; give the data at the "
            f"input size, e.g. {sized_spec(pre.crop)} (ImageNet-C's geometry at 224 px)")


def warn_geometry(caveat: str | None) -> None:
    """Warn of a :func:`geometry_caveat` (from this one place: once per run of the suites that share the cells)."""
    if caveat:
        warnings.warn(caveat, RuntimeWarning, stacklevel=2)
