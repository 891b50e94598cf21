"""Published severity parameters of the CIFAR-10-C, Tiny-ImageNet-C and ImageNet-C corruptions.

The numbers are those of Hendrycks & Dietterich's creation scripts (``make_cifar_c.py``,
``make_tinyimagenet_c.py``, ``make_imagenet_c.py``; ICLR 2019), one tuple/number per severity 1-5.
Each preset also records the image size it was designed for (``size``), the plasma-fractal map size
used by ``fog`` and the scale applied to the frost textures before cropping. ``preset_for_size`` picks the
preset of an image size (the default wherever ``preset=None``); ``resolve_preset`` warns when an explicit
preset was made for images of a very different size (the cifar parameters barely change a 224-px image).

``PARAMS[preset][name][severity - 1]`` is the raw parameter of that corruption; the meaning of each
entry is documented next to the function that consumes it.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from .names import canonical_name

__all__ = ["PRESETS", "PARAMS", "PRESET_INFO", "PresetSizeWarning", "params", "check_preset", "check_severity",
           "check_severities", "preset_for_size", "resolve_preset"]

PRESETS = ("cifar", "tinyimagenet", "imagenet")

#: per preset: nominal image size, fog plasma map size, frost texture scale
PRESET_INFO: dict[str, dict[str, float]] = {
    "cifar": {"size": 32, "fog_mapsize": 32, "frost_scale": 0.2},
    "tinyimagenet": {"size": 64, "fog_mapsize": 64, "frost_scale": 0.3},
    "imagenet": {"size": 224, "fog_mapsize": 256, "frost_scale": 1.0},
}


def _arange(stop: float, step: float) -> tuple[float, ...]:
    """``np.arange(1, stop, step)``, as the creation scripts build zoom factors: the same values to the last bit
    (NumPy steps by ``(1 + step) - 1``, so the CIFAR factor 1.25 is 1.2500000000000002, which rounds a 32-px image's
    zoomed size up to 33 where 1.25 gave 32)."""
    return tuple(float(v) for v in np.arange(1, stop, step))


_E32, _E64, _E244 = 32, 64, 244  # elastic: IMSIZE of each script (ImageNet-C uses 244, sic)

PARAMS: dict[str, dict[str, list[Any]]] = {
    "cifar": {
        "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # std
        "shot_noise": [500, 250, 100, 75, 50],  # photons per unit intensity
        "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],  # s&p amount
        "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],  # std of multiplicative noise
        "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],  # sigma
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # sigma, delta, iters
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],  # radius, alias blur
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],  # radius, sigma
        "zoom_blur": [_arange(1.06, 0.01), _arange(1.11, 0.01), _arange(1.16, 0.01), _arange(1.21, 0.01),
                      _arange(1.26, 0.01)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],  # image weight, frost weight
        "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],  # strength, wibble decay
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
        "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
        "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
        "jpeg_compression": [80, 65, 58, 50, 40],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "elastic_transform": [(_E32 * 0, _E32 * 0, _E32 * 0.08), (_E32 * 0.05, _E32 * 0.2, _E32 * 0.07),
                              (_E32 * 0.08, _E32 * 0.06, _E32 * 0.06), (_E32 * 0.1, _E32 * 0.04, _E32 * 0.05),
                              (_E32 * 0.1, _E32 * 0.03, _E32 * 0.03)],  # alpha, sigma, affine jitter
    },
    "tinyimagenet": {
        "gaussian_noise": [0.04, 0.08, 0.12, 0.15, 0.18],
        "shot_noise": [250, 100, 50, 30, 15],
        "impulse_noise": [0.01, 0.02, 0.05, 0.08, 0.14],
        "speckle_noise": [0.15, 0.2, 0.25, 0.3, 0.35],
        "gaussian_blur": [0.5, 0.75, 1, 1.25, 1.5],
        "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
        "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
        "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
        "zoom_blur": [_arange(1.06, 0.01), _arange(1.11, 0.01), _arange(1.16, 0.01), _arange(1.21, 0.01),
                      _arange(1.26, 0.01)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
        "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
        "fog": [(0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1, 0.69, 0.6, 0),
                    (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
        "jpeg_compression": [65, 58, 50, 40, 25],
        "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
        "elastic_transform": [(_E64 * 0, _E64 * 0, _E64 * 0.08), (_E64 * 0.05, _E64 * 0.3, _E64 * 0.06),
                              (_E64 * 0.1, _E64 * 0.08, _E64 * 0.06), (_E64 * 0.1, _E64 * 0.03, _E64 * 0.03),
                              (_E64 * 0.16, _E64 * 0.03, _E64 * 0.02)],
    },
    "imagenet": {
        "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
        "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [_arange(1.11, 0.01), _arange(1.16, 0.01), _arange(1.21, 0.02), _arange(1.26, 0.02),
                      _arange(1.31, 0.03)],
        "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
        "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "elastic_transform": [(_E244 * 2, _E244 * 0.7, _E244 * 0.1), (_E244 * 2, _E244 * 0.08, _E244 * 0.2),
                              (_E244 * 0.05, _E244 * 0.01, _E244 * 0.02), (_E244 * 0.07, _E244 * 0.01, _E244 * 0.02),
                              (_E244 * 0.12, _E244 * 0.01, _E244 * 0.02)],
    },
}


def check_preset(preset: str) -> str:
    """Validate a preset name (``"cifar"``, ``"tinyimagenet"`` or ``"imagenet"``)."""
    if not isinstance(preset, str) or preset not in PARAMS:
        raise ValueError(f"preset must be one of {', '.join(repr(p) for p in PRESETS)}, got {preset!r}")
    return preset


class PresetSizeWarning(UserWarning):
    """An explicit preset was made for images of a very different size than the ones corrupted."""


#: an explicit preset warns when the images' longer side is more than this factor from the preset's ``size``
#: (and another preset fits the images)
_SIZE_FACTOR = 1.5


def preset_for_size(height: int, width: int) -> str:
    """The preset made for images of ``height x width`` px: longer side <= 32 ``"cifar"``, <= 64
    ``"tinyimagenet"``, else ``"imagenet"`` (the default of every ``preset=None``)."""
    side = max(int(height), int(width))
    return "cifar" if side <= 32 else "tinyimagenet" if side <= 64 else "imagenet"


def resolve_preset(preset: str | None, height: int, width: int, *, stacklevel: int = 2) -> str:
    """``preset`` (validated), or for ``None`` the preset of the image size (``preset_for_size``).

    An explicit preset whose nominal ``size`` is more than 1.5 times larger or smaller than the images' longer side,
    while another preset is made for that size, warns (``PresetSizeWarning``, naming the preset to pass); it is still
    used. ``stacklevel`` as in ``warnings.warn``, counted from the caller of this function.
    """
    fit = preset_for_size(height, width)
    if preset is None:
        return fit
    check_preset(preset)
    side, nominal = max(int(height), int(width)), PRESET_INFO[preset]["size"]
    if preset != fit and not nominal / _SIZE_FACTOR <= side <= nominal * _SIZE_FACTOR:
        warnings.warn(f"preset {preset!r} holds the severity parameters of {nominal:g}-px images, but these images are "
                      f"{int(height)}x{int(width)} px, so the corruptions are far weaker or stronger than published; "
                      f"the preset for this size is {fit!r}: pass that preset, or none to pick it from the image "
                      "size (aprkit corrupt: leave --preset out; aprkit eval: leave out --set preset=...; a "
                      "PresetSizeWarning)",
                      PresetSizeWarning, stacklevel=stacklevel + 1)
    return preset


def check_severities(severities: Any) -> list[int]:
    """Severities, a single integer counting as one, each checked (:func:`check_severity`)."""
    one = isinstance(severities, (str, bytes)) or not isinstance(severities, Iterable)
    if one or getattr(severities, "ndim", 1) == 0:
        return [check_severity(severities)]  # one: a number or a 0-dim tensor/array (2.5 is refused there, by name)
    return [check_severity(s) for s in severities]


def check_severity(severity: object) -> int:
    """Validate a severity: an integer 1-5 (a Python or NumPy int, or a 0-dim integer tensor/array)."""
    if getattr(severity, "ndim", None) == 0 and hasattr(severity, "item"):  # its value; a float one is refused below
        severity = severity.item()
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral):
        raise TypeError(f"severity must be an integer 1-5, got {severity!r}")
    severity = int(severity)
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer 1-5, got {severity}")
    return severity


def params(name: str, severity: int, preset: str = "cifar") -> Any:
    """The published parameter of corruption ``name`` at ``severity`` (1-5) in ``preset``."""
    check_preset(preset)
    return PARAMS[preset][canonical_name(name)][check_severity(severity) - 1]
