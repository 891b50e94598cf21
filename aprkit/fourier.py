"""Stateless, batched, differentiable Fourier amplitude/phase operations.

Every function takes images of shape ``(..., C, H, W)`` (any leading batch shape), in uint8 or a
floating dtype, on any device, and returns the same shape and dtype (uint8 results are rounded and
clamped to [0, 255], never wrapped around). Computation runs in float32 (float64 for float64 input);
gradients flow through every floating path.

``dims="chw"`` is a 3-D FFT over (C, H, W), as in the reference APR code (Chen et al., ICCV 2021);
``dims="hw"`` is a per-channel 2-D FFT over (H, W).

The ops that produce real images from real images (swap, mix, low-frequency swap, phase-only,
amplitude-only) use real FFTs (``rfftn``/``irfftn``): the recombined spectrum of real inputs is
Hermitian, so the half spectrum is exact and about half the work. ``amplitude_phase`` and
``recombine`` expose the full spectrum so users can edit and visualise it freely.
"""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import check_dims, check_finite_spectrum, check_image_tensor, compute_dtype, eager_cpu, restore_dtype

__all__ = [
    "Dims",
    "amplitude_phase",
    "recombine",
    "swap_amplitude",
    "mix_amplitude",
    "low_frequency_swap",
    "low_frequency_mask",
    "phase_only",
    "amplitude_only",
    "spectrum",
    "spectral_magnitude",
    "with_amplitude",
]

Dims = Literal["chw", "hw"]
#: magnitudes at or below this count as zero (their phase is undefined); shared with augment.functional
_TINY = 1e-12


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(compute_dtype(x))


def spectrum(x: torch.Tensor, dims: Dims = "chw", *, real: bool = False) -> torch.Tensor:
    """Complex spectrum of ``x`` over ``dims``: full (``fftn``) or half (``rfftn``, last dim ``W//2+1``)."""
    check_image_tensor(x, "x")
    fft_dims = check_dims(dims)
    xf = _as_float(x)
    return torch.fft.rfftn(xf, dim=fft_dims) if real else torch.fft.fftn(xf, dim=fft_dims)


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
        shape = torch.broadcast_shapes(amplitude.shape, phase.shape)
    except RuntimeError:
        raise ValueError(
            f"amplitude {tuple(amplitude.shape)} and phase {tuple(phase.shape)} must broadcast to one shape"
        ) from None
    check_image_tensor(torch.empty(shape, device="meta"), "amplitude/phase", check_finite=False)
    fft_dims = check_dims(dims)
    z = torch.polar(amplitude.to(torch.promote_types(amplitude.dtype, torch.float32)).expand(shape),
                    phase.to(torch.promote_types(phase.dtype, torch.float32)).expand(shape))
    return torch.fft.ifftn(z, dim=fft_dims).real


# ---------------------------------------------------------------------------------------------
# real-FFT fast paths


