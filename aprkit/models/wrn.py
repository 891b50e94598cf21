"""Wide ResNet WRN-d-k for CIFAR (Zagoruyko & Komodakis, BMVC 2016), as in the AugMix/APR tables.

Pre-activation basic blocks (BN-ReLU-conv3x3, twice) in three groups of ``n = (d - 4) / 6`` blocks
with ``16k, 32k, 64k`` channels; a 1x1 convolution shortcut where the width or stride changes;
optional dropout between the two convolutions. Parameter names follow the WideResNet-pytorch code
used by AugMix (``conv1``, ``block1.layer.0.bn1``, ..., ``convShortcut``, ``bn1``, ``fc``).

Normalisation default: ``mean = std = (0.5, 0.5, 0.5)`` (AugMix's CIFAR preprocessing, [-1, 1]). The APR code
normalises with ``CIFAR10_MEAN`` and ``APR_CIFAR_STD`` (0.2023, 0.1994, 0.2010): pass them as ``mean=``/``std=``
to load its checkpoints (a plain state dict, which records no normalisation, warns).
The shortcut's weights load under either name, ``convShortcut`` or ``conv_shortcut`` (the APR code's and
later AugMix code's spelling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import HALF_MEAN, HALF_STD, ImageClassifier, init_conv_bn
from .registry import register_model

__all__ = ["WideResNet", "wrn40_2", "wrn28_10"]


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3 plus identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal = in_planes == out_planes and stride == 1
        self.convShortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # the projection shortcut reads the pre-activated input, the identity shortcut the raw input
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class NetworkBlock(nn.Module):
    """A group of ``n`` wide blocks; the first one may change width and stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
              for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ImageClassifier):
    """WRN-``depth``-``widen`` for ``(B, 3, 32, 32)`` images in [0, 1]."""

    #: module names of other WRN codes that checkpoints load under (``load_state_dict_into``)
    state_dict_aliases: ClassVar[dict[str, str]] = {"conv_shortcut": "convShortcut"}

    def __init__(
        self,
        depth: int = 40,
        widen: int = 2,
        num_classes: int = 10,
        *,
        drop_rate: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=HALF_MEAN, default_std=HALF_STD, in_channels=3)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (16, 28, 40, ...), got {depth}")
        if widen < 1:
            raise ValueError(f"WRN widen factor must be >= 1, got {widen}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.num_classes, self.input_size, self.num_features = num_classes, (3, 32, 32), widths[3]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn(self)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn1(out)).mean(dim=(-2, -1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


@register_model("wrn40_2")
def wrn40_2(num_classes: int = 10, **kwargs: Any) -> WideResNet:
    """WRN-40-2 (2.2M parameters), the backbone of the AugMix and APR CIFAR tables."""
    return WideResNet(40, 2, num_classes, **kwargs)


@register_model("wrn28_10")
def wrn28_10(num_classes: int = 10, **kwargs: Any) -> WideResNet:
    """WRN-28-10 (36.5M parameters)."""
    return WideResNet(28, 10, num_classes, **kwargs)
