"""ResNet-18/34 with a CIFAR stem (3x3 stride-1 first convolution, no max-pool), as in the APR tables.

Four stages of basic blocks with 64, 128, 256 and 512 channels (strides 1, 2, 2, 2) and 1x1
convolution + BN projection shortcuts; global average pooling and a linear classifier. Parameter
names follow the widely used ``kuangliu/pytorch-cifar`` layout that the APR code adopts
(``conv1``, ``bn1``, ``layer1..4``, ``shortcut``, ``linear``).

Normalisation default: ``mean = std = (0.5, 0.5, 0.5)`` (AugMix's CIFAR preprocessing, [-1, 1]). The APR code
normalises with ``CIFAR10_MEAN`` and ``APR_CIFAR_STD`` (0.2023, 0.1994, 0.2010): pass them as ``mean=``/``std=``
to load its checkpoints (a plain state dict, which records no normalisation, warns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import HALF_MEAN, HALF_STD, ImageClassifier
from .registry import register_model

__all__ = ["ResNet18", "CifarResNetB", "resnet18", "resnet34"]


class BasicBlockB(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus an identity or 1x1-conv/BN projection shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetB(ImageClassifier):
    """ResNet with basic blocks ``blocks`` per stage and a CIFAR stem; input ``(B, 3, 32, 32)``."""

    layer1: nn.Sequential  # stages, registered with add_module
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=HALF_MEAN, default_std=HALF_STD, in_channels=3)
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be four positive ints (blocks per stage), got {blocks!r}")
        self.num_classes, self.input_size, self.num_features = num_classes, (3, 32, 32), 512
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, strides, in_planes = (64, 128, 256, 512), (1, 2, 2, 2), 64
        for i, (w, s, n) in enumerate(zip(widths, strides, blocks, strict=True), start=1):
            stage = [BasicBlockB(in_planes, w, s)] + [BasicBlockB(w, w, 1) for _ in range(int(n) - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            in_planes = w
        self.linear = nn.Linear(512, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return out.mean(dim=(-2, -1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class ResNet18(CifarResNetB):
    """ResNet-18 (11.2M parameters) with a CIFAR stem."""

    def __init__(self, num_classes: int = 10, **kwargs: Any) -> None:
        super().__init__((2, 2, 2, 2), num_classes, **kwargs)


@register_model("resnet18")
def resnet18(num_classes: int = 10, **kwargs: Any) -> ResNet18:
    """ResNet-18 with a CIFAR stem (APR/AugMix tables)."""
    return ResNet18(num_classes, **kwargs)


@register_model("resnet34")
def resnet34(num_classes: int = 10, **kwargs: Any) -> CifarResNetB:
    """ResNet-34 with a CIFAR stem."""
    return CifarResNetB((3, 4, 6, 3), num_classes, **kwargs)
