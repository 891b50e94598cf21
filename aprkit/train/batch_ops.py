"""Batched geometric augmentation for the device input path: random crop with padding, horizontal flip.

Both work on a whole batch ``(B, C, H, W)`` (uint8 or float) on its own device with per-image random
parameters drawn from ``generator`` (which must live on the batch's device), in one gather each: no
Python loop over images and no host round trip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_image_tensor, check_probability

__all__ = ["random_crop", "random_hflip", "to_float"]


def _rand_int(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def random_crop(
    x: torch.Tensor, size: int, padding: int = 4, fill: int = 0, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad ``x`` ``(B, C, H, W)`` by ``padding`` with ``fill`` and take a random ``size`` x ``size`` crop per image.

    ``fill`` is a uint8 level (0..255) and is scaled to [0, 1] for float input. Returns ``(B, C, size, size)``
    in the input's dtype; the input is not modified.
    """
    check_image_tensor(x, "x", min_ndim=4, max_ndim=4, check_finite=False)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, _, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    if size > hp or size > wp:
        raise ValueError(f"crop size {size} is larger than the padded image {hp}x{wp}")
    if padding:
        value = float(fill) if x.dtype == torch.uint8 else fill / 255.0
        x = F.pad(x, (padding, padding, padding, padding), value=value)
    oy = _rand_int(hp - size + 1, b, generator, x.device)
    ox = _rand_int(wp - size + 1, b, generator, x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]  # (B, S, 1)
    cols = (ox[:, None] + ar)[:, None, :]  # (B, 1, S)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, p: float = 0.5, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of ``x`` ``(B, C, H, W)`` left-right with probability ``p``; returns a new tensor."""
    check_image_tensor(x, "x", min_ndim=4, max_ndim=4, check_finite=False)
    p = check_probability(p)
    gen_device = generator.device if generator is not None else x.device
    flip = (torch.rand(x.shape[0], generator=generator, device=gen_device) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def to_float(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (float input passes through); optional channels_last layout."""
    y = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if channels_last and y.ndim == 4:
        y = y.contiguous(memory_format=torch.channels_last)
    return y
