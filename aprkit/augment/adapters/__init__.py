"""Thin adapters over the APR core for other augmentation libraries (each imported on first use).

==========================  ===================================  ===================================================
name                        library / base                       does
==========================  ===================================  ===================================================
``APRSingleV2``             torchvision.transforms.v2.Transform  APR-S per image (PIL / tensor)
``RandomAPRSingle``         kornia GeometricAugmentationBase2D   APR-S on a float batch; moves masks/boxes/keypoints
``RandomAPRPair``           kornia IntensityAugmentationBase2D   APR-P on a float batch on device
``KorniaRandomCorruption``  kornia IntensityAugmentationBase2D   common corruptions on a float batch
``AlbuAPRSingle``           albumentations.DualTransform         APR-S per image; moves masks/boxes/keypoints
``AlbuAPRPair``             albumentations.ImageOnlyTransform    APR-P with partners from a metadata key
``APRMixup``                timm mixup_fn protocol               APR-P (x, target) -> (x, target)
==========================  ===================================  ===================================================
"""

from __future__ import annotations

from ..._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "APRSingleV2": "aprkit.augment.adapters.torchvision_v2",
    "RandomAPRSingle": "aprkit.augment.adapters.kornia_aug",
    "RandomAPRPair": "aprkit.augment.adapters.kornia_aug",
    "KorniaRandomCorruption": "aprkit.augment.adapters.kornia_corruption",
    "AlbuAPRSingle": "aprkit.augment.adapters.albumentations_aug",
    "AlbuAPRPair": "aprkit.augment.adapters.albumentations_aug",
    "APRMixup": "aprkit.augment.adapters.timm_mixup",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
