"""Amplitude edits of complex spectra, phase kept: set an amplitude (:func:`with_amplitude`), or swap / mix in
another spectrum's amplitude (:func:`mix_spectra`, with :func:`transfer_amplitude` its no-autograd path).

Spectrum in, spectrum out: the image ops of :mod:`aprkit.fourier.images`, the APR augmentations and feature-level
APR build on these.
"""

from __future__ import annotations

from typing import Literal

import torch

from .._checks import eager_cpu
from .._tensors import broadcast_shape, needs_grad
from .spectra import no_phase_magnitude, no_phase_power, spectral_magnitude, spectral_power

__all__ = ["ZeroBins", "check_zero_bins", "with_amplitude", "transfer_amplitude", "mix_spectra"]

#: what a bin without phase (``|z| == 0``: a grey image's channel frequencies 1 and 2 under ``dims="chw"``, every
#: non-DC bin of a constant image or of a dead feature channel) becomes when it is given an amplitude: ``"zero"``
#: stays 0 (the image keeps its structure; the default of the amplitude swaps and APR), ``"phase0"`` takes phase 0
#: (``angle(0) == 0``: the reference formula ``|A| * exp(i * angle(z))``, which sums the whole given amplitude of
#: such bins into one spike at the origin pixel; the sign convention of :func:`with_amplitude` and the hidden codes).
#: "Without phase" means ``|z|`` at most the dtype's eps times the norm of the transform (about 1.2e-7 of it in
#: float32, the images' dtype unless float64): below that the FFT's rounding decides the phase. A very smooth image
#: (a blurred blob) has most of its spectrum that low in float32, so it takes much less of the given amplitude than
#: in float64, where those bins keep their phase: pass float64 images where such bins matter.
ZeroBins = Literal["zero", "phase0"]


def check_zero_bins(value: object) -> ZeroBins:
    """Validate a ``zero_bins`` argument (``"zero"`` or ``"phase0"``, see :data:`ZeroBins`)."""
    if value not in ("zero", "phase0"):
        raise ValueError(f"zero_bins must be 'zero' (a bin without phase stays 0) or 'phase0' (it takes phase 0, "
                         f"angle(0) == 0), got {value!r}")
    return value


def _fused_scale(z: torch.Tensor) -> bool:
    """Whether :func:`_scale` multiplies ``z`` in one broadcast multiply: being compiled for a device other than the
    CPU (see there)."""
    return torch.compiler.is_compiling() and z.device.type != "cpu"


