"""Corruption cells generated on the fly, made as the published -C sets were, and what still sets them apart.

A generated cell corrupts the clean images with :func:`aprkit.corruptions.corrupt` (each image seeded by its index)
and, where the published set was stored as JPEG (ImageNet-C and Tiny-ImageNet-C: quality 85, Pillow's defaults),
passes the result through the same JPEG round trip, so that a generated cell equals the cell ``aprkit corrupt``
writes (CIFAR-10-C is stored losslessly: no round trip). Their one remaining difference from a published set is the
random draws. A model that resizes and crops its input itself (:class:`aprkit.models.normalize.Preprocess`: the
``timm:`` / ``torchvision:`` / ``robustbench:`` models) sees a generated corruption after its resize when the images
are not stored at its input size, while the published sets corrupted the resized crops: :func:`geometry_caveat`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

import torch

__all__ = ["Caveats", "STORED_QUALITY", "stored_quality", "generated_transform", "geometry_caveat"]

class Caveats(TypedDict, total=False):
    """A suite result's optional ``caveats``: why its generated cells differ from the benchmark's
    (:func:`geometry_caveat`); the run keeps them with the numbers (``results.json``, the report's header)."""

    caveats: list[str]


#: the JPEG quality each preset's published set was stored with (absent: stored losslessly)
STORED_QUALITY = {"tinyimagenet": 85, "imagenet": 85}


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
    model resizes and crops its input itself and the images are not stored at its input size, so each corruption is
    made at the stored size and then rescaled (noise and blur at another scale), where the published sets corrupted
    the resized crops (ImageNet-C: resize 256, centre crop 224)."""
    from aprkit.models.normalize import Preprocess

    if not isinstance(model, Preprocess) or len(dataset) == 0:
        return None
    image = dataset[0][0]
    h, w = (int(v) for v in image.shape[-2:])
    if (h, w) == (model.crop, model.crop):
        return None
    return (f"generated corruptions were made on the images at their stored size ({h}x{w}, the first image) and "
            f"then resized and cropped to {model.crop} px by the model's own preprocessing, where the published -C "
            "sets corrupted the resized crops: noise and blur act at another scale than the benchmark's; give the data "
            f"at the input size, e.g. folder:DIR?resize=256&crop=224 (ImageNet-C's geometry)")
