"""Training: ``fit(config)``, YAML configs with ``base:`` inheritance and overrides, the device input path.

Public names are imported lazily from their modules on first access (nothing heavy at import).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "fit": "aprkit.train.loop",
    "build_model": "aprkit.train.loop",
    "evaluate_accuracy": "aprkit.train.loop",
    "Config": "aprkit.train.config",
    "load_config": "aprkit.train.config",
    "config_from_dict": "aprkit.train.config",
    "apply_overrides": "aprkit.train.config",
    "validate_config": "aprkit.train.config",
    "METHODS": "aprkit.train.config",
    "random_crop": "aprkit.train.batch_ops",
    "random_hflip": "aprkit.train.batch_ops",
    "DeviceAugment": "aprkit.train.recipe",
    "method_loss": "aprkit.train.recipe",
    "jsd_loss": "aprkit.train.recipe",
    "load_train_checkpoint": "aprkit.train.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aprkit.train' has no attribute {name!r}")
