"""Input validation shared by every aprkit module.

Each check raises a ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong shape, range or
content) whose message names the argument and what was expected. Nothing here is public API.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckedProbability",
    "check_pil_mode",
    "check_chw_layout",
    "check_once",
    "check_seed",
    "batch_size_of",
    "dataset_len",
    "describe_value",
    "FLOAT_DTYPES",
    "IMAGE_DTYPES",
    "check_image_tensor",
    "check_labels",
    "check_probability",
    "check_dims",
    "check_finite_spectrum",
    "eager_cpu",
    "check_value_range",
    "value_range_problem",
    "outside_level",
    "warning_level",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_RANGE_SLACK = 1e-3  # rounding noise tolerated around [0, 1] by ``unit_range`` (0..255 floats are far outside)
#: float images with a value above this are taken for 0..255 values where [0, 1] images and another augmentation's
#: overshoot are expected: APR-P's unclamped recombination reached 2.64 on CIFAR-10 images (0.46 % of them left
#: [-1, 2]) and 5.24 on a one-pixel image; 0..255 images hold values far above it
LEVELS_ABOVE = 20.0
#: the share of values outside [-1, 2] from which float images are no [0, 1] images with another augmentation's
#: overshoot: of APR-P's recombined CIFAR-10 test images (all 10,000, each alone) 0.4 % had any there, at most 0.98 %
#: of their values (0.5 % refused five of them alone, a batch of two none); images normalised with ImageNet's mean
#: and std 22 % (median), and 91 % of those with fewer than a third of their values below 0 had 1.5 % or more
#: (``benchmarks/float_range_rule.py``: all 10,000 APR-P images read as [0, 1], 96 % of the normalised refused alone)
OUTSIDE_SHARE = 0.015
#: the share of negative values at which float images may be normalised with a mean and std (to [-1, 1], which lies
#: inside the overshoot window: a warning): APR-P's recombined CIFAR-10 images had 0.8 % of their values below 0
#: (median; one image in 10,000 35 %, warned of alone), normalised images 48 % (median; some none)
NORMALISED_SHARE = 1 / 3
IMAGE_DTYPES = FLOAT_DTYPES + (torch.uint8,)


def check_image_tensor(
    x: object,
    name: str = "images",
    *,
    min_ndim: int = 3,
    max_ndim: int | None = None,
    check_finite: bool = True,
    channels: Sequence[int] | None = None,
    unit_range: bool = False,
    overshoot: bool = False,
    allow_empty: bool = False,
) -> torch.Tensor:
    """Validate an image tensor of shape ``(..., C, H, W)`` and return it unchanged.

    Raises ``TypeError`` for a non-tensor or an unsupported dtype and ``ValueError`` for too few
    dimensions, an empty batch, ``H`` or ``W`` below 2, a wrong channel count or non-finite values.
    ``unit_range=True`` (at API boundaries that clamp to [0, 1]): float values outside [0, 1] (e.g. 0..255
    floats) raise ``ValueError`` too; it costs one ``aminmax`` pass, which also serves the finiteness check.
    ``overshoot=True`` (augmentations that clamp their views, as the hosts' own transforms take such input): another
    augmentation's overshoot (bicubic resampling, APR-P's recombination) passes; 0..255 floats and normalised images
    are refused, or warned of, as :func:`check_value_range` reads them. ``allow_empty=True`` (batch transforms,
    which hand an empty batch back as their hosts' own transforms do): a batch of no images passes (its image shape
    is still checked). While ``torch.compile`` traces, only the static checks run (a value check is data-dependent
    control flow).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., C, H, W), got {type(x).__name__}")
    if x.dtype not in IMAGE_DTYPES:
        raise TypeError(
            f"{name} must have dtype uint8 or a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}"
        )
    if x.ndim < min_ndim or (max_ndim is not None and x.ndim > max_ndim):
        want = (f"{min_ndim}" if max_ndim == min_ndim
                else f">= {min_ndim}" if max_ndim is None else f"{min_ndim}..{max_ndim}")
        layout = "(C, H, W)" if max_ndim == 3 else "(B, C, H, W)" if min_ndim == 4 else "(..., C, H, W)"
        raise ValueError(f"{name} must have {want} dimensions {layout}, got shape {tuple(x.shape)}")
    empty_batch = allow_empty and x.ndim >= 4 and 0 in x.shape[:-3]  # no image in (..., C, H, W)
    if x.numel() == 0 and not empty_batch:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected at least one image")
    h, w = x.shape[-2], x.shape[-1]
    if h < 2 or w < 2:
        raise ValueError(f"{name} must have H >= 2 and W >= 2 in (..., C, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[-3] not in channels:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, channels))} channels in (..., C, H, W), got shape {tuple(x.shape)}"
        )
    if empty_batch or torch.compiler.is_compiling() or x.is_meta:  # value checks would break a compiled graph
        return x  # (fullgraph: fail); a meta tensor has no values (shape checks only)
    if unit_range and x.dtype != torch.uint8:
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))  # NaN and inf propagate
        if check_finite and not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or infinite values; expected finite pixel values")
        if overshoot:
            check_value_range(x, lo, hi, name)
        elif lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
            problem = value_range_problem(x, lo, hi)
            why = ("divide 0..255 values by 255" if problem == "0..255" or (problem is None and hi > 2) else
                   "normalised with a mean and std? normalise after this step" if problem is not None or lo < -1
                   else "a little outside: another augmentation's overshoot? clamp it first, x.clamp(0, 1)")
            raise ValueError(f"{name} is float with values in [{lo:.4g}, {hi:.4g}]; expected float images in [0, 1] "
                             f"({why}) or uint8 in [0, 255]")
        return x
    if check_finite and x.dtype != torch.uint8 and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite pixel values")
    return x


