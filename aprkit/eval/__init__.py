"""Evaluation: functional metrics, suites, the ``evaluate`` runner and reports.

Public names are imported lazily from their modules on first access (nothing heavy at import).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it (each area adds its own lines)
_EXPORTS: dict[str, str] = {
    "evaluate": "aprkit.eval.runner",
    "Results": "aprkit.eval.runner",
    "shape_bias": "aprkit.eval.shape_bias",
    "phase_bias": "aprkit.eval.phase_bias",
    "transplant_test": "aprkit.eval.transplant",
    "layer_sweep": "aprkit.eval.transplant",
}

_SUBMODULES = ("metrics", "suites", "runner", "report")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aprkit.eval' has no attribute {name!r}")
