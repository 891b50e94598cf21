"""aprkit: Fourier amplitude-phase recombination (APR) for robust image classifiers.

Importing ``aprkit`` loads nothing heavy (not even torch: the ``aprkit`` command answers Ctrl-C from its first
moment); the Fourier core (``aprkit.fourier`` and the functions re-exported here) and the subpackages
(``aprkit.augment``, ``aprkit.corruptions``, ``aprkit.eval``, ``aprkit.hidden``, ``aprkit.models``,
``aprkit.train``, ``aprkit.data``, ``aprkit.demo``) are imported on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and IDEs (``as``: re-exported)
    from . import fourier as fourier
    from .fourier import amplitude_only as amplitude_only
    from .fourier import amplitude_phase as amplitude_phase
    from .fourier import low_frequency_swap as low_frequency_swap
    from .fourier import mix_amplitude as mix_amplitude
    from .fourier import phase_only as phase_only
    from .fourier import recombine as recombine
    from .fourier import swap_amplitude as swap_amplitude

__version__ = "0.1.0"

_SUBPACKAGES = ("augment", "corruptions", "data", "demo", "eval", "fourier", "hidden", "models", "train")
#: the Fourier core's functions re-exported here -> their defining module
_FOURIER = {"amplitude_phase": "aprkit.fourier.spectra", "recombine": "aprkit.fourier.spectra",
            **dict.fromkeys(("swap_amplitude", "mix_amplitude", "low_frequency_swap", "phase_only", "amplitude_only"),
                            "aprkit.fourier.images")}

__all__ = ["__version__", *_FOURIER, *_SUBPACKAGES]


__getattr__ = lazy_getattr(__name__, _FOURIER, _SUBPACKAGES)


def __dir__() -> list[str]:  # the lazy names too (tab completion)
    return sorted({*globals(), *__all__})