def value_range_problem(x: torch.Tensor, lo: float, hi: float) -> str | None:
    """How float images ``x`` with extremes ``lo``, ``hi`` miss the [0, 1] range where [0, 1] images and another
    augmentation's overshoot are expected (the one reading shared by the augmentations and the models' inputs):

    * ``"0..255"``: a value above :data:`LEVELS_ABOVE`, or a share of :data:`OUTSIDE_SHARE` of the values above 2
      and none below 0 (another scale);
    * ``"normalised"``: a share of :data:`OUTSIDE_SHARE` outside [-1, 2] with negative values (a mean and std such as
      ImageNet's);
    * ``"maybe normalised"``: a share of :data:`NORMALISED_SHARE` or more below 0 and no value above 1 (to [-1, 1],
      inside the overshoot window; APR-P's overshoot of dark images, MNIST-like, also has a third below 0, but a batch
      of it goes above 1 too);
    * ``None``: [0, 1] images, or an overshoot (APR-P's recombination leaves [-1, 2] in a few values).

    One ``aminmax``-sized pass more only when ``lo`` < 0 or ``hi`` > 2."""
    if hi > LEVELS_ABOVE:
        return "0..255"
    d = x.detach()
    if (lo < -1 or hi > 2) and float(((d < -1) | (d > 2)).sum()) / d.numel() >= OUTSIDE_SHARE:
        return "0..255" if lo >= -_RANGE_SLACK else "normalised"
    if lo < -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK and float((d < 0).sum()) / d.numel() >= NORMALISED_SHARE:
        return "maybe normalised"
    return None


