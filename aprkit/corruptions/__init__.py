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
``severity``; the -C dataset writers in ``dataset`` (the images they read: ``inputs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

if TYPE_CHECKING:  # the lazy attributes, for type checkers and IDEs (``as``: re-exported)
    from ._frost import find_frost_dir as find_frost_dir
    from .api import BENCHMARK as BENCHMARK
    from .api import CODE_VERSION as CODE_VERSION
    from .api import CORRUPTIONS as CORRUPTIONS
    from .api import EXTRA as EXTRA
    from .api import corrupt as corrupt
    from .api import corrupt_image as corrupt_image
    from .api import corruption_version as corruption_version
    from .api import expand_groups as expand_groups
    from .api import item_seeds as item_seeds
    from .api import list_corruptions as list_corruptions
    from .names import DETERMINISTIC as DETERMINISTIC
    from .names import check_name as check_name
    from .severity import PARAMS as PARAMS
    from .severity import PRESET_INFO as PRESET_INFO
    from .severity import PRESETS as PRESETS
    from .severity import PresetSizeWarning as PresetSizeWarning
    from .severity import params as params
    from .severity import preset_for_size as preset_for_size
    from .transforms import RandomCorruption as RandomCorruption

#: public name -> defining module: imported on first use (``aprkit corrupt --help`` and ``aprkit.corruptions.severity``
#: load no torch)
_EXPORTS = {
    "find_frost_dir": "aprkit.corruptions._frost",
    **dict.fromkeys(("DETERMINISTIC", "check_name"), "aprkit.corruptions.names"),
    **dict.fromkeys(("BENCHMARK", "CODE_VERSION", "CORRUPTIONS", "EXTRA", "corrupt", "corrupt_image",
                     "corruption_version", "expand_groups", "item_seeds", "list_corruptions"),
                    "aprkit.corruptions.api"),
    **dict.fromkeys(("PARAMS", "PRESET_INFO", "PRESETS", "PresetSizeWarning", "params", "preset_for_size"),
                    "aprkit.corruptions.severity"),
    "RandomCorruption": "aprkit.corruptions.transforms",
}

__all__ = [
    "BENCHMARK",
    "CODE_VERSION",
    "DETERMINISTIC",
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

__getattr__ = lazy_getattr(__name__, _EXPORTS, ("api", "blur", "dataset", "digital", "inputs", "manifest", "names",
                                                 "noise", "severity", "spatter", "transforms", "weather"))


def __dir__() -> list[str]:  # the lazy names too (tab completion)
    return sorted({*globals(), *__all__})
