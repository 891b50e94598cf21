"""Thin adapters over the APR core for other augmentation libraries (each imported on first use).

=====================  ==========================================  ====================================
name                   library / base                              does
=====================  ==========================================  ====================================
``APRSingleV2``        ``torchvision.transforms.v2.Transform``      APR-S per image (PIL / tensor)
``RandomAPRSingle``    ``kornia`` ``IntensityAugmentationBase2D``  APR-S on a float batch on device
``RandomAPRPair``      ``kornia`` ``IntensityAugmentationBase2D``  APR-P on a float batch on device
``AlbuAPRSingle``      ``albumentations.ImageOnlyTransform``        APR-S per image (numpy HWC)
``AlbuAPRPair``        ``albumentations.ImageOnlyTransform``        APR-P with partners from a metadata key
``APRMixup``           timm ``mixup_fn`` protocol                   APR-P ``(x, target) -> (x, target)``
=====================  ==========================================  ====================================
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "APRSingleV2": "torchvision_v2",
    "RandomAPRSingle": "kornia_aug",
    "RandomAPRPair": "kornia_aug",
    "AlbuAPRSingle": "albumentations_aug",
    "AlbuAPRPair": "albumentations_aug",
    "APRMixup": "timm_mixup",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
