"""APR-P as a timm ``mixup_fn``: ``input, target = mixup_fn(input, target)`` in timm's training loop."""

from __future__ import annotations

from typing import Optional

import torch

from ..._checks import check_image_tensor, check_labels
from ...fourier import Dims
from ..pair import APRPair

__all__ = ["APRMixup"]


class APRMixup:
    """Drop-in for timm's ``Mixup`` object (``mixup_fn``) that applies APR-P instead.

    Labels follow the phase, so the targets are the input labels; with ``num_classes`` they are
    returned as (optionally smoothed) one-hot rows as timm's ``Mixup`` does, ready for
    ``SoftTargetCrossEntropy``; without it, hard labels are returned unchanged. Set
    ``mixup_enabled = False`` to switch the recombination off (as timm does at ``mixup_off_epoch``).
    Unlike timm's ``Mixup``, odd batch sizes are fine.
    """

    def __init__(self, p: float = 0.6, dims: Dims = "chw", per_sample: bool = False, clamp: bool = False,
                 num_classes: Optional[int] = None, label_smoothing: float = 0.0,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None) -> None:
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.pair = APRPair(p, dims, per_sample, clamp, generator=generator, seed=seed)
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.mixup_enabled = True

    def _targets(self, target: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            return target
        if target.dtype.is_floating_point:
            raise TypeError("target must hold integer class indices when num_classes is set")
        off = self.label_smoothing / self.num_classes
        on = 1.0 - self.label_smoothing + off
        soft = torch.full((target.shape[0], self.num_classes), off, device=target.device)
        return soft.scatter_(1, target.long().view(-1, 1), on)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_image_tensor(x, "input", min_ndim=4, max_ndim=4)
        check_labels(target, x.shape[0], "target")
        if self.mixup_enabled:
            x = self.pair(x)
        return x, self._targets(target)

    def __repr__(self) -> str:
        return f"APRMixup({self.pair.extra_repr()}, num_classes={self.num_classes}, label_smoothing={self.label_smoothing})"
