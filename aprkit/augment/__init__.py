"""Pixel-level APR augmentations (Chen et al., ICCV 2021).

* :class:`APRPair` -- APR-P, batch level after the DataLoader: ``images, labels = apr_pair(images, labels)``.
* :class:`APRSingle` -- APR-S, a per-image dataloader transform (PIL / numpy / tensor).
* :class:`APRSingleBatch` -- APR-S on a whole batch on its device.
* :class:`APRSP` -- the paper's ``CE(APR-S batch) + CE(APR-P batch)`` training batch.
* :func:`~aprkit.augment.augmix.augmix` -- one AugMix view as AugMix's code mixes it (the ``augmix_jsd`` baseline).
* :mod:`aprkit.augment.functional` -- the stateless batched core; :mod:`aprkit.augment.adapters` --
  torchvision v2, kornia, albumentations and timm wrappers (imported on demand).
"""

from __future__ import annotations

from . import single
from .functional import apr_pair, recombine_views, sample_pair_params
from .ops import ALL_OPS, DEFAULT_OPS
from .pair import APRSP, APRPair
from .single import APRSingleBatch, apr_single, sample_single_params
from .single_image import APRSingle

# its home until session 51 (aprkit.augment.single): that import path, and APRSingle objects pickled then, still work
single.APRSingle = APRSingle  # type: ignore[attr-defined]

__all__ = [
    "APRPair",
    "APRSingle",
    "APRSingleBatch",
    "APRSP",
    "apr_pair",
    "apr_single",
    "recombine_views",
    "sample_pair_params",
    "sample_single_params",
    "DEFAULT_OPS",
    "ALL_OPS",
]
