"""Common corruptions of CIFAR-10-C, Tiny-ImageNet-C and ImageNet-C, batched on CPU or CUDA.

The 15 benchmark corruptions and 4 extra ones of Hendrycks & Dietterich (ICLR 2019), with the
published severity parameters of the creation scripts in three presets (``"cifar"``,
``"tinyimagenet"``, ``"imagenet"``)::

    from aprkit.corruptions import corrupt, RandomCorruption, list_corruptions
    y = corrupt(images, "glass_blur", severity=3, preset="cifar", generator=torch.Generator().manual_seed(0))
    aug = RandomCorruption(list_corruptions("benchmark"), severities=(1, 2, 3), p=0.5)
    # image i the same in any batch: one seed per image from (seed, name, severity, preset, dataset index)
    y = corrupt(batch, "fog", 3, seeds=item_seeds(0, "fog", 3, "cifar", dataset_indices))

Families live in ``noise``, ``blur``, ``weather``, ``spatter`` and ``digital``; parameters in
``severity``; the -C dataset writers in ``dataset``.
"""

from __future__ import annotations

from ._frost import find_frost_dir
from .api import (
                  BENCHMARK,
                  CODE_VERSION,
                  CORRUPTIONS,
                  EXTRA,
                  check_name,
                  corrupt,
                  corrupt_image,
                  corruption_version,
                  expand_groups,
                  item_seeds,
                  list_corruptions,
)
from .severity import PARAMS, PRESET_INFO, PRESETS, PresetSizeWarning, params, preset_for_size
from .transforms import RandomCorruption

__all__ = [
    "BENCHMARK",
    "CODE_VERSION",
    "corruption_version",
    "EXTRA",
    "CORRUPTIONS",
    "PARAMS",
    "PRESETS",
    "PRESET_INFO",
    "PresetSizeWarning",
    "RandomCorruption",
    "check_name",
    "corrupt",
    "corrupt_image",
    "expand_groups",
    "find_frost_dir",
    "item_seeds",
    "list_corruptions",
    "params",
    "preset_for_size",
]
