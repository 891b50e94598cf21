"""The FFTs every aprkit image op runs through: :func:`rfftn` / :func:`irfftn` (real images) and :func:`fftn` /
:func:`ifftn` (full complex spectra).

They return what the ``torch.fft`` functions of the same names return (to float rounding) for the same
``fft_dims``; on the CPU they take two faster routes (the second for the real pair only):

* **RGB over (C, H, W).** torch transforms the length-3 channel axis as one more strided FFT pass over the
  whole batch, which on the CPU costs about as much as the 2-D transform itself. Here the 2-D real FFT runs
  over (H, W) and the three-point DFT over the channels is a few elementwise operations on the three channel
  planes (the inverse comes before the 2-D inverse). On one thread the forward-plus-inverse pair ran 1.5x faster than
  torch's at 256x3x32x32 and 1.9x at 64x3x224x224 (``benchmarks/bench_augment.py`` prints the ratio).
* **Batches** (half spectrum over 1 MiB; eager calls without autograd) run in chunks of about 512 KiB
  along the flattened leading dims. For a batch torch copies the whole spectrum into transposed layouts, and
  once that is out of cache the copies cost as much as the transforms (the inverse ran 2.4x faster at
  64x3x224x224), and the channel DFT's passes run on what the 2-D transform left in cache.

RGB images are transformed one by one either way, so their results do not depend on the batch size, the
chunking or the thread count (tested bit for bit; but the inverse's 2-D transform is torch's c2r, which MKL rounds
otherwise with the thread count at some sizes, e.g. odd widths up to 15 px here), and a CPU graph under
``torch.compile`` takes the RGB route too (the eager numbers). On accelerators these are the plain torch calls.
Gradients flow through every route.
"""

from __future__ import annotations

import math

import torch

from .._checks import eager_cpu
from .._tensors import needs_grad

__all__ = ["rfftn", "irfftn", "fftn", "ifftn"]

#: on the CPU, half spectra larger than this are transformed in chunks of about _CHUNK_BYTES along the leading dims
#: (cache-sized: the channel DFT's elementwise passes then run on what the 2-D transform left in cache; at 256 x
#: 3x32x32 on one thread the route's forward-plus-inverse ran 1.5x faster in chunks of 512 KiB than unchunked)
_CHUNKED_ABOVE, _CHUNK_BYTES = 1 << 20, 512 << 10


_ROUTE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)

#: the three-point DFT's twiddle parts: ``w = exp(-2 pi i / 3) = -1/2 - i c`` with ``c = sqrt(3) / 2``
_C3 = math.sqrt(3.0) / 2


