"""Datasets and readers. Every dataset yields ``(image uint8 tensor (C, H, W), int label)``.

Public names are imported lazily from their modules on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it (each area adds its own lines)
_EXPORTS: dict[str, str] = {
    "get_dataset": "aprkit.data.registry",
    "SyntheticShapes": "aprkit.data.synthetic",
    "make_synthetic": "aprkit.data.synthetic",
    "make_cue_conflict": "aprkit.data.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aprkit.data' has no attribute {name!r}")
