"""Digital corruptions: brightness, contrast, saturate, elastic transform, pixelate, JPEG compression.

Functions take a float batch ``(B, 3, H, W)`` in [0, 1], the published parameter of one severity and
a generator; they return a float batch (the dispatcher clamps).

- ``brightness`` / ``saturate`` go through HSV exactly as scikit-image's ``rgb2hsv`` / ``hsv2rgb``
  (including its conventions for grey pixels: hue 0, so ``saturate`` with an offset tints them red).
- ``pixelate`` reproduces Pillow's ``BOX`` resampling (down to ``int(size * c)``, back up), with
  Pillow's 8-bit rounding after each pass when the input is uint8.
- ``jpeg_compression`` is a codec: each image is encoded and decoded with Pillow (libjpeg, default
  4:2:0 chroma subsampling) on the CPU, exactly as the scripts do; float input is quantised to 8 bits.
- ``elastic_transform``: random affine (``cv2.warpAffine`` with reflect-101 borders, bilinear) followed
  by a smooth displacement field (``map_coordinates(order=1, mode="reflect")``). OpenCV quantises warp
  coordinates to 1/32 pixel; here they are exact.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._common import level_images, map_index, positions, select
from ._random import RandomSource, uniform
from ._separable import gaussian_filter

__all__ = [
    "rgb_to_hsv",
    "hsv_to_rgb",
    "brightness",
    "contrast",
    "saturate",
    "pixelate",
    "pixelate_bytes",
    "jpeg_compression",
    "jpeg_bytes",
    "elastic_transform",
    "bilinear_sample",
]


# ----------------------------------------------------------------------------- colour
def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """scikit-image ``rgb2hsv`` on ``(B, 3, H, W)`` in [0, 1] -> HSV ``(B, 3, H, W)``, all in [0, 1]."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.amax(dim=1)
    delta = v - x.amin(dim=1)
    zero = delta == 0
    safe = torch.where(zero, torch.ones_like(delta), delta)
    s = torch.where(zero, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    h = torch.where(b == v, 4.0 + (r - g) / safe, torch.where(g == v, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(zero, torch.zeros_like(h), h)
    return torch.stack((h, s, v), dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """scikit-image ``hsv2rgb`` on ``(B, 3, H, W)`` -> RGB ``(B, 3, H, W)``."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    hi = torch.remainder(hi, 6).long()
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sextants = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    table = torch.stack([torch.stack(c, 0) for c in sextants], 0)
    idx = hi[None, None].expand(1, 3, *hi.shape)  # (1, 3, B, H, W)
    return table.gather(0, idx)[0].transpose(0, 1)


def brightness(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Add ``c`` to the HSV value channel (clipped to [0, 1]).

    With hue and saturation fixed every channel is proportional to V, so this equals scikit-image's
    ``hsv2rgb`` of the edited ``rgb2hsv`` (black pixels, hue 0 / saturation 0, become grey ``V'``)."""
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    lit = v > 0
    y = x * (v2 / torch.where(lit, v, torch.ones_like(v)))
    return y.add_(v2.mul_(~lit))  # black pixels (x = 0) become v2; a 0/1 factor, not a 3-channel torch.where


def saturate(x: torch.Tensor, c: tuple, generator: RandomSource = None) -> torch.Tensor:
    """HSV saturation ``s * c[0] + c[1]`` (clipped to [0, 1]).

    Closed form of scikit-image's round trip: with ``delta = max - min`` each channel is
    ``v - s * v * (v - x) / delta``; grey pixels (hue 0 in scikit-image) become ``(v, v(1-s'), v(1-s'))``.
    The expression's operations run in its order on reused buffers (one three-channel temporary)."""
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    sv = delta / torch.where(v > 0, v, torch.ones_like(v))
    sv.mul_(c[0]).add_(c[1]).clamp_(0, 1).mul_(v)  # s' * v
    colour = torch.sub(v, x).mul_(sv).div_(torch.where(delta > 0, delta, torch.ones_like(delta)))
    colour = torch.sub(v, colour, out=colour)
    # grey pixels (delta = 0, all channels v) give colour = v; scikit-image's hue 0 makes them
    # (v, v(1 - s'), v(1 - s')): only their green and blue need fixing, and they are few
    grey = positions(delta, "<=", 0)
    if grey.numel():
        h, w = x.shape[-2:]
        bi, pi = grey.div(h * w, rounding_mode="floor"), grey.remainder(h * w)
        yi, xi = pi.div(w, rounding_mode="floor"), pi.remainder(w)
        vals = v[bi, 0, yi, xi] * (1 - min(max(float(c[1]), 0.0), 1.0))
        colour[bi, 1, yi, xi] = vals
        colour[bi, 2, yi, xi] = vals
    return colour


def contrast(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Scale each channel's deviation from its spatial mean by ``c``."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


# ----------------------------------------------------------------------------- pixelate
@lru_cache(maxsize=64)
def _box_weights(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX resampling matrix ``(n_out, n_in)`` (``ImagingResample`` coefficient rule)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    wts = np.zeros((n_out, n_in))
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            u = (i - center + 0.5) / filterscale
            wts[o, i] = 1.0 if -0.5 < u <= 0.5 else 0.0
        total = wts[o].sum()
        if total:
            wts[o] /= total
    return wts


@lru_cache(maxsize=64)
def _box_taps(n_in: int, n_out: int) -> tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]:
    """``_box_weights`` as taps: per tap ``t``, the input index and the weight of every output (each output
    averages a contiguous run of inputs; missing taps of shorter runs get weight 0 on a valid index)."""
    wts = _box_weights(n_in, n_out)
    runs = [np.nonzero(row)[0] for row in wts]
    taps = []
    for t in range(max(len(r) for r in runs)):
        idx = tuple(int(r[t]) if t < len(r) else int(r[0]) for r in runs)
        weight = tuple(float(wts[o, r[t]]) if t < len(r) else 0.0 for o, r in enumerate(runs))
        taps.append((idx, weight))
    return tuple(taps)


def _box_axis(x: torch.Tensor, dim: int, n_out: int, sums: bool = False) -> torch.Tensor:
    """BOX-resample ``x`` along ``dim`` (-1 or -2) to ``n_out``: a weighted sum of a few selected slices
    (``sums``: the plain sum of each output's inputs instead of their mean)."""
    out = None
    for idx, weight in _box_taps(x.shape[dim], n_out):
        part = select(x, dim, torch.tensor(idx, device=x.device))
        if all(v == 1.0 for v in weight):  # one input per output (upsampling): a plain copy
            return part
        if not x.is_floating_point():
            raise TypeError(f"_box_axis averages float values only, got {x.dtype} "
                            f"(shrinking {x.shape[dim]} to {n_out})")
        wt = torch.tensor([float(v > 0) for v in weight] if sums else weight, dtype=x.dtype, device=x.device)
        wt = wt.view((-1, 1) if dim == -2 else (-1,))
        out = part.mul_(wt) if out is None else out.add_(part.mul_(wt))
    assert out is not None
    return out


# Pillow resamples 8-bit images in fixed point: PRECISION_BITS = 32 - 8 - 2 fractional bits, every coefficient
# rounded to that grid, the accumulator started at one half and shifted back (libImaging/Resample.c)
_PRECISION_BITS = 22


@lru_cache(maxsize=64)
def _box_fixed_coefficients(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's fixed-point BOX coefficient of every output ``(n_out,)``: ``int(0.5 + 2^22 / n)`` for an output
    that averages ``n`` inputs (all taps of one output share it)."""
    counts = (_box_weights(n_in, n_out) > 0).sum(axis=1)
    return np.floor(0.5 + (1 << _PRECISION_BITS) / counts.astype(np.float64)).astype(np.int32)


def _pillow_round(sums: torch.Tensor, dim: int, n_in: int) -> torch.Tensor:
    """Pillow's 8-bit outputs from the per-output input ``sums`` along ``dim``: ``(S * k + 2^21) >> 22`` clipped
    to 0-255, exact in int32 (``S * k < 2^31``). Ties of 2- and 4-input means round up, which ``torch.round``
    (half to even) would not; for other counts the rounding of ``k`` decides (10 inputs: down)."""
    k = torch.from_numpy(_box_fixed_coefficients(n_in, sums.shape[dim])).to(sums.device, torch.int32)
    k = k.view((-1, 1) if dim == -2 else (-1,))
    acc = sums.to(torch.int32).mul_(k).add_(1 << (_PRECISION_BITS - 1)).bitwise_right_shift_(_PRECISION_BITS)
    return acc.clamp_(0, 255).to(sums.dtype)


def _resize_box(x255: torch.Tensor, oh: int, ow: int, quantize: bool) -> torch.Tensor:
    """Two-pass (horizontal, then vertical) BOX resize of ``(B, C, H, W)`` values in 0-255.

    ``quantize``: integer inputs and outputs with Pillow's 8-bit arithmetic after each pass (``_pillow_round`` on
    the exact integer sums), so the result equals ``Image.resize(..., Image.Resampling.BOX)`` of 8-bit images."""
    h, w = x255.shape[-2:]
    if ow < w and quantize:  # along rows a dense matrix product is cheaper than column gathers; its sums of integers
        # are exact in any order, whereas fractional weights' sums would move by an ulp with the BLAS thread count
        wts = _box_weights(w, ow)
        mat = torch.from_numpy((wts > 0).astype(np.float64)).to(x255.device, x255.dtype)
        x255 = _pillow_round(x255 @ mat.t().contiguous(), -1, w)
    elif ow != w:
        x255 = _box_axis(x255, -1, ow, sums=quantize)
        if quantize:
            x255 = _pillow_round(x255, -1, w)
    if oh != h:
        x255 = _box_axis(x255, -2, oh, sums=quantize)
        if quantize:
            x255 = _pillow_round(x255, -2, h)
    return x255


def pixelate(x: torch.Tensor, c: float, generator: RandomSource = None, *,
             quantize: bool = False, source_dtype: torch.dtype | None = None) -> torch.Tensor:
    """BOX-downsample to ``int(size * c)`` and BOX-upsample back (Pillow semantics). ``quantize``: 8-bit values
    with Pillow's arithmetic; without it, float images of 8-bit levels (``ToTensor`` of 8-bit images, read with
    ``source_dtype``'s slack, :func:`~._common.level_images`) take that path too, image by image, and get the bytes
    of their uint8 originals; other float images the exact box means."""
    h, w = x.shape[-2:]

    def there_and_back(x255: torch.Tensor, quantized: bool) -> torch.Tensor:
        return _resize_box(_resize_box(x255, int(h * c), int(w * c), quantized), h, w, quantized) / 255

    if quantize:
        return there_and_back(x * 255, True)
    levels, per_image = level_images(x, source_dtype)
    if bool(per_image.all()):
        return there_and_back(levels, True)
    exact = there_and_back(x * 255, False)
    if bool(per_image.any()):  # a mixed batch: its 8-bit images as such
        rows = per_image.nonzero().flatten()
        exact[rows] = there_and_back(levels[rows], True)
    return exact


def pixelate_bytes(u8: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """``pixelate`` of uint8 images -> uint8: Pillow's two BOX resizes. On the CPU Pillow itself shrinks, about twice
    as fast as the emulation; elsewhere ``_resize_box`` emulates its 8-bit arithmetic (the same bytes). BOX
    enlarging gives every output one input with weight 1 (an exact copy in Pillow's fixed point too), so the way
    back is a gather of rows and columns (``_box_axis``), 2.5x cheaper than Pillow's enlarging pass."""
    h, w = u8.shape[-2:]
    oh, ow = int(h * c), int(w * c)
    if u8.device.type == "cpu":
        from PIL import Image

        small = _pillow_each(u8, lambda im: im.resize((ow, oh), Image.Resampling.BOX), (oh, ow))
    else:
        small = _resize_box(u8.to(torch.float32), oh, ow, True).to(torch.uint8)
    return _box_axis(_box_axis(small, -1, w), -2, h)  # enlarging: plain copies, the uint8 values as they are


def _pillow_each(u8: torch.Tensor, fn: Callable[[Any], Any], size: tuple[int, int] | None = None) -> torch.Tensor:
    """``fn`` (PIL image -> PIL image of the same mode, of ``size`` ``(H', W')``, default the input's) on every image
    of a uint8 batch ``(B, C, H, W)``, C 1 or 3, on the images' device. The channel planes go in and out as they lie
    (``Image.merge`` of ``L`` views of the planes, ``split`` of the result): no ``(H, W, C)`` transposes, about 0.15
    ms per 224-px image less than through interleaved copies (the same bytes)."""
    from PIL import Image

    src = u8.contiguous().cpu().numpy()
    h, w = src.shape[-2:]
    out = np.empty(src.shape[:2] + (size or (h, w)), dtype=np.uint8)
    for i, img in enumerate(src):
        planes = [Image.frombuffer("L", (w, h), plane, "raw", "L", 0, 1) for plane in img]
        with fn(planes[0] if len(planes) == 1 else Image.merge("RGB", planes)) as res:
            for ch, band in enumerate(res.split()):
                out[i, ch] = np.asarray(band)
    return torch.from_numpy(out).to(u8.device)


# ----------------------------------------------------------------------------- jpeg
def jpeg_compression(x: torch.Tensor, c: int, generator: RandomSource = None) -> torch.Tensor:
    """Encode each image as JPEG with quality ``c`` and decode it (Pillow, on the CPU); float input is
    quantised to 8 bits first (``jpeg_bytes`` does the round trip on uint8 images)."""
    u8 = (x.clamp(0, 1) * 255).round_().to(torch.uint8)
    return jpeg_bytes(u8, c).to(x.dtype).div_(255)


def jpeg_bytes(u8: torch.Tensor, c: int, generator: RandomSource = None) -> torch.Tensor:
    """The JPEG round trip (quality ``c``) of uint8 images ``(B, C, H, W)``, C 1 or 3 -> uint8 (Pillow)."""
    from PIL import Image

    def round_trip(im: Any) -> Any:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        return Image.open(buf)

    return _pillow_each(u8, round_trip)


# ----------------------------------------------------------------------------- elastic
def bilinear_sample(img: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample ``img`` ``(B, C, H, W)`` at float rows ``sy`` / columns ``sx`` ``(B, H', W')`` (bilinear)."""
    b, ch, h, w = img.shape
    y0f, x0f = sy.floor(), sx.floor()
    wy, wx = (sy - y0f).to(img.dtype)[:, None], (sx - x0f).to(img.dtype)[:, None]
    y0, x0 = y0f.long(), x0f.long()
    ys = (map_index(y0, h, mode), map_index(y0 + 1, h, mode))
    xs = (map_index(x0, w, mode), map_index(x0 + 1, w, mode))
    flat = img.reshape(b, ch, h * w)
    out_shape = (b, ch) + tuple(sy.shape[1:])

    def tap(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        idx = (yi * w + xi).reshape(b, 1, -1).expand(b, ch, -1)
        return flat.gather(2, idx).reshape(out_shape)

    top = tap(ys[0], xs[0]) * (1 - wx) + tap(ys[0], xs[1]) * wx
    bottom = tap(ys[1], xs[0]) * (1 - wx) + tap(ys[1], xs[1]) * wx
    return top * (1 - wy) + bottom * wy


def elastic_transform(x: torch.Tensor, c: tuple, generator: RandomSource = None) -> torch.Tensor:
    """Random affine (corner jitter ``c[2]``) then a displacement field: uniform noise smoothed by a
    Gaussian of std ``c[1]`` (truncate 3) and scaled by ``c[0]``."""
    b, _, h, w = x.shape
    alpha, sigma, jitter = (float(v) for v in c)
    cy, cx, sq = float(h // 2), float(w // 2), float(min(h, w) // 3)
    pts1 = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=torch.float64)
    pts2 = pts1 + uniform((b, 3, 2), -jitter, jitter, generator, x.device, torch.float64).cpu()
    # inverse map (destination -> source) is the affine taking pts2 to pts1
    a = torch.cat([pts2, torch.ones(b, 3, 1, dtype=torch.float64)], dim=2)  # (B, 3, 3)
    inv = torch.linalg.solve(a, pts1.expand(b, 3, 2)).to(x.device)  # (B, 3, 2): [u, v, 1] @ inv = src (x, y)
    # grid_sample with reflection about pixel centres (align_corners=True) is OpenCV's reflect-101; the affine
    # source coordinate (x, y, 1) @ inv, normalised to [-1, 1], is a column term plus a row term (float64)
    cols = torch.arange(w, device=x.device, dtype=torch.float64)
    rows = torch.arange(h, device=x.device, dtype=torch.float64)
    norm = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64, device=x.device)
    col_term = cols[None, :, None] * (inv[:, None, 0] * norm)  # (B, W, 2)
    row_term = rows[None, :, None] * (inv[:, None, 1] * norm) + (inv[:, None, 2] * norm - 1)  # (B, H, 2)
    grid = torch.empty(b, h, w, 2, dtype=x.dtype, device=x.device)
    for k in range(2):  # summed in float64, stored once; per coordinate, the broadcast runs along whole rows
        torch.add(row_term[:, :, None, k], col_term[:, None, :, k], out=grid[..., k])
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    # one filter call per field: a joint call changes the matrix-product sizes, which moves float64 results (MKL)
    dx = gaussian_filter(uniform((b, h, w), -1.0, 1.0, generator, x.device, x.dtype), sigma, "symmetric", 3.0)
    dy = gaussian_filter(uniform((b, h, w), -1.0, 1.0, generator, x.device, x.dtype), sigma, "symmetric", 3.0)
    # ... and about pixel edges (align_corners=False) is SciPy's "reflect" (half-sample symmetric):
    # ((x + alpha * dx + 0.5) * 2 / w - 1, likewise y), written into the reused grid
    grid[..., 0] = (cols.to(x.dtype) + 0.5) * (2.0 / w) - 1
    grid[..., 1] = ((rows.to(x.dtype) + 0.5) * (2.0 / h) - 1)[:, None]
    grid[..., 0].add_(dx, alpha=alpha * 2.0 / w)
    grid[..., 1].add_(dy, alpha=alpha * 2.0 / h)
    return F.grid_sample(warped, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)
