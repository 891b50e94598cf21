"""Training: ``fit(config)``, YAML configs with ``base:`` inheritance and overrides, the device input path.

Public names are imported lazily from their modules on first access (nothing heavy at import).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "fit": "aprkit.train.loop",
    "build_model": "aprkit.train.model_setup",
    "evaluate_accuracy": "aprkit.train.evaluation",
    "Config": "aprkit.train.config",
    "load_config": "aprkit.train.config",
    "config_from_dict": "aprkit.train.config",
    "apply_overrides": "aprkit.config",
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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