def _channel_dft(t: torch.Tensor, inverse: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """The three-point DFT (``inverse``: its inverse) over dim -3 of a complex ``(..., 3, h, w)`` tensor; returns
    ``(n, 3, h * w)`` (``n`` the flattened leading dims; with autograd or under ``torch.compile`` ``t``'s shape),
    written into ``out`` when given.

    With ``s = x1 + x2`` and ``d = x1 - x2``: ``X0 = x0 + s`` and ``X1, X2 = (x0 - s / 2) -+ i c d`` (the inverse:
    the same with ``+-`` and a third of each). Elementwise adds and products by a power of two or a purely imaginary
    constant, each rounded once per component whatever the kernel (vectorised or not, any thread split), so an image's
    result does not depend on the thread count or its batch (a 3x3 complex matrix product did: BLAS splits a single
    image's product across threads, and rounds the columns at its block edges otherwise). Equal channels (a grey
    image) give exact zeros at the channel frequencies 1 and 2, as torch's own radix-3 pass does, so no rounding noise
    is left there for an amplitude swap to take the phase of. ``t`` is not written."""
    functional = needs_grad(t) or torch.compiler.is_compiling()  # out-of-place: autograd; Dynamo takes no strided
    # out= (and no reshape to (n, 3, h * w) there: Inductor's backward under dynamic shapes lost a size symbol)
    flat = t if functional else t.reshape(-1, 3, t.shape[-2] * t.shape[-1])
    x0, x1, x2 = flat.unbind(-3 if functional else 1)
    s, d = x1 + x2, x1 - x2
    if inverse:  # a third folded into the terms: x0 / 3 + s / 3, x0 / 3 - s / 6 -+ ... (no pass over the result)
        x0 = x0 * (1 / 3)
        s.mul_(1 / 3)  # (in place on a fresh sum: autograd keeps no copy of it)
    w = complex(0, _C3 / 3 if inverse else -_C3)
    if functional:  # the same operations, the same numbers; (..., 3, h, w)
        u, e = torch.add(x0, s, alpha=-0.5), d * w
        y = torch.stack([x0 + s, u + e, u - e], -3)
        return y if out is None else out.copy_(y.reshape(out.shape))
    out = torch.empty_like(flat) if out is None else out
    o0, o1, o2 = out[:, 0], out[:, 1], out[:, 2]
    torch.add(x0, s, out=o0)
    u = torch.add(x0, s, alpha=-0.5, out=s)  # x0 - s / 2: the product by -1/2 is exact, fused or not
    e = d.mul_(w)
    torch.add(u, e, out=o1)
    torch.sub(u, e, out=o2)
    return out


def _rgb_route(x: torch.Tensor, fft_dims: tuple[int, ...]) -> bool:
    """Whether the transform is over the last three dims (in order) with 3 channels, on the CPU (eager or compiled
    alike, so a compiled graph gives the eager numbers)."""
    nd = x.ndim
    return (nd >= 3 and x.shape[-3] == 3 and x.device.type == "cpu" and x.dtype in _ROUTE_DTYPES
            and tuple(d - nd if d >= 0 else d for d in fft_dims) == (-3, -2, -1))


def _chunks(n: int, nbytes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the chunks of about ``_CHUNK_BYTES`` along a leading extent ``n`` of ``nbytes`` in all, at
    least one image per torch thread each: with fewer, the FFT library splits single transforms across threads,
    which changes their rounding (seen at 299 px), so results would depend on the thread count."""
    step = max(1, torch.get_num_threads(), _CHUNK_BYTES * n // max(nbytes, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _large(numel_half: int, itemsize: int, t: torch.Tensor) -> bool:
    """Whether to run in chunks: an eager CPU call without autograd on a half spectrum over ``_CHUNKED_ABOVE`` bytes."""
    return numel_half * itemsize > _CHUNKED_ABOVE and eager_cpu(t) and not needs_grad(t)


def rfftn(x: torch.Tensor, fft_dims: tuple[int, ...]) -> torch.Tensor:
    """``torch.fft.rfftn(x, dim=fft_dims)`` for real floating ``x``; on the CPU the RGB route, chunked when large."""
    if not _rgb_route(x, fft_dims):
        return torch.fft.rfftn(x, dim=fft_dims)
    h, w = x.shape[-2:]
    lead = x.shape[:-3]
    n = math.prod(lead)
    ctype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    half = 3 * h * (w // 2 + 1)
    if not _large(n * half, 2 * x.element_size(), x):
        r = torch.fft.rfftn(x, dim=(-2, -1))
        return _channel_dft(r, False).view(r.shape)
    flat = x.reshape(n, 3, h, w)
    out = torch.empty(n, 3, h * (w // 2 + 1), dtype=ctype, device=x.device)
    for i, j in _chunks(n, n * half * 2 * x.element_size()):
        _channel_dft(torch.fft.rfftn(flat[i:j], dim=(-2, -1)), False, out=out[i:j])
    return out.view(*lead, 3, h, w // 2 + 1)


def irfftn(z: torch.Tensor, sizes: list[int], fft_dims: tuple[int, ...]) -> torch.Tensor:
    """``torch.fft.irfftn(z, s=sizes, dim=fft_dims)``; on the CPU the RGB route, and chunks for half spectra over
    1 MiB (eager, without autograd; ``fft_dims`` not containing dim 0)."""
    large = _large(z.numel(), z.element_size(), z)
    nd = z.ndim
    if z.is_complex() and _rgb_route(z, fft_dims) and sizes[0] == 3 and sizes[1] == z.shape[-2]:  # else torch
        # crops or pads (or takes a real spectrum as complex)
        h, w = sizes[1], sizes[2]
        lead, n = z.shape[:-3], math.prod(z.shape[:-3])
        flat = z.reshape(n, *z.shape[-3:])
        if not large:
            r = _channel_dft(flat, True).view(flat.shape)
            return torch.fft.irfftn(r, s=(h, w), dim=(-2, -1)).view(*lead, 3, h, w)
        out = torch.empty(n, 3, h, w, dtype=z.real.dtype, device=z.device)
        for i, j in _chunks(n, z.numel() * z.element_size()):
            r = _channel_dft(flat[i:j], True).view(j - i, *flat.shape[1:])
            torch.fft.irfftn(r, s=(h, w), dim=(-2, -1), out=out[i:j])
        return out.view(*lead, 3, h, w)
    if not large or any(d % nd == 0 for d in fft_dims):
        return torch.fft.irfftn(z, s=sizes, dim=fft_dims)
    shape = list(z.shape)
    for d, s in zip(fft_dims, sizes, strict=True):
        shape[d] = s
    out = torch.empty(shape, dtype=z.real.dtype, device=z.device)
    for i, j in _chunks(z.shape[0], z.numel() * z.element_size()):
        torch.fft.irfftn(z[i:j], s=sizes, dim=fft_dims, out=out[i:j])
    return out


def fftn(x: torch.Tensor, fft_dims: tuple[int, ...]) -> torch.Tensor:
    """``torch.fft.fftn(x, dim=fft_dims)`` (``x`` real or complex); on the CPU the RGB route."""
    if not _rgb_route(x, fft_dims):
        return torch.fft.fftn(x, dim=fft_dims)
    r = torch.fft.fftn(x, dim=(-2, -1))
    return _channel_dft(r, False).view(r.shape)


def ifftn(z: torch.Tensor, fft_dims: tuple[int, ...]) -> torch.Tensor:
    """``torch.fft.ifftn(z, dim=fft_dims)``; on the CPU the RGB route."""
    if not _rgb_route(z, fft_dims) or not z.is_complex():
        return torch.fft.ifftn(z, dim=fft_dims)
    return torch.fft.ifftn(_channel_dft(z, True).view(z.shape), dim=(-2, -1))
