"""``aprkit demo``: train a small CNN with standard training and with APR-SP, evaluate both, report side by side.

Runs on the built-in synthetic shape x texture dataset by default (no download), or on real data
(``cifar10:PATH``, ``folder:PATH``). Public names are imported lazily (nothing heavy at import).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "run_demo": "aprkit.demo.pipeline",
    "train_config": "aprkit.demo.pipeline",
    "SharedCorruptions": "aprkit.demo.pipeline",
    "transplant_layers": "aprkit.demo.pipeline",
    "DemoSettings": "aprkit.demo.config",
    "demo_settings": "aprkit.demo.config",
    "DemoData": "aprkit.demo.config",
    "load_demo_data": "aprkit.demo.config",
    "headline_numbers": "aprkit.demo.summary",
    "verdicts": "aprkit.demo.summary",
    "write_demo_report": "aprkit.demo.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aprkit.demo' has no attribute {name!r}")
