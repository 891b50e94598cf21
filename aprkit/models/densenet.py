"""DenseNet for CIFAR (Huang et al., CVPR 2017): DenseNet-BC (L=100, k=12) of the AugMix/APR tables.

Stem 3x3 convolution with ``2k`` channels; three dense blocks joined by transitions (BN-ReLU-1x1
conv compressing by ``reduction``, 2x2 average pool); final BN-ReLU, global average pool, linear.
With ``bottleneck=True`` (the "B" of BC) each layer is BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k)
and a block has ``(L - 4) / 6`` layers (16 for L=100; 0.77M parameters). With ``bottleneck=False``
each layer is BN-ReLU-3x3 conv and a block has ``(L - 4) / 3`` layers: this is what an older AugMix commit's
``densenet100_12`` builds (its table calls it DenseNet-BC; compression 0.5 is kept). The APR code and later AugMix
code build DenseNet-40-12 without bottlenecks or compression: ``densenet40_12``.
Parameter names follow that code (``conv1``, ``dense1..3``, ``trans1..2``, ``bn1``, ``fc``).

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

__all__ = ["DenseNetBC", "densenet_bc_100"]


class DenseLayer(nn.Module):
    """One dense layer; returns the input with ``growth`` new channels concatenated."""

    def __init__(self, in_channels: int, growth: int, bottleneck: bool) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        self.bn1 = nn.BatchNorm2d(in_channels)
        if bottleneck:
            self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(4 * growth)
            self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        if self.bottleneck:
            out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNetBC(ImageClassifier):
    """DenseNet of depth ``depth`` and growth rate ``growth`` for ``(B, 3, 32, 32)`` images in [0, 1]."""

    dense1: nn.Sequential  # registered with add_module
    dense2: nn.Sequential
    dense3: nn.Sequential
    trans1: Transition
    trans2: Transition

    def __init__(
        self,
        depth: int = 100,
        growth: int = 12,
        num_classes: int = 10,
        *,
        reduction: float = 0.5,
        bottleneck: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=HALF_MEAN, default_std=HALF_STD, in_channels=3)
        per = 6 if bottleneck else 3
        if depth < 4 + per or (depth - 4) % per != 0:
            raise ValueError(f"DenseNet depth must be {per}n+4 with n >= 1 (bottleneck={bottleneck}), got {depth}")
        if growth < 1 or not 0.0 < reduction <= 1.0:
            raise ValueError(f"need growth >= 1 and reduction in (0, 1], got growth={growth}, reduction={reduction}")
        n = (depth - 4) // per
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        for i in (1, 2, 3):
            layers = [DenseLayer(channels + j * growth, growth, bottleneck) for j in range(n)]
            self.add_module(f"dense{i}", nn.Sequential(*layers))
            channels += n * growth
            if i < 3:
                out = int(math.floor(channels * reduction))
                self.add_module(f"trans{i}", Transition(channels, out))
                channels = out
        self.bn1 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.num_classes, self.input_size, self.num_features = num_classes, (3, 32, 32), channels
        init_conv_bn(self)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans1(self.dense1(self.conv1(x)))
        out = self.dense3(self.trans2(self.dense2(out)))
        return F.relu(self.bn1(out)).mean(dim=(-2, -1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


@register_model("densenet_bc_100")
def densenet_bc_100(num_classes: int = 10, **kwargs: Any) -> DenseNetBC:
    """DenseNet-BC (L=100, k=12); ``bottleneck=False`` gives AugMix's ``densenet100_12`` as coded."""
    return DenseNetBC(100, 12, num_classes, **kwargs)


@register_model("densenet40_12")
def densenet40_12(num_classes: int = 10, **kwargs: Any) -> DenseNetBC:
    """DenseNet (L=40, k=12) without bottlenecks or compression (1.06M parameters): the DenseNet the APR code and
    later AugMix code build for their tables."""
    return DenseNetBC(40, 12, num_classes, **{"reduction": 1.0, "bottleneck": False, **kwargs})
