"""The two codes of a hidden activation, as stateless batched ops on grids ``(B, C, h, w)``.

- ``code="phase"``: the Fourier phase (carrier) and amplitude (magnitude) of a per-channel 2-D FFT
  over the spatial grid (``dims="hw"``, default) or a 3-D FFT over ``(C, h, w)`` (``dims="chw"``).
- ``code="sign"``: the elementwise sign (carrier) and absolute value (magnitude). The sign of ``0``
  is ``+1``, so a non-negative (post-ReLU) activation has a constant sign and transplanting it is a
  no-op: ``transplant(a, b, "sign") == b`` whenever ``a >= 0`` and ``b >= 0``.

Complex grids (the block outputs of :class:`aprkit.models.PhaseCollapseNet`) are supported natively: the
elementwise carrier of ``z`` is its complex phase ``z / |z|`` (the sign of a real number is its phase
``+-1``; ``z == 0`` has phase 0, i.e. carrier ``1``) and its magnitude ``|z|``, so the ``"sign"``
transplant is ``|z_B| * z_A / |z_A|``. The ``"phase"`` code uses the full complex FFT of the map (its
spectrum is not Hermitian) and the results stay complex. Real grids give real results.

Real grids go through :mod:`aprkit.fourier` for all Fourier work; complex grids take their full FFT here
(``torch.fft.fftn``, which :mod:`aprkit.fourier`'s image functions do not accept) and recombine amplitude and
phase with :func:`aprkit.fourier.with_amplitude`.

A bin or element without phase (``z == 0``; for a transform's bins, zero to the FFT's rounding:
:func:`aprkit.fourier.spectra.no_phase_power`) takes phase 0 in every code here (``zero_bins="phase0"``, the
papers' ``angle(0) == 0``), so that the sign of 0 is ``+1`` and the ``"phase"`` code agrees with it; the image
ops and APR leave such bins at 0 instead (:data:`aprkit.fourier.mixing.ZeroBins`).
"""

from __future__ import annotations

from typing import Literal

import torch

from .. import fourier
from .._checks import check_dims

__all__ = ["Code", "check_code", "signum", "transplant", "magnitude", "with_magnitude", "dc_only"]

Code = Literal["phase", "sign"]


def check_code(code: str) -> str:
    """Validate ``code`` (``"phase"`` or ``"sign"``)."""
    if code not in ("phase", "sign"):
        raise ValueError(f"code must be 'phase' (Fourier phase vs amplitude) or 'sign' (sign vs |x|), got {code!r}")
    return code


def _check_grid(x: torch.Tensor, name: str) -> None:
    """Refuse anything but a grid ``(B, C, h, w)`` where a Fourier transform or a spatial mean reads it: tokens
    ``(B, N, D)`` were taken as one image per sample (with ``dims="chw"`` the batch axis joined the FFT, and one
    sample's result depended on the others). The sign code is elementwise and takes any shape."""
    if x.ndim != 4:
        raise ValueError(f"{name} must be a feature grid (B, C, h, w), got shape {tuple(x.shape)}; tokens (B, N, D) "
                         "go through aprkit.hidden.to_grid first")


def _check_input(code: str, x: torch.Tensor, name: str) -> None:
    """Validate ``code``, that ``x`` holds a sample (both codes alike: the phase code's transform refuses an empty
    batch) and, for the phase code (a Fourier transform over the grid), ``x``'s layout."""
    if x.numel() == 0:
        raise ValueError(f"{name} holds no values (shape {tuple(x.shape)}); expected at least one sample with "
                         "features")
    if check_code(code) == "phase":  # the sign code is elementwise: any shape (e.g. a ViT's prefix tokens)
        _check_grid(x, name)
        if x.shape[-2] < 2 or x.shape[-1] < 2:  # named here (the transform's own error named its internal argument)
            raise ValueError(f"{name} must have h >= 2 and w >= 2 for the phase code (a Fourier transform over the "
                             f"grid), got shape {tuple(x.shape)}; a 1x1 grid's phase is its sign: use code='sign'")


def signum(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, ``-1`` where ``x < 0``, NaN where ``x`` is NaN (same shape and dtype: a broken
    feature stays visible, it was -1); for complex ``x`` its phase factor ``x / |x|`` (``1`` where ``x == 0``)."""
    if x.is_complex():
        return fourier.with_amplitude(x, 1.0)
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, torch.where(x < 0, -one, x))


def _fft(x: torch.Tensor, dims: fourier.Dims) -> torch.Tensor:
    """Full complex spectrum of a complex grid over ``dims`` (the real grids go through :mod:`aprkit.fourier`)."""
    return torch.fft.fftn(x, dim=check_dims(dims))


def _ifft(z: torch.Tensor, dims: fourier.Dims) -> torch.Tensor:
    return torch.fft.ifftn(z, dim=check_dims(dims))


def transplant(donor: torch.Tensor, receiver: torch.Tensor, code: Code, dims: fourier.Dims = "hw") -> torch.Tensor:
    """The donor's carrier (phase or sign) with the receiver's magnitude; both ``(B, C, h, w)``, both real
    or both complex."""
    _check_input(code, donor, "donor")
    if donor.shape != receiver.shape:
        raise ValueError(f"donor and receiver must have the same shape, got {tuple(donor.shape)} and "
                         f"{tuple(receiver.shape)}")
    if donor.is_complex() != receiver.is_complex():
        raise ValueError(f"donor and receiver must both be real or both complex, got {donor.dtype} and "
                         f"{receiver.dtype}")
    if donor.is_complex():
        if code == "phase":
            spectrum = fourier.with_amplitude(_fft(donor, dims), fourier.spectral_magnitude(_fft(receiver, dims)),
                                              dims=check_dims(dims))
            return _ifft(spectrum, dims)
        return fourier.with_amplitude(donor, fourier.spectral_magnitude(receiver))
    if code == "phase":
        return fourier.swap_amplitude(donor, receiver, dims=dims, zero_bins="phase0")
    return signum(donor) * receiver.abs()


def magnitude(x: torch.Tensor, code: Code, dims: fourier.Dims = "hw") -> torch.Tensor:
    """The magnitude of ``x`` ``(B, C, h, w)`` under ``code``: full FFT amplitude or ``|x|``, same shape, real."""
    _check_input(code, x, "x")
    if x.is_complex():
        return fourier.spectral_magnitude(_fft(x, dims) if code == "phase" else x)
    if code == "phase":
        return fourier.amplitude_phase(x, dims=dims)[0]
    return x.abs()


def with_magnitude(x: torch.Tensor, mag: torch.Tensor, code: Code, dims: fourier.Dims = "hw") -> torch.Tensor:
    """``x``'s carrier with the magnitude ``mag`` (real, broadcastable to ``x``, e.g. a dataset mean ``(C, h, w)``; on
    any device: it is moved to ``x``'s)."""
    _check_input(code, x, "x")
    if x.is_complex():
        mag = mag.to(x.device, x.real.dtype)
        if code == "phase":
            return _ifft(fourier.with_amplitude(_fft(x, dims), mag, dims=check_dims(dims)), dims)
        return fourier.with_amplitude(x, mag)
    if code == "phase":
        return fourier.phase_only(x, magnitude=mag, dims=dims, zero_bins="phase0")
    return signum(x) * mag.to(x.device, x.dtype)


def dc_only(x: torch.Tensor) -> torch.Tensor:
    """Keep only the DC component of each channel of ``x`` ``(B, C, h, w)``: its spatial mean, broadcast over
    ``(h, w)`` (real or complex)."""
    _check_grid(x, "x")
    return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).contiguous()
