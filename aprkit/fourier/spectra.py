"""Spectra of image batches: the forward transforms, the amplitude/phase split and its inverse, and magnitudes of
complex spectra.

Built on :mod:`aprkit.fourier.fft` (the real FFTs with their CPU fast routes; the lowest layer of
:mod:`aprkit.fourier`, which imports only :mod:`aprkit._checks`).
"""

from __future__ import annotations

from typing import Literal

import torch

from .._checks import check_dims, check_image_tensor
from .._tensors import broadcast_shape, compute_dtype
from .fft import fftn, ifftn, irfftn, rfftn

__all__ = ["Dims", "spectrum", "amplitude_phase", "recombine", "spectral_magnitude", "spectral_power",
           "no_phase_power", "no_phase_magnitude"]

Dims = Literal["chw", "hw"]
#: magnitudes at or below this count as zero (their phase is undefined) where no transform is named (elementwise)
_TINY = 1e-12
#: within a transform, a bin whose magnitude is at most this many float epsilons of the transform's norm has no phase:
#: the float32 FFT of a constant channel leaves its non-DC bins at about 0.2 eps of the norm on grids that are not
#: powers of two (7, 14, 28, 224), where exact zeros come out on 8, 16, 32; a phase that rounding sets is noise. 1, not
#: more: natural 224 px images have real bins a few eps of the norm small (at 8, APR-P moved 10 % of their uint8
#: pixels; at 1 it stays within 7e-4 of the reference formula under dims="chw", exact under "hw"); 0.25 missed 3 of
#: 160 constant channels
_ROUNDING_EPS = 1.0


def no_phase_power(power: torch.Tensor, dims: tuple[int, ...] | None) -> torch.Tensor | float:
    """The ``|z|^2`` at or below which a bin of ``power`` (``|z|^2`` of a spectrum, real) has no phase: with ``dims``
    (the transform's axes) ``eps^2`` times each transform's summed power (keepdim; the half spectrum's sum is
    within a factor 2 of the norm's square times the size), so what the FFT's rounding leaves of an exact zero counts
    as zero; without, ``1e-24`` (elementwise use). Detached: a threshold carries no gradient."""
    if dims is None:
        return _TINY * _TINY
    p = power.detach()
    scale = (_ROUNDING_EPS * torch.finfo(p.dtype).eps) ** 2
    return p.sum(dims, keepdim=True).mul_(scale).clamp_min_(_TINY * _TINY)


def no_phase_magnitude(mag: torch.Tensor, dims: tuple[int, ...] | None) -> torch.Tensor | float:
    """:func:`no_phase_power` for magnitudes ``|z|``: the ``|z|`` at or below which a bin has no phase."""
    if dims is None:
        return _TINY
    m = mag.detach()
    norm = torch.linalg.vector_norm(m, dim=dims, keepdim=True)
    return norm.mul_(_ROUNDING_EPS * torch.finfo(m.dtype).eps).clamp_min_(_TINY)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(compute_dtype(x))


def spectrum(x: torch.Tensor, dims: Dims = "chw", *, real: bool = False) -> torch.Tensor:
    """Complex spectrum of ``x`` over ``dims``: full (``fftn``) or half (``rfftn``, last dim ``W//2+1``)."""
    check_image_tensor(x, "x")
    fft_dims = check_dims(dims, x, "x")
    xf = _as_float(x)
    return rfftn(xf, fft_dims) if real else fftn(xf, fft_dims)


def amplitude_phase(x: torch.Tensor, dims: Dims = "chw") -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` ``(..., C, H, W)`` into amplitude ``|F(x)|`` and phase ``angle(F(x))``, both ``(..., C, H, W)``.

    The spectrum is unshifted (DC at index 0); both outputs are real float32 (float64 for float64 input).
    """
    z = spectrum(x, dims)
    return z.abs(), z.angle()


def recombine(amplitude: torch.Tensor, phase: torch.Tensor, dims: Dims = "chw") -> torch.Tensor:
    """Real image ``Re(ifft(amplitude * exp(i * phase)))`` of shape ``(..., C, H, W)``.

    ``amplitude`` and ``phase`` must broadcast to each other. ``recombine(*amplitude_phase(x)) == x``
    to float tolerance. The result is floating point; cast it yourself if you need uint8.
    """
    for name, t in (("amplitude", amplitude), ("phase", phase)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a real floating torch.Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    try:
        shape = broadcast_shape(amplitude.shape, phase.shape)
    except RuntimeError:
        raise ValueError(
            f"amplitude {tuple(amplitude.shape)} and phase {tuple(phase.shape)} must broadcast to one shape"
        ) from None
    check_image_tensor(torch.empty(shape, device="meta"), "amplitude/phase", check_finite=False)
    fft_dims = check_dims(dims)
    dt = torch.promote_types(torch.promote_types(amplitude.dtype, phase.dtype), torch.float32)  # one precision
    z = torch.polar(amplitude.to(dt).expand(shape), phase.to(dt).expand(shape))
    return ifftn(z, fft_dims).real


def spectral_magnitude(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a complex spectrum ``z`` (any shape), real of the matching precision.

    Without autograd it uses real arithmetic on ``view_as_real`` (complex ``abs`` is slow on CPU);
    with autograd it is ``z.abs()`` (safe gradient at ``|z| == 0``).
    """
    if z.requires_grad:
        return z.abs()
    return spectral_power(z).sqrt_()


def spectral_power(z: torch.Tensor) -> torch.Tensor:
    """``|z|^2`` of a complex spectrum ``z``, real, without autograd: two strided real passes on ``view_as_real``
    (faster on the CPU than complex ``abs``, and no square root). A new tensor, free to overwrite."""
    vr = torch.view_as_real(z)
    return torch.mul(vr[..., 0], vr[..., 0]).addcmul_(vr[..., 1], vr[..., 1])


def _irfft(z: torch.Tensor, like: torch.Tensor, fft_dims: tuple[int, ...]) -> torch.Tensor:
    return irfftn(z, [like.shape[d] for d in fft_dims], fft_dims)