def check_value_range(x: torch.Tensor, lo: float, hi: float, name: str = "images", clamped: str = "") -> None:
    """Refuse float images that :func:`value_range_problem` reads as 0..255 values or as normalised with a mean and
    std where they are clamped to [0, 1]: they would come out white, or lose their negative part; images that may be
    normalised to [-1, 1] (mean = std = 0.5) are warned of. Another augmentation's overshoot passes. ``clamped``:
    how the caller clamps, for the messages."""
    problem = value_range_problem(x, lo, hi)
    where = f"; {clamped}" if clamped else ""
    if problem == "0..255":
        raise ValueError(f"{name} is float with values up to {hi:.4g}{where}: 0..255 floats? expected float images "
                         "in [0, 1] (divide 0..255 values by 255) or uint8 in [0, 255]")
    if problem is None:
        return
    share = float((x.detach() < 0).sum()) / x.numel()
    if problem == "normalised":
        raise ValueError(f"{name} is float with values from {lo:.4g} to {hi:.4g}, {share:.0%} of them below 0{where}: "
                         "normalised with a mean and std? pass images in [0, 1] and normalise after this step")
    warnings.warn(f"{name} is float with {share:.0%} of its values below 0 (down to {lo:.3g}): normalised with a "
                  "mean and std (e.g. 0.5 and 0.5, to [-1, 1])? Its views are clamped to [0, 1], which cuts the "
                  "negative values off: normalise after this step. (Another augmentation's overshoot leaves few "
                  "values below 0.)", RuntimeWarning, stacklevel=outside_level())


#: the packages whose frames a warning of a transform skips: aprkit's and its hosts' (torch's module calls, a v2 or
#: kornia wrapper, an albumentations pipeline)
_INNER_PACKAGES = ("aprkit", "torch", "torchvision", "kornia", "albumentations")


def outside_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside aprkit and its hosts (and ``contextlib``'s
    ``with`` machinery): the line that called the transform or the evaluation (in a DataLoader worker, where every
    frame is theirs, the outermost one)."""
    inner = tuple(str(Path(f).parent) + os.sep for name in _INNER_PACKAGES
                  if (f := getattr(sys.modules.get(name), "__file__", None)) is not None)
    return warning_level(lambda filename: filename.startswith(inner) or filename == contextlib.__file__, depth=2)


def warning_level(skip: Callable[[str], bool], depth: int = 1) -> int:
    """The ``stacklevel`` for ``warnings.warn`` in the function ``depth`` frames above this call (1: its caller) that
    points at the first frame, from there outwards, whose file ``skip`` does not take (the outermost frame when it
    takes them all)."""
    frame, level = sys._getframe(depth), 1
    while frame.f_back is not None and skip(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def eager_cpu(t: torch.Tensor) -> bool:
    """Whether a host-side branch on ``t``'s values is free: ``t`` is on the CPU and nothing is being compiled.

    Value checks and data-dependent shortcuts run only then; on accelerators they would be a host sync and
    under ``torch.compile`` a graph break (shape and dtype checks still run at trace time)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def check_not_0_255(x: torch.Tensor, name: str = "images") -> None:
    """:func:`check_value_range` for APR-P's ``clamp=True`` (results clamped to [0, 1]): one ``aminmax`` pass, on
    eager CPU calls only (elsewhere a host sync); NaN and infinities are left to the finiteness checks (they are no
    sign of a value range)."""
    if x.is_floating_point() and eager_cpu(x) and x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if math.isfinite(lo) and math.isfinite(hi):
            check_value_range(x, lo, hi, name, "results are clamped to [0, 1] (clamp=True)")


