"""CIFAR ResNet-20/32/44/56/110 (He et al., CVPR 2016, Sec. 4.2) with option-A shortcuts.

Three stages of ``n = (depth - 2) / 6`` basic blocks with 16, 32 and 64 channels on 32x32 inputs;
when a block halves the resolution, the shortcut subsamples by 2 and zero-pads the new channels
(option A, parameter-free). Parameter names match the ``pytorch_resnet_cifar10`` checkpoints
(``conv1``, ``bn1``, ``layer1..3``, ``linear``), so their ``state_dict`` loads strictly.

Normalisation default: ImageNet mean/std, because the shipped checkpoints were trained with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .registry import register_model

__all__ = ["CifarResNet", "BasicBlockA", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


class BasicBlockA(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus an identity / option-A shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity, or subsample by 2 and zero-pad the channels symmetrically (option A)."""
        if not self.downsample:
            return x
        lo = self.pad // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, lo, self.pad - lo))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(ImageClassifier):
    """Option-A CIFAR ResNet of depth ``6n + 2``; input ``(B, 3, 32, 32)`` in [0, 1]."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=IMAGENET_MEAN, default_std=IMAGENET_STD, in_channels=3)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.num_classes, self.input_size, self.num_features = depth, num_classes, (3, 32, 32), 64
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlockA(in_planes, planes, stride)]
        blocks += [BasicBlockA(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(-2, -1))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def _builder(depth: int):
    def build(num_classes: int = 10, **kwargs: Any) -> CifarResNet:
        return CifarResNet(depth, num_classes, **kwargs)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} (option A, {(depth - 2) // 6} blocks per stage, ImageNet mean/std)."
    return build


resnet20 = register_model("resnet20")(_builder(20))
resnet32 = register_model("resnet32")(_builder(32))
resnet44 = register_model("resnet44")(_builder(44))
resnet56 = register_model("resnet56")(_builder(56))
resnet110 = register_model("resnet110")(_builder(110))
