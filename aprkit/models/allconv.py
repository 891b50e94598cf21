"""All-convolutional net (Springenberg et al., 2015) in the AugMix/APR variant, for CIFAR.

Layers (each convolution followed by BN and the sigmoid-approximated GELU ``x * sigmoid(1.702 x)``):
3x(3x3, 96) - maxpool 2 - dropout 0.5 - 3x(3x3, 192) - maxpool 2 - dropout 0.5 - 3x3 192 without
padding (8 -> 6) - 2x(1x1, 192, padding 1: 6 -> 8 -> 10) - average pool 8 (the top-left 8x8 window of
the 10x10 map, as in the reference) - linear. 1.4M parameters. The ``features`` Sequential indices
follow AugMix's ``allconv.py``.

Normalisation default: ``mean = std = (0.5, 0.5, 0.5)`` (AugMix's CIFAR preprocessing, [-1, 1]). The APR code
normalises with ``CIFAR10_MEAN`` and ``APR_CIFAR_STD`` (0.2023, 0.1994, 0.2010): pass them as ``mean=``/``std=``
to load its checkpoints (a plain state dict, which records no normalisation, warns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import HALF_MEAN, HALF_STD, ImageClassifier, init_conv_bn
from .registry import register_model

__all__ = ["AllConvNet", "SigmoidGELU", "allconv"]


class SigmoidGELU(nn.Module):
    """GELU approximation ``x * sigmoid(1.702 x)`` (Hendrycks & Gimpel), as in AugMix's AllConv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(1.702 * x) * x


def _conv(cin: int, cout: int, kernel: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout), SigmoidGELU()]


class AllConvNet(ImageClassifier):
    """AllConv for ``(B, 3, 32, 32)`` images in [0, 1]; ``width1``/``width2`` default to 96/192."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width1: int = 96,
        width2: int = 192,
        drop_rate: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(mean, std, default_mean=HALF_MEAN, default_std=HALF_STD, in_channels=3)
        if width1 < 1 or width2 < 1:
            raise ValueError(f"widths must be positive, got width1={width1}, width2={width2}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.input_size, self.num_features = num_classes, (3, 32, 32), width2
        w1, w2 = width1, width2
        layers: list[nn.Module] = []
        layers += _conv(3, w1, 3, 1) + _conv(w1, w1, 3, 1) + _conv(w1, w1, 3, 1)
        layers += [nn.MaxPool2d(2, 2), nn.Dropout(drop_rate)]
        layers += _conv(w1, w2, 3, 1) + _conv(w2, w2, 3, 1) + _conv(w2, w2, 3, 1)
        layers += [nn.MaxPool2d(2, 2), nn.Dropout(drop_rate)]
        layers += _conv(w2, w2, 3, 0) + _conv(w2, w2, 1, 1) + _conv(w2, w2, 1, 1)
        layers += [nn.AvgPool2d(8)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(w2, num_classes)
        init_conv_bn(self)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (32, 32):
            raise ValueError(f"AllConvNet takes 32x32 images, got shape {tuple(x.shape)}")
        return self.features(x).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@register_model("allconv")
def allconv(num_classes: int = 10, **kwargs: Any) -> AllConvNet:
    """AllConv (AugMix/APR CIFAR tables)."""
    return AllConvNet(num_classes, **kwargs)
