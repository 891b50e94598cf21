"""The model convention every aprkit module relies on, and the shared base class.

aprkit models take **float images in [0, 1]** of shape ``(B, C, H, W)`` and normalise inside
(per-channel ``mean``/``std`` held as non-persistent buffers, so state_dicts stay identical to the
reference implementations). Every model exposes

- ``forward_features(x) -> (B, D)``: penultimate pooled features (input normalised inside),
- ``forward_head(features) -> (B, num_classes)``: the classifier on those features,
- ``num_classes`` (int) and ``input_size`` (``(C, H, W)`` of its native resolution).

``forward(x) == forward_head(forward_features(x))``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .._checks import eager_cpu, value_range_problem

__all__ = [
    "eval_mode",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "APR_CIFAR_STD",
    "HALF_MEAN",
    "HALF_STD",
    "NO_MEAN",
    "NO_STD",
    "ImageClassifier",
    "as_stats",
    "init_conv_bn",
    "normalize_images",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: the std the APR reference code (and many CIFAR repositories) normalises with, beside ``CIFAR10_MEAN``
APR_CIFAR_STD = (0.2023, 0.1994, 0.2010)
#: the ``[-1, 1]`` scaling of AugMix's CIFAR models (``Normalize([0.5]*3, [0.5]*3)``)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
#: identity normalisation (the model sees [0, 1] pixels)
NO_MEAN = (0.0, 0.0, 0.0)
NO_STD = (1.0, 1.0, 1.0)


def as_stats(values: Sequence[float] | torch.Tensor | None, default: Sequence[float], name: str) -> torch.Tensor:
    """Validate per-channel statistics and return them as a float32 tensor of shape ``(C, 1, 1)``."""
    if values is None:
        values = default
    t = torch.as_tensor(values, dtype=torch.float32).flatten().clone()
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a non-empty sequence of finite per-channel floats, got {values!r}")
    if name.endswith("std") and bool((t <= 0).any()):
        raise ValueError(f"{name} must be strictly positive per channel, got {values!r}")
    return t.view(-1, 1, 1)


class ImageClassifier(nn.Module):
    """Base class: input normalisation + ``forward_features``/``forward_head`` split.

    Subclasses implement ``_features(x)`` (on the normalised input, returning ``(B, D)``) and
    ``forward_head``; they set ``num_classes``, ``input_size`` and ``num_features``.
    """

    num_classes: int
    input_size: tuple[int, int, int]
    num_features: int
    mean: torch.Tensor  # buffers
    std: torch.Tensor
    #: the model casts its input to the dtype it computes in itself: images of any float dtype go
    casts_input = False

    def __init__(
        self,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        *,
        default_mean: Sequence[float] = IMAGENET_MEAN,
        default_std: Sequence[float] = IMAGENET_STD,
        in_channels: int | None = None,
    ) -> None:
        """``in_channels``: the defaults are cut to that many channels (or 0.5 each beyond theirs), and given
        statistics must have that many."""
        super().__init__()
        if in_channels is not None:
            c = int(in_channels)
            default_mean = tuple(default_mean)[:c] if c <= len(default_mean) else (0.5,) * c
            default_std = tuple(default_std)[:c] if c <= len(default_std) else (0.5,) * c
        m = as_stats(mean, default_mean, "mean")
        s = as_stats(std, default_std, "std")
        if m.numel() != s.numel():
            raise ValueError(f"mean and std must have the same number of channels, got {m.numel()} and {s.numel()}")
        if in_channels is not None and m.numel() == 1 and in_channels > 1:  # one value for every channel
            m, s = m.repeat(in_channels, 1, 1), s.repeat(in_channels, 1, 1)
        if in_channels is not None and m.numel() != in_channels:
            raise ValueError(f"mean/std have {m.numel()} channels but the model takes {in_channels} input channels")
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` for float images ``(B, C, H, W)`` in [0, 1] (:func:`normalize_images`)."""
        return normalize_images(x, self.mean, self.std, type(self).__name__, any_float=self.casts_input)

    def _features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate pooled features ``(B, num_features)`` of images ``(B, C, H, W)`` in [0, 1]."""
        return self._features(self.normalize(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, C, H, W)`` in [0, 1]."""
        return self.forward_head(self.forward_features(x))


def normalize_images(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, owner: str, *,
                     any_float: bool = False) -> torch.Tensor:
    """``(x - mean) / std`` for float images ``(B, C, H, W)`` in [0, 1]. uint8, another shape or channel count, and
    outside autocast another float dtype than the model's (that of ``mean``, which ``model.half()`` casts) are refused
    with what was expected (the last failed in the first convolution with PyTorch's words). On eager CPU calls
    (elsewhere a host sync) 0..255 floats or a batch normalised already warn (:func:`_warn_if_not_unit`): they would
    give wrong predictions without an error. ``any_float``: the model casts its input itself (any float dtype goes)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{owner} takes float images in [0, 1] of shape (B, C, H, W), got {what}")
    if x.ndim != 4 or x.shape[1] != mean.shape[0]:
        raise ValueError(f"{owner} expects {mean.shape[0]} input channels, images of shape (B, {mean.shape[0]}, H, W); "
                         f"got shape {tuple(x.shape)}")
    if eager_cpu(x) and x.numel():
        _warn_if_not_unit(x, owner)
    if x.dtype != mean.dtype and not any_float and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{owner} is {str(mean.dtype)[6:]} and got {str(x.dtype)[6:]} images (dtype mismatch): pass "
                        f"{str(mean.dtype)[6:]} images (x.to({mean.dtype})) or convert the model (model.to({x.dtype}))")
    return (x - mean.to(x.dtype)) / std.to(x.dtype)


def _warn_if_not_unit(x: torch.Tensor, owner: str) -> None:
    """Warn of model inputs that are 0..255 floats or normalised with a mean and std (e.g. a share of
    :data:`~aprkit._checks.NORMALISED_SHARE` of the values or more below 0), as
    :func:`~aprkit._checks.value_range_problem` reads them: one ``aminmax`` pass, a second only when values leave
    [0, 1]. An augmentation's overshoot passes (APR-P's unclamped output leaves [-1, 2] in a few pixels, as
    the reference trains)."""
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    problem = value_range_problem(x, lo, hi)
    if problem is not None:
        share = float((x.detach() < 0).sum()) / x.numel()
        said = ("0..255 floats? divide by 255" if problem == "0..255" else
                f"{share:.0%} of them below 0: normalised with a mean and std already? pass the [0, 1] images")
        warnings.warn(f"{owner} takes float images in [0, 1] and normalises them itself, but got values from "
                      f"{lo:.4g} to {hi:.4g} ({said}); its predictions on these are not meaningful", RuntimeWarning,
                      stacklevel=4)


def init_conv_bn(model: nn.Module, *, linear_weight: bool = False) -> None:
    """The AugMix CIFAR models' initialisation, in module order: convolutions He-normal (fan-out, ReLU), batch-norm
    scale 1 and shift 0, linear biases 0; ``linear_weight=True`` also draws linear weights He-normal (fan-in), as
    ResNeXt does. Consumes the global RNG exactly as the per-model loops it replaces did."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_weight:
                nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block; afterwards every submodule gets back its own training flag (``model.train(flag)``
    would give all of them the top module's: a BatchNorm frozen in eval inside a training model would train again)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in modes:
            m.training = flag
