"""A small, fast CNN for demos, smoke runs and CPU experiments at 32x32.

Four 3x3 conv-BN-ReLU stages (widths ``w, w, 2w, 4w``; max-pool after the 2nd and 3rd), global average
pooling and a linear head: about 0.1M parameters at ``width=32``. Named blocks ``block1..block4`` so
the hidden-layer tools (``aprkit.hidden``, the transplant test) can address each depth.

Normalisation default: ``mean = std = (0.5, 0.5, 0.5)`` (the model sees [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import HALF_MEAN, HALF_STD, ImageClassifier
from .registry import register_model

__all__ = ["SmallCNN", "small_cnn"]


def _stage(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(ImageClassifier):
    """Small CNN for ``(B, C, H, W)`` images in [0, 1] (any H, W >= 4; native 32x32)."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width: int = 32,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=HALF_MEAN, default_std=HALF_STD, in_channels=in_channels)
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.num_classes, self.input_size, self.num_features = num_classes, (in_channels, 32, 32), 4 * width
        self.block1 = _stage(in_channels, width, pool=False)
        self.block2 = _stage(width, width, pool=True)
        self.block3 = _stage(width, 2 * width, pool=True)
        self.block4 = _stage(2 * width, 4 * width, pool=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return torch.flatten(self.pool(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


@register_model("small_cnn")
def small_cnn(num_classes: int = 10, **kwargs: object) -> SmallCNN:
    """Small 4-stage CNN (width 32 by default) for demos and CPU runs."""
    return SmallCNN(num_classes, **kwargs)  # type: ignore[arg-type]
