"""ResNeXt-29 for CIFAR (Xie et al., CVPR 2017), the ResNeXt of the AugMix/APR tables.

Stem 3x3 convolution (64); three stages of ``(depth - 2) / 9`` bottleneck blocks (1x1 reduce -
grouped 3x3 with ``cardinality`` groups - 1x1 expand to ``4 x planes``, planes 64/128/256, strides
1/2/2) with 1x1 conv + BN projection shortcuts; 8x8 average pool; linear on 1024 features. The
group width is ``floor(planes * base_width / 64)``. ``resnext29`` is the 32x4d model of the ResNeXt
(4.8M parameters); ``resnext29_4x32d`` (6.8M) is the default of AugMix's code (cardinality 4, base
width 32). Parameter names follow that code (``conv_1_3x3``, ``stage_1..3``, ``conv_reduce``, ...).

Normalisation default: ``mean = std = (0.5, 0.5, 0.5)`` (AugMix's CIFAR preprocessing, [-1, 1]). The APR code
normalises with ``CIFAR10_MEAN`` and ``APR_CIFAR_STD`` (0.2023, 0.1994, 0.2010): pass them as ``mean=``/``std=``
to load its checkpoints (a plain state dict, which records no normalisation, warns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import HALF_MEAN, HALF_STD, ImageClassifier, init_conv_bn
from .registry import register_model

__all__ = ["ResNeXt29", "resnext29", "resnext29_4x32d"]


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce - grouped 3x3 (stride) - 1x1 expand, plus identity/projection shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, cardinality: int, base_width: int, stride: int = 1) -> None:
        super().__init__()
        d = int(math.floor(planes * base_width / 64.0)) * cardinality
        self.conv_reduce = nn.Conv2d(in_planes, d, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_conv = nn.Conv2d(d, d, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.conv_expand = nn.Conv2d(d, 4 * planes, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or in_planes != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, 4 * planes, 1, stride=stride, bias=False), nn.BatchNorm2d(4 * planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNeXt29(ImageClassifier):
    """CIFAR ResNeXt of depth ``9n + 2`` for ``(B, 3, 32, 32)`` images in [0, 1]."""

    stage_1: nn.Sequential  # registered with add_module
    stage_2: nn.Sequential
    stage_3: nn.Sequential

    def __init__(
        self,
        num_classes: int = 10,
        *,
        depth: int = 29,
        cardinality: int = 32,
        base_width: int = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=HALF_MEAN, default_std=HALF_STD, in_channels=3)
        if depth < 11 or (depth - 2) % 9 != 0:
            raise ValueError(f"ResNeXt depth must be 9n+2 with n >= 1 (29, 38, ...), got {depth}")
        if cardinality < 1 or base_width < 1:
            raise ValueError(f"cardinality and base_width must be positive, got {cardinality}, {base_width}")
        n = (depth - 2) // 9
        self.num_classes, self.input_size, self.num_features = num_classes, (3, 32, 32), 1024
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2)), start=1):
            blocks = [ResNeXtBottleneck(in_planes, planes, cardinality, base_width, stride)]
            blocks += [ResNeXtBottleneck(4 * planes, planes, cardinality, base_width) for _ in range(n - 1)]
            self.add_module(f"stage_{i}", nn.Sequential(*blocks))
            in_planes = 4 * planes
        self.classifier = nn.Linear(1024, num_classes)
        init_conv_bn(self, linear_weight=True)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_1(self.conv_1_3x3(x)))
        out = self.stage_3(self.stage_2(self.stage_1(out)))
        return out.mean(dim=(-2, -1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@register_model("resnext29")
def resnext29(num_classes: int = 10, **kwargs: Any) -> ResNeXt29:
    """ResNeXt-29 (32x4d)."""
    return ResNeXt29(num_classes, **kwargs)


@register_model("resnext29_4x32d")
def resnext29_4x32d(num_classes: int = 10, **kwargs: Any) -> ResNeXt29:
    """ResNeXt-29 (4x32d), the default of AugMix's CIFAR code."""
    kwargs.setdefault("cardinality", 4)
    kwargs.setdefault("base_width", 32)
    return ResNeXt29(num_classes, **kwargs)
