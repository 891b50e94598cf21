"""APR-S and APR-P as kornia augmentations for float batches on device.

Both subclass ``kornia.augmentation.IntensityAugmentationBase2D`` with kornia's own probability
fixed at 1 (the APR probability ``p`` lives in the parameters, so the partner permutation always
spans the whole batch), so they work in ``nn.Sequential`` and ``kornia.augmentation.AugmentationSequential``
and replay parameters with ``module(x, params=module._params)``. The geometric ops of APR-S are
not reported as a transformation matrix: use them for classification, not with boxes or masks.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from kornia.augmentation import IntensityAugmentationBase2D

from ...fourier import Dims
from ..pair import APRPair
from ..single import APRSingleBatch

__all__ = ["RandomAPRSingle", "RandomAPRPair"]

_SINGLE_KEYS = ("op1", "level1", "negate1", "recombine", "op2", "level2", "negate2", "phase_from_first")
_PAIR_KEYS = ("perm", "mask")


def _ours(params: dict[str, Any], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Our entries of a kornia parameter dict (kornia and its containers add their own)."""
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"params lack {missing}; pass the dict produced by generate_parameters/_params")
    return {k: params[k] for k in keys}


class RandomAPRSingle(IntensityAugmentationBase2D):
    """Kornia APR-S on ``(B, C, H, W)`` float images in [0, 1] (see :class:`aprkit.augment.APRSingleBatch`)."""

    def __init__(self, p: float = 0.5, severity: float = 3, ops: Optional[Sequence[str]] = None, dims: Dims = "chw",
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None, keepdim: bool = False) -> None:
        super().__init__(p=1.0, p_batch=1.0, same_on_batch=False, keepdim=keepdim)
        self.core = APRSingleBatch(p, severity, ops, dims, generator=generator, seed=seed)

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return self.core.generate_parameters(batch_shape)

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.core.apply(input, _ours(params, _SINGLE_KEYS))


class RandomAPRPair(IntensityAugmentationBase2D):
    """Kornia APR-P on ``(B, C, H, W)`` images (see :class:`aprkit.augment.APRPair`); labels are unchanged."""

    def __init__(self, p: float = 0.6, dims: Dims = "chw", per_sample: bool = False, clamp: bool = False,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None, keepdim: bool = False) -> None:
        super().__init__(p=1.0, p_batch=1.0, same_on_batch=False, keepdim=keepdim)
        self.core = APRPair(p, dims, per_sample, clamp, generator=generator, seed=seed)

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return self.core.generate_parameters(batch_shape)

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.core.apply(input, _ours(params, _PAIR_KEYS))
