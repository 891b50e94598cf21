"""Batched building blocks shared by the corruption families (not public API).

Images inside this package are float tensors ``(B, C, H, W)`` in [0, 1] (``as_float``); ``finish``
clamps and casts back to the caller's dtype. Border modes follow the names used by the reference
libraries: ``"reflect101"`` (OpenCV default, ``d c b | b c d``), ``"symmetric"`` (SciPy/scikit-image
``reflect``, ``c b a | a b c``) and ``"replicate"`` (SciPy ``nearest``).
Random draws live in ``_random``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import eager_cpu
from .._tensor_cache import tensor_cache

__all__ = [
    "as_float",
    "finish",
    "mask",
    "positions",
    "pad_index",
    "pad2d",
    "select",
    "gaussian_kernel1d",
    "fft_size",
    "filter2d",
    "fft_filter2d",
    "circular_size",
    "linear_axis",
    "map_index",
    "clipped_zoom",
    "zoom_sum",
    "rgb_to_gray",
    "level_images",
]

_GRAY = (0.299, 0.587, 0.114)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 or float -> float32 (float64 stays) in [0, 1]; never aliases the input."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.dtype == torch.uint8:  # a cast, then a float division: the values of torch.div(x, 255.0), 25% faster
        return x.to(torch.float32).div_(255.0)
    return x.to(work, copy=True)


def level_images(x: torch.Tensor, source_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(levels, per_image)`` of float images ``x`` ``(B, C, H, W)`` in [0, 1]: ``levels`` the 8-bit level of every
    value (``round(255 x)``, as a float tensor), ``per_image`` whether all of an image's values are their levels
    ``k / 255`` (``ToTensor`` of 8-bit images): those images are 8-bit ones and get the results of their uint8
    originals. Decided per image: its neighbours in the batch do not matter. ``source_dtype`` float16/bfloat16 (``x``
    their float32 copy): ``k / 255`` as that dtype rounds it, to one of its steps (relative; a bfloat16 image of
    values that are no levels is read as levels only where its own steps are a level wide, above 0.25); else to a
    thousandth of a level (any division's rounding; CUDA divides by a scalar through its reciprocal)."""
    scaled = torch.mul(x.clamp(0.0, 1.0), 255)  # the range check's slack counts as the clamped value
    levels = scaled.round()
    if source_dtype in (torch.float16, torch.bfloat16):
        info = torch.finfo(source_dtype)
        close = (x - levels / 255).abs_() <= x.abs() * info.eps + info.tiny
    else:
        close = (scaled - levels).abs_() <= 1e-3
    return levels, close.flatten(1).all(1)


def finish(y: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None, *,
           consume: bool = False) -> torch.Tensor:
    """Clamp a [0, 1] float result and cast to ``dtype`` (uint8: truncated to 0-255, as the scripts that made the
    published -C sets store ``np.uint8(result)``), into ``out`` if given. ``consume``: ``y`` is a temporary of the
    caller's that may be overwritten (one buffer fewer, still in cache).

    uint8: ``floor(y * 255 + 5e-5)`` clamped to 0-255 equals ``floor(clamp(y, 0, 1) * 255 + 5e-5)`` (monotone, and
    0 and 255 map to themselves), in three passes over one temporary; the 5e-5 of a level absorbs float32 error just
    below a whole number, which the scripts' float64 does not have (measured against float64 results: 1e-4 moved
    contrast values of k - 1e-4 up a level, no margin moved defocus blur's k - 1e-6 down one). On eager CPU calls the
    whole numbers are cast by NumPy (exact; 2x faster than torch's float -> int32 -> uint8, and torch's direct
    float -> uint8 cast is slower still)."""
    if dtype == torch.uint8:
        t = y.mul_(255.0) if consume else torch.mul(y, 255.0)
        t.add_(5e-5).floor_().clamp_(0.0, 255.0)
        res = torch.empty(t.shape, dtype=dtype, device=t.device) if out is None else out
        if eager_cpu(t) and t.dtype in (torch.float32, torch.float64):
            with np.errstate(invalid="ignore"):  # NaN becomes 0, as torch's cast does, without a warning
                np.copyto(res.numpy(), t.detach().numpy(), casting="unsafe")
            return res
        return res.copy_(t)
    if out is None:
        return y.clamp(0.0, 1.0).to(dtype)
    if y.dtype == dtype:
        return torch.clamp(y, 0.0, 1.0, out=out)
    return out.copy_(y.clamp(0.0, 1.0))