def _scale(z: torch.Tensor, ratio: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``z * ratio`` (``ratio`` real, broadcastable): in place on ``z`` when allowed and the shapes agree.

    Two strided multiplies of the real and imaginary parts: measured faster inside the FFT pipeline than one
    broadcast multiply of ``view_as_real`` or a complex-by-real multiply, eagerly and compiled for the CPU. Compiled
    for other devices, the one broadcast multiply: there Inductor turns each strided in-place multiply into a copy of
    the whole spectrum, where the one multiply fuses with the computation of ``ratio`` into a single pass over ``z``
    (on the CPU that fused loop vectorises over the last dim of 2 only, and is slower); in ``z``'s dtype either way."""
    if inplace and (ratio.shape == z.shape or broadcast_shape(ratio.shape, z.shape) == z.shape):
        vr = torch.view_as_real(z)
        if _fused_scale(z):
            return torch.view_as_complex(vr * ratio.to(vr.dtype).unsqueeze(-1))
        vr[..., 0].mul_(ratio)
        vr[..., 1].mul_(ratio)
        return z
    return torch.view_as_complex(torch.view_as_real(z) * ratio.unsqueeze(-1))


def _all_have_phase(values: torch.Tensor, limit: torch.Tensor | float, dims: tuple[int, ...] | None) -> bool:
    """Whether every bin of ``values`` (``|z|`` or ``|z|^2``) is above ``limit`` (its no-phase limit, per transform
    with ``dims``): one ``amin`` and a host read."""
    if dims is None:
        return bool(values.amin() > limit)
    return bool((values.amin(dims, keepdim=True) > limit).all())


def transfer_amplitude(
    z: torch.Tensor, power: torch.Tensor, source_power: torch.Tensor, lam: float | torch.Tensor = 1.0, *,
    inplace: bool = False, zero_bins: ZeroBins = "zero", dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The no-autograd path of an amplitude swap or mix: ``z`` with its phase and the amplitude
    ``(1 - lam) * |z| + lam * sqrt(source_power)``; a bin without phase (zero to the transform's rounding with
    ``dims``, its axes; ``|z| <= 1e-12`` without: see :func:`~aprkit.fourier.spectra.no_phase_power`) as
    ``zero_bins`` says.

    ``power`` is ``|z|^2`` (:func:`spectral_power`); ``source_power`` (real, broadcastable, owned by the caller:
    it is overwritten when the shapes allow) the source amplitude squared; ``lam`` a float or a tensor
    broadcastable to ``z``. Computes ``z * ((1 - lam) + lam * sqrt(source_power / power))``: no magnitude
    tensors, no complex arithmetic, one pass per step. Eager CPU calls look for bins without phase with one
    ``amin`` (a host read) and skip the masking when there are none; elsewhere (other devices, ``torch.compile``)
    they are masked with ``torch.where``. Every bin with phase gets the same formula either way, so an image's
    result does not depend on the other images of its batch. ``inplace=True`` lets it overwrite ``z`` (a spectrum
    the caller owns).
    """
    check_zero_bins(zero_bins)
    if isinstance(lam, torch.Tensor):  # a per-image lam drawn on the host (a no-op on z's device)
        lam = lam.to(z.device)
    limit = no_phase_power(power, dims)
    zero = None if eager_cpu(z) and _all_have_phase(power, limit, dims) else power <= limit
    amp0 = None
    if zero is not None and zero_bins == "phase0":  # such a bin: the amplitude with phase 0 (before source is reused)
        amp0 = torch.lerp(power.sqrt(), source_power.sqrt(), lam.to(power.dtype) if isinstance(lam, torch.Tensor)
                          else lam)
    owned = source_power.shape == power.shape or broadcast_shape(source_power.shape, power.shape) == source_power.shape
    divisor = power if zero is None else torch.where(zero, 1.0, power)
    ratio = (source_power.div_(divisor) if owned else source_power / divisor).sqrt_()
    if isinstance(lam, torch.Tensor) or lam != 1.0:  # (1 - lam) + lam * ratio, as ratio + (1 - lam) * (1 - ratio)
        one, weight = ratio.new_ones(()), 1 - (lam.to(ratio.dtype) if isinstance(lam, torch.Tensor) else lam)
        fits = not isinstance(weight, torch.Tensor) or broadcast_shape(ratio.shape, weight.shape) == ratio.shape
        ratio = ratio.lerp_(one, weight) if fits else torch.lerp(ratio, one, weight)
    if zero is not None:
        ratio = ratio.masked_fill(zero, 0.0)  # no phase: the bin stays 0 ...
    out = _scale(z, ratio, inplace)
    if amp0 is not None and zero is not None:  # ... or takes the amplitude at phase 0
        out = torch.where(zero, torch.complex(amp0.to(out.real.dtype), amp0.new_zeros((), dtype=out.real.dtype)), out)
    return out


def with_amplitude(
    z: torch.Tensor, amplitude: float | torch.Tensor, mag: torch.Tensor | None = None, *, inplace: bool = False,
    zero_bins: ZeroBins = "phase0", dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``amplitude * exp(i * angle(z))`` for a complex spectrum ``z``, computed as ``z * amplitude / |z|``.

    ``amplitude`` is real, broadcastable to ``z`` (or a float); ``mag`` may pass a precomputed ``|z|``.
    Where ``|z| == 0`` (no phase) the bin becomes ``amplitude`` with phase 0 (``zero_bins="phase0"``, the
    default here: ``angle(0) == 0``, the sign ``+1`` of 0) or stays 0 (``"zero"``; see :data:`ZeroBins`). ``dims``:
    the axes of the transform ``z`` is the spectrum of, so that what rounding left of a zero counts as zero
    (:func:`~aprkit.fourier.spectra.no_phase_power`); without them (elementwise), ``|z| <= 1e-12``.
    No trigonometry, real multiplies only; safe gradients at ``|z| == 0``. Returns a complex tensor of
    the broadcast shape. ``inplace=True`` lets it overwrite ``z`` (a spectrum the caller owns) when no
    gradient is involved. Eager CPU calls look for zero bins with one ``amin`` (a host read); on other
    devices and under ``torch.compile`` zero bins are fixed with ``torch.where`` (no host sync).
    """
    check_zero_bins(zero_bins)
    if isinstance(amplitude, torch.Tensor):  # e.g. a mean amplitude made on the host (a no-op on z's device)
        amplitude = amplitude.to(z.device)
    if mag is None:
        mag = spectral_magnitude(z)
    limit = no_phase_magnitude(mag, dims)
    if not needs_grad(z, mag, amplitude) and eager_cpu(z) and _all_have_phase(mag, limit, dims):  # the common case
        return _scale(z, amplitude / mag, inplace)
    ok = mag > limit
    ratio = torch.where(ok, amplitude / torch.where(ok, mag, 1.0), 0.0)
    out = torch.view_as_real(z) * ratio.unsqueeze(-1)
    if zero_bins == "phase0":
        out[..., 0] = torch.where(ok, out[..., 0], amplitude)
    return torch.view_as_complex(out)


def mix_spectra(
    z: torch.Tensor, source: torch.Tensor, lam: float | torch.Tensor = 1.0, *, perm: torch.Tensor | None = None,
    inplace: bool = False, zero_bins: ZeroBins = "zero", dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Spectrum with the phase of ``z`` and the amplitude ``(1 - lam) * |z| + lam * |source[perm]|``.

    ``source`` is a spectrum broadcastable to ``z`` (``z`` itself with ``perm`` for batch partners); ``perm``
    ``None`` takes it as it is; ``lam`` a float or a real tensor broadcastable to ``z`` (``1.0``: a plain
    amplitude swap). A bin where ``|z| == 0`` (no phase) stays 0 (``zero_bins="zero"``, the default) or takes the
    amplitude with phase 0 (``"phase0"``, the reference formula; see :data:`ZeroBins`); ``dims``: the transform's
    axes, as in :func:`with_amplitude`. Without autograd it runs :func:`transfer_amplitude` on squared magnitudes
    (fewest passes; one formula for every bin with phase, whatever else is in the batch), otherwise magnitudes and
    :func:`with_amplitude` (differentiable, no host sync). ``inplace=True`` lets it overwrite ``z``.
    """
    check_zero_bins(zero_bins)
    if perm is not None:  # partners drawn on the host (CUDA's index_select wants them on z's device)
        perm = perm.to(z.device)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(z.device)
    if not needs_grad(z, source, lam):
        power = spectral_power(z)
        src = power if source is z else spectral_power(source)
        src = src.index_select(0, perm) if perm is not None else src.clone() if src is power else src
        return transfer_amplitude(z, power, src, lam, inplace=inplace, zero_bins=zero_bins, dims=dims)
    mag = spectral_magnitude(z)
    src_mag = mag if source is z else spectral_magnitude(source)
    if perm is not None:
        src_mag = src_mag.index_select(0, perm)
    if isinstance(lam, float) and lam == 1.0:
        return with_amplitude(z, src_mag, mag, inplace=inplace, zero_bins=zero_bins, dims=dims)
    # a bin without phase takes a value with_amplitude fixes (0, or the amplitude at phase 0) and so no slope in z;
    # the mix's own part (1 - lam) * |z| * z / |z| = (1 - lam) * z is linear there: its slope is carried on, the
    # forward values stay those of the masked formula (the source's part keeps its gradient)
    lost = ~(mag.detach() > no_phase_magnitude(mag, dims))
    own = torch.where(lost, mag.detach(), mag)
    out = with_amplitude(z, (1 - lam) * own + lam * src_mag, mag, inplace=inplace, zero_bins=zero_bins, dims=dims)
    w = (1 - lam).to(mag.dtype) if isinstance(lam, torch.Tensor) else 1 - lam  # a float64 lam keeps complex64
    linear = z * (lost.to(mag.dtype) * w)
    return out + (linear - linear.detach())
