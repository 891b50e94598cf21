"""aprkit: Fourier amplitude-phase recombination (APR) for robust image classifiers.

Importing ``aprkit`` loads only the Fourier core; subpackages (``aprkit.augment``,
``aprkit.corruptions``, ``aprkit.eval``, ``aprkit.hidden``, ``aprkit.models``, ``aprkit.train``,
``aprkit.data``) are imported on first attribute access.
"""

from __future__ import annotations

from . import fourier
from ._lazy import lazy_getattr
from .fourier import (
    amplitude_only,
    amplitude_phase,
    low_frequency_swap,
    mix_amplitude,
    phase_only,
    recombine,
    swap_amplitude,
)

__version__ = "0.1.0"

_SUBPACKAGES = ("augment", "corruptions", "data", "eval", "hidden", "models", "train")

__all__ = [
    "__version__",
    "fourier",
    "amplitude_phase",
    "recombine",
    "swap_amplitude",
    "mix_amplitude",
    "low_frequency_swap",
    "phase_only",
    "amplitude_only",
    *_SUBPACKAGES,
]


__getattr__ = lazy_getattr(__name__, {}, _SUBPACKAGES)