def check_hwc_layout(arr: Any, name: str = "image") -> None:
    """Refuse a NumPy array ``(C, H, W)`` given where ``(H, W, C)`` is expected (the mirror of
    :func:`check_chw_layout`): first axis 1 or 3 long, last axis not, the would-be width and channel axes over 4."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3) and min(arr.shape[1:]) > 4:
        raise ValueError(f"{name} of shape {tuple(arr.shape)} looks like channels-first (C, H, W); NumPy images are "
                         "(H, W, C), e.g. arr.transpose(1, 2, 0)")


def check_finite_spectrum(z: torch.Tensor, dtype: torch.dtype, name: str = "images") -> None:
    """Raise if the images whose half spectrum is ``z`` held NaN or inf (``dtype``: the images' dtype).

    NaN/inf anywhere in an image makes its DC term non-finite: an O(batch) check on ``z[..., 0, 0]``
    instead of a pass over every pixel. One host read; skipped for uint8 images and under ``torch.compile``.
    """
    if (dtype != torch.uint8 and not torch.compiler.is_compiling() and not z.is_meta
            and not bool(torch.isfinite(z[..., 0, 0]).all())):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite pixel values")


def check_labels(labels: object, batch_size: int, name: str = "labels") -> torch.Tensor:
    """Validate a label tensor whose first dimension matches ``batch_size``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim == 0 or labels.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have one entry per image: expected first dimension {batch_size}, "
            f"got shape {tuple(labels.shape)}"
        )
    return labels


def check_integer_labels(labels: Any, name: str = "labels") -> None:
    """``labels`` (a tensor or NumPy array) hold class indices: integers, or floats of integral value (``TypeError``
    for fractional or non-finite values, which a cast to int64 would truncate silently)."""
    if getattr(getattr(labels, "flags", None), "writeable", True) is False:  # a read-only NumPy array (a memory
        labels = labels.copy()  # map of -C labels): torch warns about a view of it, and this check only reads
    try:
        t = torch.as_tensor(labels) if not isinstance(labels, torch.Tensor) else labels
    except (TypeError, ValueError, RuntimeError):  # strings, objects
        raise TypeError(f"{name} must be integer class indices, got {describe_value(labels)}") from None
    if t.is_complex():
        raise TypeError(f"{name} must be integer class indices, got {t.dtype}")
    if t.is_floating_point() and t.numel():
        bad = ~torch.isfinite(t) | (t != t.round())
        if bool(bad.any()):
            raise TypeError(f"{name} must be integer class indices, got {t.dtype} values such as "
                            f"{t.flatten()[bad.flatten()][0].item()!r}")


def check_param_keys(params: object, keys: Sequence[str], source: str) -> None:
    """``params`` is a mapping holding every key of ``keys`` (``ValueError`` naming the missing ones and ``source``,
    where such a dict comes from)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict as returned by {source}, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"params lack {missing}; expected the dict from {source}")


def check_probability(p: float, name: str = "p") -> float:
    """Validate a probability in [0, 1]: a real number or a 0-dim tensor/array (not a bool or a string)."""
    value: Any = p.item() if getattr(p, "ndim", None) == 0 and hasattr(p, "item") else p
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {p!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p!r}")
    return value


class CheckedProbability:
    """Mixin (before ``nn.Module`` in the bases) that checks every value set on the attribute ``p`` with
    :func:`check_probability` (``aug.p = 60`` raises, as the constructor does). ``p`` stays a plain instance attribute:
    ``torch.compile`` reads it as one (a data descriptor sent torch 2.11's Dynamo into endless recursion), and
    instances pickled before the check existed load as they were."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "p":
            value = check_probability(value, "p")
        super().__setattr__(name, value)


def check_pil_mode(image: Any, who: str) -> None:
    """Refuse a PIL image whose mode is not ``RGB`` or ``L`` (RGBA, P, LA, CMYK, I;16, ...), which a transform would
    otherwise give back in another mode only when it is drawn (a batch of such images would not stack)."""
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"{who} takes PIL images of mode 'RGB' or 'L', got {image.mode!r}; convert it first "
                         "(image.convert('RGB'), as torchvision's ImageFolder loader does)")


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` >= 1 (Python or NumPy integers; not bools, floats or strings), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_nonnegative_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` >= 0 (a count that may be zero, e.g. a batch size), as :func:`check_positive_int`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