def spectral_magnitude(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a complex spectrum ``z`` (any shape), real of the matching precision.

    Without autograd it uses real arithmetic on ``view_as_real`` (complex ``abs`` is slow on CPU);
    with autograd it is ``z.abs()`` (safe gradient at ``|z| == 0``).
    """
    if z.requires_grad:
        return z.abs()
    vr = torch.view_as_real(z)
    return torch.addcmul(vr[..., 0].square(), vr[..., 1], vr[..., 1]).sqrt_()


def with_amplitude(
    z: torch.Tensor, amplitude: float | torch.Tensor, mag: torch.Tensor | None = None, *, inplace: bool = False
) -> torch.Tensor:
    """``amplitude * exp(i * angle(z))`` for a complex spectrum ``z``, computed as ``z * amplitude / |z|``.

    ``amplitude`` is real, broadcastable to ``z`` (or a float); ``mag`` may pass a precomputed ``|z|``.
    Where ``|z| == 0`` the phase is taken as 0 (``angle(0) == 0``), so the bin becomes ``amplitude``.
    No trigonometry, real multiplies only; safe gradients at ``|z| == 0``. Returns a complex tensor of
    the broadcast shape. ``inplace=True`` lets it overwrite ``z`` (a spectrum the caller owns) when no
    gradient is involved. Eager CPU calls look for zero bins with one ``amin`` (a host read); on other
    devices and under ``torch.compile`` zero bins are fixed with ``torch.where`` (no host sync).
    """
    if mag is None:
        mag = spectral_magnitude(z)
    grad = torch.is_grad_enabled() and (z.requires_grad or mag.requires_grad
                                        or (isinstance(amplitude, torch.Tensor) and amplitude.requires_grad))
    if not grad and eager_cpu(z) and bool(mag.amin() > _TINY):  # common case: no zero bins to fix
        ratio = amplitude / mag
        if inplace and torch.broadcast_shapes(ratio.shape, z.shape) == z.shape:
            vr = torch.view_as_real(z)
            vr[..., 0].mul_(ratio)
            vr[..., 1].mul_(ratio)
            return z
        return torch.view_as_complex(torch.view_as_real(z) * ratio.unsqueeze(-1))
    ok = mag > _TINY
    ratio = torch.where(ok, amplitude / torch.where(ok, mag, 1.0), 0.0)
    out = torch.view_as_real(z) * ratio.unsqueeze(-1)
    out[..., 0] = torch.where(ok, out[..., 0], amplitude)
    return torch.view_as_complex(out)


def _irfft(z: torch.Tensor, like: torch.Tensor, fft_dims: tuple[int, ...]) -> torch.Tensor:
    sizes = [like.shape[d] for d in fft_dims]
    return torch.fft.irfftn(z, s=sizes, dim=fft_dims)


def _check_pair(x: torch.Tensor, y: torch.Tensor, xname: str, yname: str) -> None:
    """Static checks of a pair of image batches (no pass over the values: finiteness is checked on the spectra)."""
    check_image_tensor(x, xname, check_finite=False)
    check_image_tensor(y, yname, check_finite=False)
    if x.shape[-3:] != y.shape[-3:]:
        raise ValueError(
            f"{xname} and {yname} must have the same (C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"{xname} and {yname} must be on the same device, got {x.device} and {y.device}")
    try:
        torch.broadcast_shapes(x.shape[:-3], y.shape[:-3])
    except RuntimeError:
        raise ValueError(
            f"{xname} and {yname} must have broadcastable leading batch shapes, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        ) from None


def _pair_spectra(x: torch.Tensor, y: torch.Tensor, fft_dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Half spectra of ``x`` and ``y`` (their finiteness checked on the DC terms)."""
    zx = torch.fft.rfftn(_as_float(x), dim=fft_dims)
    zy = torch.fft.rfftn(_as_float(y), dim=fft_dims)
    check_finite_spectrum(zx, x.dtype, "x")
    check_finite_spectrum(zy, y.dtype, "y")
    return zx, zy


def _out_dtype(x: torch.Tensor, y: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype == y.dtype else torch.promote_types(_as_float(x).dtype, _as_float(y).dtype)


def swap_amplitude(phase_source: torch.Tensor, amplitude_source: torch.Tensor, dims: Dims = "chw") -> torch.Tensor:
    """Image with the phase of ``phase_source`` and the amplitude of ``amplitude_source``.

    Both ``(..., C, H, W)``; leading shapes broadcast. Returns the dtype of ``phase_source`` when both
    dtypes agree (uint8 rounded and clamped), otherwise the promoted floating dtype.
    """
    _check_pair(phase_source, amplitude_source, "phase_source", "amplitude_source")
    fft_dims = check_dims(dims)
    zp = torch.fft.rfftn(_as_float(phase_source), dim=fft_dims)
    za = torch.fft.rfftn(_as_float(amplitude_source), dim=fft_dims)
    check_finite_spectrum(zp, phase_source.dtype, "phase_source")
    check_finite_spectrum(za, amplitude_source.dtype, "amplitude_source")
    out = _irfft(with_amplitude(zp, spectral_magnitude(za), inplace=True), phase_source, fft_dims)
    return restore_dtype(out, _out_dtype(phase_source, amplitude_source))


def swap_amplitude_spectra(zp: torch.Tensor, za: torch.Tensor) -> torch.Tensor:
    """Half spectrum with the phase of ``zp`` and the amplitude of ``za`` (internal building block)."""
    return with_amplitude(zp, spectral_magnitude(za))


def mix_amplitude(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor = 0.5, dims: Dims = "chw"
) -> torch.Tensor:
    """FACT-style amplitude mix: amplitude ``(1 - lam) * |X| + lam * |Y|`` with the phase of ``x``.

    ``lam`` is a float in [0, 1] or a tensor broadcastable to the leading batch shape (one value per
    image, e.g. shape ``(B,)``). ``lam=0`` returns ``x``; ``lam=1`` equals ``swap_amplitude(x, y)``.
    """
    _check_pair(x, y, "x", "y")
    fft_dims = check_dims(dims)
    lam_t: torch.Tensor | float
    if isinstance(lam, torch.Tensor):
        if not lam.is_floating_point():
            lam = lam.float()
        lead = torch.broadcast_shapes(x.shape[:-3], y.shape[:-3])
        try:
            torch.broadcast_shapes(lam.shape, lead)
        except RuntimeError:
            raise ValueError(
                f"lam tensor of shape {tuple(lam.shape)} must broadcast to the leading batch shape {tuple(lead)} "
                "(one value per image)"
            ) from None
        if lam.numel() and not bool(((lam >= 0) & (lam <= 1)).all()):  # also rejects NaN
            raise ValueError("lam must lie in [0, 1] (finite), got values outside or NaN")
        lam_t = lam.to(x.device).reshape(*lam.shape, *([1] * 3))
    else:
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
        lam_t = float(lam)
    zx, zy = _pair_spectra(x, y, fft_dims)
    mx = spectral_magnitude(zx)
    amp = (1 - lam_t) * mx + lam_t * spectral_magnitude(zy)
    out = _irfft(with_amplitude(zx, amp, mx, inplace=True), x, fft_dims)
    return restore_dtype(out, _out_dtype(x, y))


def low_frequency_mask(
    shape: tuple[int, ...], beta: float, dims: Dims = "chw", *, device: torch.device | str | None = None,
    real: bool = True,
) -> torch.Tensor:
    """Boolean mask over the (half, if ``real``) spectrum of an image of ``shape`` ``(..., C, H, W)``.

    True on the centred low-frequency square of half-width ``b = floor(beta * min(H, W))``: every
    frequency with ``|k_h| <= b`` and ``|k_w| <= b`` (FDA convention; all channel frequencies for
    ``dims="chw"``). Returned with shape ``(1, H, W or W//2+1)`` for broadcasting.
    """
    check_dims(dims)
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    h, w = shape[-2], shape[-1]
    b = int(float(beta) * min(h, w))
    fh = torch.fft.fftfreq(h, d=1.0 / h, device=device).abs()
    freq = torch.fft.rfftfreq if real else torch.fft.fftfreq
    fw = freq(w, d=1.0 / w, device=device).abs()
    return ((fh[:, None] <= b) & (fw[None, :] <= b)).unsqueeze(0)


def low_frequency_swap(x: torch.Tensor, y: torch.Tensor, beta: float = 0.01, dims: Dims = "chw") -> torch.Tensor:
    """FDA-style swap: ``x`` takes the amplitude of ``y`` inside the centred low-frequency square.

    The square has half-width ``floor(beta * min(H, W))`` (Yang & Soatto, CVPR 2020); ``beta=0`` swaps
    only the DC term. Phase and high-frequency amplitude stay those of ``x``.
    """
    _check_pair(x, y, "x", "y")
    fft_dims = check_dims(dims)
    mask = low_frequency_mask(x.shape, beta, dims, device=x.device)
    zx, zy = _pair_spectra(x, y, fft_dims)
    mx = spectral_magnitude(zx)
    amp = torch.where(mask, spectral_magnitude(zy), mx)
    out = _irfft(with_amplitude(zx, amp, mx, inplace=True), x, fft_dims)
    return restore_dtype(out, _out_dtype(x, y))


def phase_only(
    x: torch.Tensor, magnitude: Literal["unit", "mean"] | torch.Tensor = "mean", dims: Dims = "chw"
) -> torch.Tensor:
    """Oppenheim-Lim phase-only reconstruction of ``x`` ``(..., C, H, W)``.

    ``magnitude="unit"`` sets every amplitude to 1 (values are then tiny: rescale for display);
    ``"mean"`` sets every amplitude to the image's own mean amplitude over ``dims`` (keeps the energy
    scale); a tensor gives an explicit amplitude spectrum (full-size, broadcastable to ``x``), e.g.
    a dataset-mean amplitude from ``amplitude_phase``.
    """
    check_image_tensor(x, "x")
    fft_dims = check_dims(dims)
    xf = _as_float(x)
    amp: torch.Tensor | float
    if isinstance(magnitude, torch.Tensor):
        z = torch.fft.fftn(xf, dim=fft_dims)
        try:
            amp = magnitude.to(z.real.dtype).expand_as(z.real)
        except RuntimeError:
            raise ValueError(
                f"magnitude of shape {tuple(magnitude.shape)} does not broadcast to {tuple(x.shape)}"
            ) from None
        out = torch.fft.ifftn(with_amplitude(z, amp), dim=fft_dims).real
        return restore_dtype(out, x.dtype)
    z = torch.fft.rfftn(xf, dim=fft_dims)
    if magnitude == "unit":
        amp = 1.0
    elif magnitude == "mean":
        amp = spectral_magnitude(torch.fft.fftn(xf, dim=fft_dims)).mean(dim=fft_dims, keepdim=True)
    else:
        raise ValueError(f"magnitude must be 'unit', 'mean' or a tensor, got {magnitude!r}")
    out = _irfft(with_amplitude(z, amp), x, fft_dims)
    return restore_dtype(out, x.dtype)


def amplitude_only(x: torch.Tensor, dims: Dims = "chw") -> torch.Tensor:
    """Amplitude-only reconstruction ``Re(ifft(|F(x)|))`` (zero phase) of ``x`` ``(..., C, H, W)``.

    The result is centred on pixel (0, 0) (apply ``torch.fft.fftshift`` over H, W to view it centred).
    """
    check_image_tensor(x, "x")
    fft_dims = check_dims(dims)
    z = torch.fft.rfftn(_as_float(x), dim=fft_dims)
    out = _irfft(z.abs().to(z.dtype), x, fft_dims)
    return restore_dtype(out, x.dtype)
