"""Weather corruptions: snow, frost and fog (spatter lives in ``spatter.py``).

Functions take a float batch ``(B, 3, H, W)`` in [0, 1], the published parameter of one severity
and a generator; they return an unclipped float batch (the dispatcher clamps).

- ``fog`` adds a diamond-square plasma fractal (the scripts' ``plasma_fractal``), generated for the
  whole batch at once; the map size is the preset's (32 / 64 / 256) or the next power of two that
  covers the image.
- ``snow`` draws a snow layer, zooms, thresholds and quantises it as the scripts do, then streaks it
  with ImageMagick's motion-blur kernel (see ``blur.motion_line_blur``; angle in [-135, -45)).
- ``frost`` blends a random crop of one of five frost photographs (``_frost.py``).
"""

from __future__ import annotations

import os

import torch

from ._common import clipped_zoom, mask, rgb_to_gray
from ._frost import frost_textures
from ._random import RandomSource, normal, randint, uniform
from .blur import motion_line_blur

__all__ = ["plasma_fractal", "fog", "frost", "snow"]


def plasma_fractal(batch: int, mapsize: int, wibbledecay: float, generator: RandomSource = None,
                   device: torch.device | str = "cpu", *, crop: tuple[int, int] | None = None) -> torch.Tensor:
    """Diamond-square height maps ``(B, mapsize, mapsize)`` in [0, 1] (float64), one per image; with ``crop``
    ``(h, w)`` only their top-left ``(h, w)`` corner (normalised over the whole map all the same).

    Each image's random numbers (``mapsize**2 - 1`` of them, three ``n x n`` blocks per level) come from one
    draw for the batch, split level by level (one draw call, not ~15)."""
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two >= 2, got {mapsize}")
    device = torch.device(device)
    m = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64, device=device)
    total = sum(3 * (mapsize // (1 << k)) ** 2 for k in range(1, mapsize.bit_length()))  # = mapsize**2 - 1
    noise = uniform((batch, total), -1.0, 1.0, generator, device, torch.float64)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled(a: torch.Tensor, out: torch.Tensor) -> None:  # out = a / 4 + wibble^2 * U(-1, 1), a is a temporary
        nonlocal used
        n = a.shape[1] * a.shape[2]
        r = noise[:, used:used + n].view(a.shape)
        used += n
        torch.add(a.mul_(0.25), r * (wibble * wibble), out=out)  # * 0.25 is exactly / 4, and cheaper

    while step >= 2:
        half = step // 2
        ul = m[:, 0::step, 0::step]
        sq = ul + torch.roll(ul, -1, dims=1)
        sq += torch.roll(sq, -1, dims=2)
        dr = m[:, half::step, half::step]
        wibbled(sq, dr)
        t = dr + torch.roll(dr, 1, dims=1)
        t += ul
        t += torch.roll(ul, -1, dims=2)
        wibbled(t, m[:, 0::step, half::step])
        t = dr + torch.roll(dr, 1, dims=2)
        t += ul
        t += torch.roll(ul, -1, dims=1)
        wibbled(t, m[:, half::step, 0::step])
        step //= 2
        wibble /= wibbledecay
    return _normalised(m, *(crop or (mapsize, mapsize)))


def _normalised(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(m - min) / max(m - min)`` per map ``(B, S, S)``, on the top-left ``(h, w)`` crop only (exactly the
    values of normalising the whole map: subtraction is monotone, so ``max(m - min) = max(m) - min``)."""
    low = m.amin(dim=(1, 2), keepdim=True)
    return (m[:, :h, :w] - low).div_(m.amax(dim=(1, 2), keepdim=True) - low)


def fog(x: torch.Tensor, c: tuple, generator: RandomSource = None, *, mapsize: int = 32) -> torch.Tensor:
    """``(x + c0 * plasma) * max(x) / (max(x) + c0)`` with a plasma of wibble decay ``c[1]``."""
    b, _, h, w = x.shape
    size = mapsize
    while size < max(h, w):
        size *= 2
    plasma = plasma_fractal(b, size, float(c[1]), generator, x.device, crop=(h, w))[:, None].to(x.dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    y = torch.add(x, plasma.mul_(c[0]))
    return y.mul_(max_val).div_(max_val + c[0])


def frost(x: torch.Tensor, c: tuple, generator: RandomSource = None, *, scale: float = 0.2,
          frost_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """``c0 * x + c1 * frost``: a random crop of a random frost texture (one of the first five, as in the
    scripts) resized by the preset's ``scale``."""
    b, _, h, w = x.shape
    textures = frost_textures(scale, (h, w), frost_dir)
    idx = randint(0, 5, (b,), generator, torch.device("cpu"))
    starts = uniform((b, 2), 0.0, 1.0, generator, torch.device("cpu"))
    # np.random.randint(0, size - crop): start uniform in [0, size - crop) (float32 products, as drawn)
    room = torch.tensor([[textures[k].shape[1] - h, textures[k].shape[2] - w] for k in idx.tolist()])
    corner = torch.minimum((starts * room).long(), room - 1).tolist()
    on_device = {k: textures[k].to(x.device) for k in set(idx.tolist())}
    layer = torch.empty(x.shape, dtype=textures[0].dtype, device=x.device)
    for i, (k, (r0, c0)) in enumerate(zip(idx.tolist(), corner, strict=True)):
        layer[i] = on_device[k][:, r0:r0 + h, c0:c0 + w]  # a crop is a plain window copy
    return torch.mul(x, c[0]).add_(layer.to(x.dtype).div_(255.0).mul_(c[1]))


def snow(x: torch.Tensor, c: tuple, generator: RandomSource = None) -> torch.Tensor:
    """Snow layer ``N(c0, c1)`` zoomed by ``c2``, cut below ``c3``, streaked by a motion blur of radius
    ``c4`` / sigma ``c5``; the image is whitened by ``1 - c6`` towards ``1.5 * gray + 0.5``."""
    b, _, h, w = x.shape
    layer = normal((b, 1, h, w), c[0], c[1], generator, x.device, x.dtype)
    layer = clipped_zoom(layer, float(c[2]))
    # in place on temporaries, the same operations in the same order as the scripts' expressions
    layer = layer.mul_(mask(layer, ">=", c[3])).clamp_(0, 1).mul_(255).floor_().div_(255)  # cut, then 8 bits
    angles = uniform((b,), -135.0, -45.0, generator, x.device, torch.float64)
    layer = motion_line_blur(layer, float(c[4]), float(c[5]), angles).mul_(255).add_(1e-4).floor_().div_(255)
    y = torch.mul(x, c[6])
    y += torch.maximum(x, rgb_to_gray(x).mul_(1.5).add_(0.5)).mul_(1 - c[6])
    y += layer
    return y.add_(torch.rot90(layer, 2, dims=(-2, -1)))
