"""Separable filtering as matrix products: ``gaussian_filter`` (``scipy.ndimage.gaussian_filter``) on batches.

A 1-D correlation of an axis is a linear map, so both passes of a separable filter run as GEMMs (one pass over
the data each, at BLAS speed) instead of one multiply-add pass per tap:

- **banded tiles** (radius up to ``_DENSE_FROM``): the axis, padded per border mode, is cut into overlapping
  windows of ``tile + 2r`` samples (one row gather for the vertical pass; the horizontal pass reads strided
  windows of the row-padded planes in place), and each window times a ``(tile + 2r, tile)`` band matrix gives
  ``tile`` outputs. The products add the taps in the same order as a direct multiply-add loop, and the band's
  zeros add exact zeros, so the values equal the direct two-pass filter;
- **dense operators** (longer kernels, e.g. ``elastic_transform``'s sigma of 170 px at 224 px): the whole
  filter of an axis, borders folded in, is one ``(n, n)`` matrix, so the cost no longer grows with the radius
  (an FFT of the padded plane did: at radius 512 the padded grid is 30x the image).

Every plane is filtered on its own: a result does not depend on the values of the other planes of the batch. The
products' sizes follow the number of planes, and MKL picks float64 kernels by size, so float64 results move in the
last bit with it (seen at 17-65 px with radii >= 32; float32 was identical at every size and batch tried); ``corrupt``
therefore filters float64 images with per-image seeds one image at a time on the CPU. On CUDA the
products follow PyTorch's float32 matmul precision: the default ("highest") keeps full float32; a caller that
enables TF32 (``torch.backends.cuda.matmul.allow_tf32``) gets 10-bit-mantissa products, which move some 8-bit
values by a level. Against the per-tap loop and FFTs this replaces (one thread, CODE_VERSION 5 -> 6):
gaussian_blur 1.7x faster at 32 px, 2.2x at 64 px, 1.5x at 224 px (severity 3), glass blur 1.8x / 1.5x / 1.1x,
elastic_transform 1.5x / 1.9x / 1.1x, and elastic_transform's severity 1 at 224 px (radius 512) 27x.
"""

from __future__ import annotations

import torch

from .._tensor_cache import tensor_cache
from ._common import gaussian_kernel1d, map_index, pad_index, select

__all__ = ["gaussian_filter", "separable_filter"]

_TILE = 32  # outputs per window: the band's K dimension is tile + 2r
_DENSE_FROM = 32  # radius from which one (n, n) matrix per axis costs less than banded windows (equal at 224 px)


@tensor_cache(maxsize=64)
def _band(weights: tuple[float, ...], tile: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(tile + 2r, tile)``: column ``j`` holds the taps in rows ``j .. j + 2r``."""
    k = torch.tensor(weights, dtype=torch.float64)
    taps = k.numel()
    m = torch.zeros(tile + taps - 1, tile, dtype=torch.float64)
    for j in range(tile):
        m[j:j + taps, j] = k
    return m.to(dtype=dtype, device=device)


@tensor_cache(maxsize=64)
def _windows(n: int, r: int, tile: int, mode: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Source indices of the axis padded per ``mode`` to ``count * tile + 2r`` samples, of its ``count``
    overlapping windows (``count * (tile + 2r)``, window after window), and ``count``. Samples past
    ``n + r`` only feed outputs past ``n``, which are cropped."""
    count = -(-n // tile)
    padded = pad_index(n, r, r + count * tile - n, mode, device)
    starts = torch.arange(count, device=device)[:, None] * tile
    return padded, padded[(starts + torch.arange(tile + 2 * r, device=device)).flatten()], count


@tensor_cache(maxsize=64)
def _operator(weights: tuple[float, ...], n: int, mode: str, dtype: torch.dtype, device: torch.device
              ) -> torch.Tensor:
    """``(n, n)`` matrix of the whole 1-D correlation of an axis of length ``n``: row ``i`` sums the taps
    ``k`` at the source ``map_index(i + k - r)`` (borders folded in)."""
    r = len(weights) // 2
    i = torch.arange(n)[:, None]
    src = map_index(i + torch.arange(-r, r + 1)[None], n, mode)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.scatter_add_(1, src, torch.tensor(weights, dtype=torch.float64).expand(n, -1).contiguous())
    return m.to(dtype=dtype, device=device)


def _banded(p: torch.Tensor, weights: tuple[float, ...], r: int, mode: str) -> torch.Tensor:
    """Both passes on ``p`` ``(N, H, W)`` with banded windows."""
    n, h, w = p.shape
    t = _TILE
    band = _band(weights, t, p.dtype, p.device)
    _, rows, count_h = _windows(h, r, t, mode, p.device)
    rows_out = count_h * t  # rows past h: the tail of the last window, cropped at the end
    v = torch.matmul(band.t(), p.index_select(1, rows).view(n, count_h, t + 2 * r, w)).view(n, rows_out, w)
    padded, _, count_w = _windows(w, r, t, mode, p.device)
    vp = torch.cat([select(v, -1, padded[:r]), v, select(v, -1, padded[r + w:])], -1)
    out = torch.empty(n, h, w, dtype=p.dtype, device=p.device)
    buf = torch.empty(n, rows_out, t, dtype=p.dtype, device=p.device)
    for j in range(count_w):  # each window of columns: a strided view of vp times the band
        torch.matmul(vp[:, :, j * t:j * t + t + 2 * r], band, out=buf)
        width = min(t, w - j * t)
        out[:, :, j * t:j * t + width] = buf[:, :h, :width]
    return out


def separable_filter(x: torch.Tensor, weights: tuple[float, ...], mode: str) -> torch.Tensor:
    """Correlate the last two dims of ``x`` ``(..., H, W)`` with the same odd 1-D kernel ``weights`` along
    each (rows first), borders per ``mode`` (``_common.pad_index``); same shape."""
    r = len(weights) // 2
    shape = x.shape
    h, w = shape[-2:]
    p = x.reshape(-1, h, w)
    if r < _DENSE_FROM:
        return _banded(p, weights, r, mode).reshape(shape)
    v = torch.matmul(_operator(weights, h, mode, x.dtype, x.device), p)
    return torch.matmul(v, _operator(weights, w, mode, x.dtype, x.device).t()).reshape(shape)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "replicate", truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over the last two dims of ``x`` ``(..., H, W)`` (same shape)."""
    w, r = gaussian_kernel1d(sigma, truncate)
    if r == 0:
        return x.clone()
    return separable_filter(x, tuple(w), mode)
