"""``aprkit demo``: train a small CNN with standard training and with APR-SP, evaluate both, report side by side.

Runs on the built-in synthetic shape x texture dataset by default (no download), or on real data
(``cifar10:PATH``, ``folder:PATH``). Public names are imported lazily (nothing heavy at import).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
