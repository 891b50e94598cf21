"""APR-P as a timm ``mixup_fn``: ``input, target = mixup_fn(input, target)`` in timm's training loop."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..._checks import check_image_tensor, check_labels, check_positive_int, value_range_problem
from ...fourier import Dims
from ..functional import keep_layout
from ..pair import APRPair

__all__ = ["APRMixup"]

# how far outside [0, 1] an un-normalised input may stray (half-precision loaders) before it is rejected
_UNIT_SLACK = 0.05


def _stats(values: Sequence[float] | None, name: str) -> tuple[float, ...] | None:
    """``mean`` / ``std`` as a tuple of floats in [0, 1] units (timm's data config), or ``None``."""
    if values is None:
        return None
    if isinstance(values, (int, float)):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of floats (one per channel), got {values!r}") from None
    if not out:
        raise ValueError(f"{name} must hold one value per channel, got an empty sequence")
    low, high = (1e-6, 1.0) if name == "std" else (0.0, 1.0)
    if any(not low <= v <= high for v in out):
        raise ValueError(f"{name} must hold per-channel values in [{low:g}, {high:g}] (the [0, 1] units of timm's "
                         f"data config, e.g. IMAGENET_DEFAULT_{name.upper()}), got {out}")
    return out


class APRMixup:
    """Drop-in for timm's ``Mixup`` (``mixup_fn``) that applies APR-P instead of mixup / cutmix.

    Contract of ``timm.data.Mixup``: ``x, target = mixup_fn(x, target)`` with integer class indices in and
    soft targets ``(B, num_classes)`` out, equal to ``timm.data.mixup.mixup_target(target, num_classes,
    lam=1.0, smoothing=label_smoothing)`` (APR-P's label follows the phase, so no second label is mixed in);
    same defaults (``num_classes=1000``, ``label_smoothing=0.1`` with soft targets), ready for
    ``SoftTargetCrossEntropy``; ``mixup_enabled = False`` switches the recombination off (timm's
    ``mixup_off_epoch``); odd batch sizes are fine. ``num_classes=None`` returns the integer labels
    unchanged, for ``nn.CrossEntropyLoss`` only.

    APR-P is defined on [0, 1] images, but timm's loaders normalise first (with the prefetcher: on the
    device, after the uint8 batch is moved). Pass the loader's ``mean`` / ``std`` (``[0, 1]`` units, as in
    ``resolve_data_config(...)``; see :meth:`from_data_config`): each batch is un-normalised, recombined,
    clamped to [0, 1] and re-normalised, in float32, on the batch's device, returned in its dtype and
    memory format (``channels_last`` stays). Without ``mean`` / ``std`` the input must be [0, 1] images.

    Checks that cannot be made on every batch without a host sync on accelerators are made on the first
    call (or always, for CPU batches): inputs outside [0, 1] without ``mean`` / ``std`` (a normalised batch)
    and class indices outside ``[0, num_classes)``. What the adapter cannot see: a loss that does not match
    the targets; ``SoftTargetCrossEntropy`` raises on a ``num_classes`` that differs from the logits'.
    """

    def __init__(self, p: float = 0.6, dims: Dims = "chw", per_sample: bool = False, clamp: bool | None = None,
                 num_classes: int | None = 1000, label_smoothing: float | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None) -> None:
        if num_classes is not None:
            num_classes = check_positive_int(num_classes, "num_classes (or None for integer labels)")
        if label_smoothing is None:
            label_smoothing = 0.0 if num_classes is None else 0.1
        given: Any = label_smoothing  # a numpy float too (numbers.Real: mypy reads float as not one)
        if isinstance(given, bool) or not isinstance(given, numbers.Real) or not 0.0 <= float(given) < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        if label_smoothing and num_classes is None:
            raise ValueError(
                "label_smoothing needs num_classes (soft targets); with num_classes=None labels stay integers"
            )
        self.mean, self.std = _stats(mean, "mean"), _stats(std, "std")
        if (self.mean is None) != (self.std is None):
            raise ValueError("pass both mean and std (the loader's normalisation) or neither")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}")
        self.pixel_space = self.mean is not None
        if clamp is None:
            clamp = self.pixel_space
        self.pair = APRPair(p, dims, per_sample, bool(clamp), generator=generator, seed=seed)
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.mixup_enabled = True
        self._checked = False
        self._norm: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_data_config(cls, data_config: Mapping[str, Any], **kwargs: Any) -> APRMixup:
        """``APRMixup(mean=data_config["mean"], std=data_config["std"], **kwargs)`` for timm's
        ``resolve_data_config(...)`` / ``resolve_model_data_config(model)`` dict (what the loader normalises with)."""
        missing = [k for k in ("mean", "std") if k not in data_config]
        if missing:
            raise ValueError(f"data_config lacks {missing}; expected timm's resolve_data_config(...) dict")
        return cls(mean=data_config["mean"], std=data_config["std"], **kwargs)

    def _targets(self, target: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            return target
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices (B,), got dtype {target.dtype}; APRMixup makes "
                            f"the soft (B, num_classes) targets itself, as timm's Mixup does")
        if target.ndim != 1:
            raise ValueError(f"target must hold one class index per image, shape (B,), got {tuple(target.shape)}")
        if target.numel() and (target.device.type == "cpu" or not self._checked):
            low, high = int(target.min()), int(target.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(f"target holds class indices in [{low}, {high}], outside "
                                 f"[0, num_classes={self.num_classes}); "
                                 f"set num_classes to the model's number of classes")
        off = self.label_smoothing / self.num_classes
        soft = torch.full((target.shape[0], self.num_classes), off, device=target.device)
        return soft.scatter_(1, target.long().view(-1, 1), 1.0 - self.label_smoothing + off)

    def _stats_on(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[1]
        key = (x.device, c)
        if key not in self._norm:
            mean, std = self.mean, self.std
            if mean is None or std is None:
                raise RuntimeError("APRMixup has no mean/std: pixel-space statistics are only defined with both")
            if len(mean) not in (1, c):
                raise ValueError(f"mean/std have {len(mean)} values but the input has {c} channels")
            shape = (1, -1, 1, 1)
            self._norm[key] = (torch.tensor(mean, device=x.device).view(shape).expand(1, c, 1, 1),
                               torch.tensor(std, device=x.device).view(shape).expand(1, c, 1, 1))
        return self._norm[key]

    def _check_input(self, x: torch.Tensor) -> None:
        """Value checks: every CPU batch, else the first batch only (one host sync)."""
        if self._checked and x.device.type != "cpu":
            return
        if self.pixel_space:
            if not x.dtype.is_floating_point:
                raise TypeError(f"input must be a normalised float batch when mean/std are given, got {x.dtype}")
        elif x.dtype.is_floating_point:
            low, high = (float(v) for v in torch.aminmax(x.detach()))
            if not (math.isfinite(low) and math.isfinite(high)):  # (NaN reaches the pair's check; inf stops here)
                raise ValueError("input contains NaN or infinite values; expected finite pixel values")
            problem = value_range_problem(x, low, high) if low < -_UNIT_SLACK or high > 1 + _UNIT_SLACK else None
            if problem == "0..255":  # (another augmentation's overshoot, APR-P's, passes as everywhere)
                raise ValueError(f"input values lie in [{low:.3g}, {high:.3g}]: 0..255 floats? pass float images in "
                                 "[0, 1] (divide by 255)")
            if problem is not None:
                raise ValueError(f"input values lie in [{low:.3g}, {high:.3g}], not in [0, 1]: a normalised batch "
                                 f"(timm's loaders normalise)? pass the loader's mean= and std= "
                                 f"(APRMixup.from_data_config) so APR-P recombines [0, 1] images")

    def _recombine(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pixel_space:
            return self.pair(x)
        mean, std = self._stats_on(x)
        pixels = torch.addcmul(mean, x.float(), std)
        out = self.pair(pixels)
        if out is pixels:  # batch not selected: hand back the input untouched
            return x
        renorm = keep_layout((out - mean).div_(std).to(x.dtype), x)
        if self.pair.per_sample:  # the images left as they were come back exactly, not re-normalised (1e-7 off)
            kept = (out == pixels).flatten(1).all(1).view(-1, *([1] * (x.ndim - 1)))
            renorm = torch.where(kept, x, renorm)
        return renorm

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_image_tensor(x, "input", min_ndim=4, max_ndim=4, check_finite=False, allow_empty=True)
        check_labels(target, x.shape[0], "target")
        if x.shape[0] == 0:  # as timm's Mixup: the empty batch and its (0, num_classes) targets
            return x, self._targets(target)
        self._check_input(x)
        soft = self._targets(target)
        self._checked = True
        if self.mixup_enabled:
            x = self._recombine(x)
        return x, soft

    def __repr__(self) -> str:
        norm = f", mean={self.mean}, std={self.std}" if self.pixel_space else ""
        return (f"APRMixup({self.pair.extra_repr()}, num_classes={self.num_classes}, "
                f"label_smoothing={self.label_smoothing}{norm})")
