"""Model registry, architectures and checkpoints.

Convention (every aprkit module relies on it): models take float images in [0, 1] of shape
``(B, C, H, W)`` and normalise inside; they expose ``forward_features(x) -> (B, D)``,
``forward_head(features) -> logits``, ``num_classes`` and ``input_size``. Wrap foreign models
with ``Normalize``; ``load_model`` does it for ``timm:``/``torchvision:``/``robustbench:`` specs.

Public names are imported lazily from their modules on first access.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "register_model": "aprkit.models.registry",
    "create_model": "aprkit.models.registry",
    "list_models": "aprkit.models.registry",
    "is_model": "aprkit.models.registry",
    "ImageClassifier": "aprkit.models.base",
    "IMAGENET_MEAN": "aprkit.models.base",
    "IMAGENET_STD": "aprkit.models.base",
    "CIFAR10_MEAN": "aprkit.models.base",
    "CIFAR10_STD": "aprkit.models.base",
    "APR_CIFAR_STD": "aprkit.models.base",
    "Normalize": "aprkit.models.normalize",
    "unwrap_model": "aprkit.models.normalize",
    "save_checkpoint": "aprkit.models.saving",
    "load_model": "aprkit.models.checkpoint",
    "read_checkpoint": "aprkit.models.checkpoint",
    "CifarResNet": "aprkit.models.cifar_resnet",
    "WideResNet": "aprkit.models.wrn",
    "ResNet18": "aprkit.models.resnet",
    "AllConvNet": "aprkit.models.allconv",
    "DenseNetBC": "aprkit.models.densenet",
    "ResNeXt29": "aprkit.models.resnext",
    "GFNet": "aprkit.models.gfnet",
    "GlobalFilter": "aprkit.models.gfnet",
    "PhaseCollapseNet": "aprkit.models.scattering",
    "morlet_filter_bank": "aprkit.models.morlet",
    "SmallCNN": "aprkit.models.small_cnn",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