_COMPARE = {">=": (torch.ge, np.greater_equal), ">": (torch.gt, np.greater), "<": (torch.lt, np.less),
            "<=": (torch.le, np.less_equal)}


def _numpy_operands(t: torch.Tensor, c: float | torch.Tensor) -> tuple[np.ndarray, Any] | None:
    """NumPy operands of ``t <op> c`` with torch's values, or ``None`` where torch must compare: eager CPU tensors of at
    least one dimension and a NumPy dtype; ``c`` a tensor of ``t``'s dtype, a number for a float ``t`` (rounded to its
    dtype as torch does), or an integer within an integer ``t``'s range (torch compares integers exactly, but converts
    ``t`` to float against a float ``c``, and NumPy would truncate a fractional one)."""
    if not (eager_cpu(t) and t.ndim and t.dtype in _NUMPY_COMPARE and not t.requires_grad):
        return None
    a = t.numpy()
    if isinstance(c, torch.Tensor):
        return (a, c.numpy()) if c.dtype == t.dtype and c.ndim and not c.requires_grad else None
    if t.is_floating_point():
        with np.errstate(over="ignore"):  # a number beyond the dtype's range becomes inf, as in torch
            return a, a.dtype.type(c)
    if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
        info = np.iinfo(a.dtype)
        return (a, a.dtype.type(c)) if info.min <= c <= info.max else None
    return None


def mask(t: torch.Tensor, op: str, c: float | torch.Tensor) -> torch.Tensor:
    """``t <op> c`` as 0/1 uint8 (``op`` one of ``>=``, ``>``, ``<``, ``<=``; ``c`` a number or a tensor that broadcasts
    to ``t``'s shape), the values of torch's comparison. Eager CPU tensors compare in NumPy where it gives torch's
    values (``_numpy_operands``): torch's comparisons to bool cost 0.43 ns per value on the CPU, NumPy's 0.07, and a
    uint8 factor multiplies 3x faster than a bool one."""
    torch_op, numpy_op = _COMPARE[op]
    operands = _numpy_operands(t, c)
    if operands is not None:
        return torch.from_numpy(numpy_op(*operands).view(np.uint8))
    return torch_op(t, c).view(torch.uint8)


_NUMPY_COMPARE = frozenset({torch.float32, torch.float64, torch.int8, torch.int16, torch.int32, torch.int64,
                            torch.uint8})


def positions(t: torch.Tensor, op: str, c: float) -> torch.Tensor:
    """Flat row-major positions (int64) of the entries of ``t`` with ``t <op> c`` (``op`` and ``c`` as in ``mask``).
    Eager CPU tensors compare in NumPy and take ``flatnonzero`` where NumPy gives torch's values (8x faster there than
    torch's comparison and ``nonzero`` on 2^19 values); elsewhere torch's."""
    torch_op, numpy_op = _COMPARE[op]
    operands = _numpy_operands(t, c)
    if operands is not None:
        return torch.from_numpy(np.flatnonzero(numpy_op(*operands)))
    return torch_op(t.reshape(-1), c).nonzero().squeeze(1)


# ----------------------------------------------------------------------------- padding and filtering
def pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices ``(before + n + after,)`` of a padded axis of length ``n`` for border ``mode``."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        i = i % period
        return torch.where(i >= n, period - 1 - i, i)
    if mode == "reflect101":
        if n == 1:
            return torch.zeros_like(i)
        period = 2 * n - 2
        i = i % period
        return torch.where(i >= n, period - i, i)
    raise ValueError(f"border mode must be 'replicate', 'symmetric' or 'reflect101', got {mode!r}")


