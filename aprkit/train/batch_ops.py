"""Batched geometric augmentation for the device input path: random crop with padding, horizontal flip.

Both work on a whole batch ``(B, C, H, W)`` (uint8 or float) on its own device with per-image random
parameters drawn from ``generator`` (which must live on the batch's device), in one gather each: no
Python loop over images and no host round trip.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from .._checks import check_image_tensor, check_probability, describe_value
from .._tensors import keep_layout
from ..augment.draws import uniform_rows

__all__ = ["random_crop", "random_hflip", "to_float", "crop_offsets", "crop_at", "crop_range", "flip_draws",
           "flip_where"]


def _rows(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n, k)`` uniforms on ``device``, row ``i`` the same for every ``n``: :func:`~aprkit.augment.draws.uniform_rows`
    on the generator's device (without one, torch's global CPU RNG)."""
    return uniform_rows(n, k, generator).to(device)


def crop_offsets(n: int, high_y: int, high_x: int, generator: torch.Generator | None, device: torch.device,
                 out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws of :func:`random_crop`: top and left offsets ``(n,)`` in ``[0, high_y)`` and ``[0, high_x)``, image
    ``i``'s from row ``i`` of :func:`~aprkit.augment.draws.uniform_rows` (the same whatever the batch size; ``out``:
    two int64 ``(n,)`` buffers on ``device`` to write them into, the same numbers)."""
    u = _rows(n, 2, generator, device)
    oy = (u[:, 0] * high_y).long().clamp_(max=high_y - 1)
    ox = (u[:, 1] * high_x).long().clamp_(max=high_x - 1)
    if out is None:
        return oy, ox
    return out[0].copy_(oy), out[1].copy_(ox)


def crop_at(x: torch.Tensor, size: int, padding: int, fill: int, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    """The unchecked core of :func:`random_crop`: pad, then the ``size`` crop of image ``i`` at ``(oy[i], ox[i])``."""
    if padding:
        value = float(fill) if x.dtype == torch.uint8 else fill / 255.0
        x = F.pad(x, (padding, padding, padding, padding), value=value)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]  # (B, S, 1)
    cols = (ox[:, None] + ar)[:, None, :]  # (B, 1, S)
    bidx = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2).contiguous()


def crop_range(shape: torch.Size | tuple[int, ...], size: int, padding: int) -> tuple[int, int]:
    """How many top and left offsets a ``size`` crop of ``(..., H, W)`` images padded by ``padding`` has (checked)."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    hp, wp = shape[-2] + 2 * padding, shape[-1] + 2 * padding
    if size > hp or size > wp:
        raise ValueError(f"crop size {size} is larger than the padded image {hp}x{wp}")
    return hp - size + 1, wp - size + 1


def random_crop(
    x: torch.Tensor, size: int, padding: int = 4, fill: int = 0, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad ``x`` ``(B, C, H, W)`` by ``padding`` with ``fill`` and take a random ``size`` x ``size`` crop per image.

    ``fill`` is a grey level 0..255 (128: mid grey), scaled to [0, 1] for float input as ``data.pad_fill`` is.
    Image ``i``'s offsets are the same whatever the batch size (:func:`crop_offsets`). Returns ``(B, C, size, size)``
    in the input's dtype and memory format; the input is not modified.
    """
    check_image_tensor(x, "x", min_ndim=4, max_ndim=4, check_finite=False)
    for name, value, what in (("size", size, "a square crop of size x size pixels"), ("padding", padding, "pixels")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int ({what}), got {describe_value(value)}")
    if size < 1:
        raise ValueError(f"size must be >= 1 (a square crop of size x size pixels), got {size}")
    check_fill(fill, x.dtype)
    oy, ox = crop_offsets(x.shape[0], *crop_range(x.shape, size, padding), generator, x.device)
    return keep_layout(crop_at(x, size, padding, fill, oy, ox), x)


def check_fill(fill: object, dtype: torch.dtype) -> None:
    """A padding ``fill`` is one grey level 0..255 (scaled to [0, 1] for float images): a number in that range, and
    for float images not a value in (0, 1), which reads as already scaled (0.5 would pad with 0.5 / 255)."""
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"fill must be one grey level 0..255 (a number; 128 is mid grey), got {describe_value(fill)}")
    fill = float(fill)
    if not 0 <= fill <= 255:
        raise ValueError(f"fill must be a grey level in 0..255 (scaled to [0, 1] for float images), got {fill}")
    if dtype != torch.uint8 and 0 < fill < 1:
        raise ValueError(f"fill is a grey level in 0..255, scaled to [0, 1] for float images: {fill} would pad with "
                         f"{fill / 255:.4f}; pass {round(fill * 255)} for {fill} on the [0, 1] scale")


def flip_draws(n: int, generator: torch.Generator | None, device: torch.device, out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """The draws of :func:`random_hflip`: ``n`` uniforms on ``device``, image ``i``'s from row ``i`` of
    :func:`~aprkit.augment.draws.uniform_rows` (it flips where ``u[i] < p``; ``out``: a float32 ``(n,)`` buffer on
    ``device`` to write them into, the same numbers)."""
    u = _rows(n, 1, generator, device)[:, 0].float()
    return u if out is None else out.copy_(u)


def flip_where(x: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
    """The unchecked core of :func:`random_hflip`: image ``i`` flipped left-right where ``u[i] < p``."""
    return torch.where((u < p)[:, None, None, None], x.flip(-1), x)


def random_hflip(x: torch.Tensor, p: float = 0.5, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of ``x`` ``(B, C, H, W)`` left-right with probability ``p``; returns a new tensor."""
    check_image_tensor(x, "x", min_ndim=4, max_ndim=4, check_finite=False)
    p = check_probability(p)
    return flip_where(x, flip_draws(x.shape[0], generator, x.device), p)


def to_float(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (float input passes through); optional channels_last layout. Other
    integer tensors are refused: their scale is not known (an int32 image of 0..255 came back as floats up to 255)."""
    if not x.is_floating_point() and x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255) or floating point (0..1), got {x.dtype}; convert, e.g. "
                        "x.to(torch.uint8) for 8-bit values")
    y = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if channels_last and y.ndim == 4:
        y = y.contiguous(memory_format=torch.channels_last)
    return y