#: seeds of evaluate, the -C writers' item keys and the CLI: 0..2**63 - 1 (train.config checks train.seed against
#: the same range without importing torch)
SEED_LIMIT = 2**63


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an ``int`` in ``0..2**63 - 1`` (Python or NumPy integers, a 0-dim tensor); ``TypeError`` for
    other types, ``ValueError`` outside the range."""
    seed = seed.item() if getattr(seed, "ndim", None) == 0 and hasattr(seed, "item") else seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer in 0..2**63 - 1, got {seed!r}")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer in 0..2**63 - 1, got {seed!r}")
    return int(seed)


def check_once(values: Sequence[Any], what: str, why: str) -> None:
    """Refuse ``values`` holding a value twice: ``what`` they are, ``why`` a repeat would be wrong."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} {list(values)} repeat a value ({why}); expected each once")


def batch_size_of(batch_shape: Any) -> int:
    """The batch size of ``generate_parameters``' argument: a batch shape ``(B, C, H, W)`` (kornia's convention, a
    ``torch.Size`` or tuple) or the batch size itself; ``ValueError`` for anything else."""
    if isinstance(batch_shape, numbers.Integral) and not isinstance(batch_shape, bool):
        n = int(batch_shape)
    elif isinstance(batch_shape, Sequence) and len(batch_shape) and isinstance(batch_shape[0], numbers.Integral):
        n = int(batch_shape[0])
    else:
        n = -1
    if n < 0:
        raise ValueError(f"batch_shape must describe a batch (B, C, H, W) or be its size B >= 0, got {batch_shape!r}")
    return n


def labels_agree(trained: Any, named: Any) -> bool:
    """Whether data naming its classes ``named`` labels them as data naming ``trained`` did: label i is the same
    class for every label the data uses (a leading part of the classes, e.g. a folder holding the first few, is
    fine). ``True`` when either side names no classes (nothing to compare)."""
    if not trained or not named:
        return True
    names = [str(c) for c in named]
    return names == [str(c) for c in trained][:len(names)]


def check_dims(dims: str, image: torch.Tensor | None = None, name: str = "images") -> tuple[int, ...]:
    """Map ``"chw"`` (3-D FFT over C, H, W) or ``"hw"`` (per-channel 2-D FFT) to tensor dims. With ``image`` and
    ``"hw"``, a channels-last image is refused (:func:`check_chw_layout`: its 2-D FFT would run over (W, C); the 3-D
    FFT of ``"chw"`` gives the same image either way)."""
    if dims == "chw":
        return (-3, -2, -1)
    if dims == "hw":
        if image is not None:
            check_chw_layout(image, name)
        return (-2, -1)
    raise ValueError(f"dims must be 'chw' (3-D FFT over C,H,W) or 'hw' (per-channel 2-D FFT), got {dims!r}")


def describe_value(x: object) -> str:
    """``"<dtype> tensor of shape (...)"`` for a tensor, else the type's name: the "got ..." of an error message."""
    return f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def dataset_len(dataset: Any) -> int:
    """``len(dataset)``; ``TypeError`` naming what was expected for a dataset without a length."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"the dataset must be map-style with a length (__len__ and __getitem__), "
                        f"got {type(dataset).__name__} without __len__")
    return len(dataset)


def check_chw_layout(x: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Refuse a tensor ``(..., H, W, C)`` given where ``(..., C, H, W)`` is expected: last axis 1 or 3 long while the
    channel axis is not and the would-be channel and height axes are over 4 long (only an image 3 pixels wide with
    more than 4 channels would be a false alarm). Returns ``x``."""
    if x.ndim >= 3 and x.shape[-1] in (1, 3) and x.shape[-3] not in (1, 3) and min(x.shape[-3], x.shape[-2]) > 4:
        raise ValueError(f"{name} of shape {tuple(x.shape)} looks like channels-last (..., H, W, C); pass "
                         "(..., C, H, W), e.g. x.permute(2, 0, 1) for one image, x.permute(0, 3, 1, 2) for a batch")
    return x
