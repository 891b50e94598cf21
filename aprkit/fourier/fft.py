"""The FFTs every aprkit image op runs through: :func:`rfftn` / :func:`irfftn` (real images) and :func:`fftn` /
:func:`ifftn` (full complex spectra).

They return what the ``torch.fft`` functions of the same names return (to float rounding) for the same
``fft_dims``; on the CPU they take two faster routes (the second for the real pair only):

* **RGB over (C, H, W).** torch transforms the length-3 channel axis as one more strided FFT pass over the
  whole batch, which on the CPU costs about as much as the 2-D transform itself. Here the 2-D real FFT runs
  over (H, W) and the three-point DFT over the channels is a 3x3 complex matrix product on one thread (the
  inverse product comes before the 2-D inverse). On one thread the forward-plus-inverse pair ran 1.8-2.0x faster
  than torch's at 256x3x32x32 and 64x3x224x224 (``benchmarks/bench_augment.py`` prints the ratio).
* **Large batches** (half spectrum over 8 MiB; eager calls without autograd) run in chunks of about 2 MiB
  along the flattened leading dims. For a batch torch copies the whole spectrum into transposed layouts, and
  once that is out of cache the copies cost as much as the transforms (the inverse ran 2.4x faster at
  64x3x224x224).

RGB images are transformed one by one either way, so their results do not depend on the batch size, the
chunking or the thread count (tested bit for bit; the inverse's 2-D transform is torch's c2r, which MKL rounds
otherwise with the thread count at some sizes and CPUs (widths 3 .. 15 px here, 32 px on an AVX-512 EPYC): images
up to 32 px wide, CIFAR's, are inverted on one thread (eager calls), where it costs little), and a CPU graph under
``torch.compile`` takes the RGB route too (the eager numbers on one thread: a graph cannot switch its matrix product
to one thread). On accelerators these are the plain torch calls.
Gradients flow through every route.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from .._checks import eager_cpu
from .._tensors import needs_grad

__all__ = ["rfftn", "irfftn", "fftn", "ifftn"]

#: on the CPU, half spectra larger than this are transformed in chunks of about _CHUNK_BYTES along the leading dims
_CHUNKED_ABOVE, _CHUNK_BYTES = 8 << 20, 2 << 20


def _dft3_matrix(dtype: torch.dtype, inverse: bool) -> torch.Tensor:
    """The three-point DFT matrix (``exp(-2 pi i j k / 3)``; the inverse: conjugate over 3) in complex ``dtype``."""
    jk = torch.outer(torch.arange(3, dtype=torch.float64), torch.arange(3, dtype=torch.float64))
    m = torch.polar(torch.ones(3, 3, dtype=torch.float64), (2 if inverse else -2) * math.pi / 3 * jk)
    return (m / 3 if inverse else m).to(dtype)


#: the CPU route's constants, per (complex dtype, inverse): built once here (a compiled graph takes them as constants)
_DFT3 = {(dt, inv): _dft3_matrix(dt, inv) for dt in (torch.complex64, torch.complex128) for inv in (False, True)}


_ROUTE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _dft3_diff_matrix(dtype: torch.dtype) -> torch.Tensor:
    """The forward DFT over ``(x_0, x_1 - x_0, x_2 - x_0)``: ``X_0 = 3 x_0 + d_1 + d_2``, ``X_k = w^k d_1 + w^2k d_2``
    for ``k = 1, 2`` (each row of the DFT matrix but the first sums to 0)."""
    m = _DFT3[dtype, False].clone()
    m[0] = torch.tensor([3.0, 1.0, 1.0], dtype=dtype)
    m[1:, 0] = 0
    return m


_DFT3_DIFF = {dt: _dft3_diff_matrix(dt) for dt in (torch.complex64, torch.complex128)}


def _channel_dft(t: torch.Tensor, inverse: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """The three-point DFT (``inverse``: its inverse) over dim -3 of a complex ``(..., 3, h, w)`` tensor, as one matrix
    product on one thread (:func:`_one_thread`); returns ``(n, 3, h * w)`` (``n`` the flattened leading dims), written
    into ``out`` when given.

    The forward transform multiplies ``(x_0, x_1 - x_0, x_2 - x_0)`` (the differences written into ``t``, which the
    caller owns, when no gradient is involved): equal channels (a grey image) then give exact zeros at the channel
    frequencies 1 and 2, as torch's own radix-3 pass does. The plain product left rounding noise there, whose phase
    the amplitude swaps took, so a stimulus depended on float rounding (float32 against float64, CPU against CUDA)."""
    flat = t.reshape(-1, 3, t.shape[-2] * t.shape[-1])
    if inverse:
        m = _DFT3[t.dtype, True]
    else:
        m = _DFT3_DIFF[t.dtype]
        if needs_grad(flat):
            flat = torch.cat([flat[:, :1], flat[:, 1:] - flat[:, :1]], 1)
        else:
            flat[:, 1:] -= flat[:, :1]
    with contextlib.nullcontext() if torch.compiler.is_compiling() else _one_thread():  # (no switch in a graph)
        return torch.matmul(m, flat) if out is None else torch.matmul(m, flat, out=out)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """An eager region on one torch thread (a no-op on one thread; not for ``torch.compile``, which cannot trace the
    switch). MKL splits a product over one image's columns (or over fewer images than threads) across threads and
    rounds the columns at its block edges otherwise, so an image alone under several threads differed from the same
    image in its batch (3.6e-7 at 224 px, a uint8 level in APR-S; fuzz tester). On one thread every image's product
    is the same whatever its batch or the thread count. The channel DFT is a few percent of the route (the 2-D
    transforms keep every thread); elementwise arithmetic instead, thread-safe by construction, made the route 1.3-1.6x
    slower on one thread (20 passes over the planes against the product's one). The switch is torch's: a Python thread
    started while another is inside it starts with one torch thread (its speed, not these numbers)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


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


#: the widest image whose inverse runs on one CPU thread: MKL's c2r rounded otherwise with the thread count at odd
#: widths 3 .. 15 here (a uint8 level in APR-P; core reviewer) and at 32 px on an AVX-512 EPYC; at 256x3x32x32 the
#: inverse took 7 ms on one thread, 30 ms on two (2 shared cores)
_C2R_ONE_THREAD_W = 32


def irfftn(z: torch.Tensor, sizes: list[int], fft_dims: tuple[int, ...]) -> torch.Tensor:
    """``torch.fft.irfftn(z, s=sizes, dim=fft_dims)``; on the CPU the RGB route, and chunks for half spectra over
    8 MiB (eager, without autograd; ``fft_dims`` not containing dim 0); images up to 32 px wide on one thread."""
    if sizes[-1] <= _C2R_ONE_THREAD_W and z.device.type == "cpu" and not torch.compiler.is_compiling():
        with _one_thread():
            return _irfftn(z, sizes, fft_dims)
    return _irfftn(z, sizes, fft_dims)


def _irfftn(z: torch.Tensor, sizes: list[int], fft_dims: tuple[int, ...]) -> torch.Tensor:
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