def select(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(dim, index)``; the last dim goes through a 2-D ``gather`` (much faster on CPU)."""
    if dim in (-1, x.ndim - 1):
        flat = x.reshape(-1, x.shape[-1])
        return flat.gather(1, index.expand(flat.shape[0], -1)).reshape(*x.shape[:-1], index.numel())
    return x.index_select(dim, index)


_TORCH_PAD = {"replicate": "replicate", "reflect101": "reflect"}  # border modes F.pad has natively (much faster)


def pad2d(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dims of ``x`` by ``ph`` rows and ``pw`` columns on each side."""
    native = _TORCH_PAD.get(mode)
    fits = native != "reflect" or (ph < x.shape[-2] and pw < x.shape[-1])
    if native and x.ndim == 4 and x.dtype != torch.bool and fits:
        return F.pad(x, (pw, pw, ph, ph), mode=native)
    if ph:
        x = x.index_select(-2, pad_index(x.shape[-2], ph, ph, mode, x.device))
    if pw:
        x = select(x, -1, pad_index(x.shape[-1], pw, pw, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> tuple[list[float], int]:
    """SciPy's ``gaussian_filter1d`` weights: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return [1.0], 0
    w = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    s = sum(w)
    return [v / s for v in w], radius


@lru_cache(maxsize=256)
def fft_size(n: int) -> int:
    """Smallest ``f * 2^k >= n`` with ``f`` in 1, 3, 5, 9, 15: transform lengths the FFT backends handle fastest
    (mostly radix 2; measured on complex 2-D transforms of 224-px images: 240 < 256 < 250 < 243)."""
    best = 1 << max(n - 1, 0).bit_length()
    for f in (3, 5, 9, 15):
        m = f
        while m < n:
            m *= 2
        best = min(best, m)
    return best


@tensor_cache(maxsize=64)
def _circular_tail(n: int, r: int, m: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices ``(m - n,)`` of positions ``n .. m - 1`` of a length-``m`` circular buffer holding an axis of
    length ``n`` padded by ``r`` per ``mode``: position ``j`` holds ``j`` (``j < n + r``) or ``j - m`` (the left
    border, wrapped around); positions below ``n`` hold themselves."""
    j = torch.arange(n, m, device=device)
    return map_index(torch.where(j < n + r, j, j - m), n, mode)


def _circular_pad(planes: torch.Tensor, xp: torch.Tensor, ry: int, rx: int, mode: str) -> torch.Tensor:
    """``planes`` ``(..., H, W)`` written into the circular buffers ``xp`` ``(..., mh, mw)`` (``_circular_tail`` per
    axis; any strides, e.g. one part of a complex buffer) and returned: the image is one plain copy into the top-left
    corner (position ``j < n`` holds ``j``), and only the ``mh - H`` rows and ``mw - W`` columns after it are gathered
    (on the CPU 4x cheaper than gathering the whole buffer: the same values)."""
    h, w = planes.shape[-2:]
    mh, mw = xp.shape[-2:]
    xp[..., :h, :w] = planes
    if mh > h:
        xp[..., h:, :w] = planes.index_select(-2, _circular_tail(h, ry, mh, mode, planes.device))
    if mw > w:
        xp[..., w:] = xp[..., :w].index_select(-1, _circular_tail(w, rx, mw, mode, planes.device))
    return xp


def _kernel_spectrum(kernel: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """The multiplier of ``fft_filter2d`` for an odd ``(kh, kw)`` correlation kernel (float64): ``conj(fft2)`` of
    the kernel centred at index 0 of a circular ``size`` grid. A centro-symmetric kernel has a real spectrum,
    returned as real ``(mh, mw, 2)`` (both parts of a complex value scale alike; far cheaper to apply), any
    other as complex ``(mh, mw)``."""
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    grid = torch.zeros(size, dtype=kernel.dtype, device=kernel.device)
    rows = (torch.arange(-ry, ry + 1, device=kernel.device) % size[0])[:, None]
    cols = (torch.arange(-rx, rx + 1, device=kernel.device) % size[1])[None, :]
    grid[rows, cols] = kernel
    spectrum = torch.fft.fft2(grid).conj()
    if torch.equal(kernel, kernel.flip(0, 1)):
        return spectrum.real[..., None].expand(*size, 2).to(dtype).contiguous()
    return spectrum.to(torch.complex128 if dtype == torch.float64 else torch.complex64)


def fft_filter2d(x: torch.Tensor, ry: int, rx: int, mode: str, spectrum: torch.Tensor) -> torch.Tensor:
    """Correlate ``x`` ``(..., H, W)`` with a real kernel of radii ``(ry, rx)`` given by ``spectrum``
    (``_kernel_spectrum`` on the grid ``circular_size(H, W, ry, rx)``); borders per ``mode``.

    The padded planes are gathered straight into circular buffers of a fast FFT size (the left/top border
    wraps around to the end), so no zero-filling is needed, and two real planes of one image (channels
    ``2k`` and ``2k + 1`` of ``(..., C, H, W)``; ``C = 1`` for 3-D input) travel as the real and imaginary
    parts of one complex plane (the kernel is real, so they stay apart; they are gathered into the two parts of
    the complex buffer directly): one complex ``fft2`` and ``ifft2`` per pair, about 3x cheaper on the CPU than
    ``rfft2`` plus ``irfft2`` per plane. Planes are never paired across images, so an image's result does not depend
    on the batch it is in."""
    shape = x.shape
    h, w = shape[-2:]
    mh, mw = circular_size(h, w, ry, rx)
    c = shape[-3] if x.ndim >= 4 else 1
    planes = x.reshape(-1, c, h, w)
    n, pairs = planes.shape[0], c // 2
    out = torch.empty(planes.shape, dtype=x.dtype, device=x.device)
    if pairs:
        z = torch.empty(n, pairs, mh, mw, dtype=_COMPLEX[x.dtype], device=x.device)
        zr = torch.view_as_real(z)
        _circular_pad(planes[:, :2 * pairs:2], zr[..., 0], ry, rx, mode)
        _circular_pad(planes[:, 1:2 * pairs:2], zr[..., 1], ry, rx, mode)
        both = _apply_spectrum(torch.fft.fft2(z), spectrum)[..., :h, :w, :]
        out[:, :2 * pairs:2], out[:, 1:2 * pairs:2] = both.unbind(-1)
    if c % 2:  # the last channel of an odd count on its own (rfft2 + irfft2 cost about as much here: MKL)
        xp = _circular_pad(planes[:, -1], planes.new_empty(n, mh, mw), ry, rx, mode)
        out[:, -1] = _apply_spectrum(torch.fft.fft2(xp), spectrum)[..., :h, :w, 0]
    return out.reshape(shape)


_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128, torch.float16: torch.complex32}


def _apply_spectrum(spec: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """``ifft2(spec * spectrum)`` (``spec`` a fresh ``fft2``, scaled in place) as real ``(..., mh, mw, 2)``."""
    if spectrum.is_complex():
        spec *= spectrum
    else:
        torch.view_as_real(spec).mul_(spectrum)
    return torch.view_as_real(torch.fft.ifft2(spec))


def circular_size(h: int, w: int, ry: int, rx: int) -> tuple[int, int]:
    """The FFT grid of ``fft_filter2d``: fast sizes covering the image plus both borders per axis."""
    return fft_size(h + 2 * ry), fft_size(w + 2 * rx)


@tensor_cache(maxsize=64)
def _filter_spectrum(values: tuple[float, ...], kh: int, kw: int, size: tuple[int, int], dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    """``_kernel_spectrum`` of a ``(kh, kw)`` kernel given by its values (cached per kernel and grid)."""
    k = torch.tensor(values, dtype=torch.float64, device=device).reshape(kh, kw)
    return _kernel_spectrum(k, size, dtype)


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect101") -> torch.Tensor:
    """2-D correlation (``cv2.filter2D`` semantics) of ``x`` ``(..., H, W)`` with an odd ``(kh, kw)`` kernel."""
    kh, kw = kernel.shape
    shape = x.shape
    if kh * kw > 49:  # large kernels: FFT correlation is far cheaper
        size = circular_size(shape[-2], shape[-1], kh // 2, kw // 2)
        values = tuple(kernel.to(torch.float64).flatten().tolist())
        return fft_filter2d(x, kh // 2, kw // 2, mode, _filter_spectrum(values, kh, kw, size, x.dtype, x.device))
    xp = pad2d(x.reshape(-1, 1, shape[-2], shape[-1]), kh // 2, kw // 2, mode)
    h, w = shape[-2:]  # small kernels: shifted multiply-adds
    kl = kernel.to(x.dtype).tolist()
    out = None
    for i in range(kh):
        for j in range(kw):
            if kl[i][j] != 0.0:
                if out is None:
                    out = xp[..., i:i + h, j:j + w] * kl[i][j]
                else:
                    out.add_(xp[..., i:i + h, j:j + w], alpha=kl[i][j])
    return (out if out is not None else torch.zeros_like(x.reshape(xp.shape[0], 1, h, w))).reshape(shape)


# ----------------------------------------------------------------------------- resampling
def linear_axis(x: torch.Tensor, dim: int, coords: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at float ``coords`` (1-D); borders per ``mode``."""
    n = x.shape[dim]
    i0 = coords.floor()
    w = (coords - i0).to(x.dtype)
    i0 = i0.long()
    lo = map_index(i0, n, mode)
    hi = map_index(i0 + 1, n, mode)
    a = select(x, dim, lo)
    b = select(x, dim, hi)
    view = [1] * x.ndim
    view[dim] = -1
    return torch.lerp(a, b, w.view(view))


def map_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer indices outside ``[0, n)`` back inside for border ``mode``."""
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect101":
        period = max(2 * n - 2, 1)
        i = i % period
        return torch.where(i >= n, period - i, i)
    raise ValueError(f"unknown border mode {mode!r}")


def _zoom_coords(n: int, zoom: float, device: torch.device) -> torch.Tensor:
    """Source coordinates of the centre ``n`` outputs of ``scipy.ndimage.zoom(order=1)`` on a centre crop."""
    ch = int(math.ceil(n / zoom))
    top = (n - ch) // 2
    out = int(round(ch * zoom))
    trim = (out - n) // 2
    step = (ch - 1) / (out - 1) if out > 1 else 0.0
    j = torch.arange(trim, trim + n, device=device, dtype=torch.float64)
    return top + j * step


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The creation scripts' ``clipped_zoom``: centre crop of ``1/zoom``, bilinear zoom back to ``(H, W)``.

    Matches ``scipy.ndimage.zoom(order=1)`` (corner-aligned grid) followed by the centre trim, per axis.
    """
    h, w = x.shape[-2:]
    y = linear_axis(x, -2, _zoom_coords(h, zoom, x.device))
    return linear_axis(y, -1, _zoom_coords(w, zoom, x.device))


def zoom_sum(x: torch.Tensor, zooms: Sequence[float]) -> torch.Tensor:
    """``sum(clipped_zoom(x, z) for z in zooms)`` for ``x`` ``(B, C, H, W)``: per zoom, the row pass, one transpose and
    the column pass as a second row pass (row selection is far cheaper than gathering along the last dim); the sum
    is kept transposed. Element-wise steps in a fixed order, so the values do not depend on the thread count or
    the batch (dense interpolation matrices, used below 129 px before CODE_VERSION 10, did: a matrix product's
    summation order follows the BLAS kernel's blocking)."""
    b, c, h, w = x.shape
    out = torch.zeros(b, c, w, h, dtype=x.dtype, device=x.device)
    for f in zooms:
        y = linear_axis(x, -2, _zoom_coords(h, float(f), x.device)).transpose(-1, -2).contiguous()
        out += linear_axis(y, -2, _zoom_coords(w, float(f), x.device))
    return out.transpose(-1, -2)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``(B, 1, H, W)`` of RGB ``(B, 3, H, W)`` (OpenCV's ``COLOR_RGB2GRAY`` weights)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b
