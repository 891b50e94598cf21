"""Image-in, image-out Fourier ops: amplitude swap and mix between image batches, the low-frequency (FDA) swap
and its mask, phase-only and amplitude-only reconstructions.

Real images go through real FFTs: the recombined spectrum of real inputs is Hermitian, so the half spectrum
is exact and about half the work. Results come back in the input's dtype (uint8 rounded and clamped) and memory
format (a channels_last batch stays channels_last).
"""

from __future__ import annotations

import numbers
from typing import Literal

import torch

from .._checks import check_dims, check_finite_spectrum, check_image_tensor, check_probability
from .._tensors import broadcast_shape, keep_layout, restore_dtype
from .fft import fftn, ifftn, rfftn
from .mixing import ZeroBins, mix_spectra, with_amplitude
from .spectra import Dims, _as_float, _irfft, spectral_magnitude

__all__ = [
    "swap_amplitude",
    "mix_amplitude",
    "low_frequency_mask",
    "low_frequency_swap",
    "phase_only",
    "amplitude_only",
]


def _check_pair(x: torch.Tensor, y: torch.Tensor, xname: str, yname: str) -> None:
    """Static checks of a pair of image batches (no pass over the values: finiteness is checked on the spectra)."""
    check_image_tensor(x, xname, check_finite=False, allow_empty=True)
    check_image_tensor(y, yname, check_finite=False, allow_empty=True)
    if x.shape[-3:] != y.shape[-3:]:
        raise ValueError(
            f"{xname} and {yname} must have the same (C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"{xname} and {yname} must be on the same device, got {x.device} and {y.device}")
    try:
        broadcast_shape(x.shape[:-3], y.shape[:-3])
    except RuntimeError:
        raise ValueError(
            f"{xname} and {yname} must have broadcastable leading batch shapes, "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        ) from None


def _empty_pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """The (empty) result of a pair op whose broadcast batch holds no image, else ``None``: an empty batch comes back
    empty, as from ``apr_pair`` and the hosts' transforms."""
    shape = (*broadcast_shape(x.shape[:-3], y.shape[:-3]), *x.shape[-3:])
    return x.new_empty(shape, dtype=_out_dtype(x, y)) if 0 in shape[:-3] else None


def _check_same_scale(x: torch.Tensor, y: torch.Tensor, xname: str = "x", yname: str = "y") -> None:
    """Mixing two images' values needs one scale: both uint8 (0-255) or both floating (0-1)."""
    if (x.dtype == torch.uint8) != (y.dtype == torch.uint8):
        raise ValueError(f"{xname} and {yname} must both be uint8 (0-255) or both floating point (0-1) to be mixed, "
                         f"got {x.dtype} and {y.dtype}; convert one first (e.g. {yname}.float() / 255)")


def _pair_spectra(x: torch.Tensor, y: torch.Tensor, fft_dims: tuple[int, ...],
                  names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Half spectra of ``x`` and ``y`` (their finiteness checked on the DC terms)."""
    zx = rfftn(_as_float(x), fft_dims)
    zy = rfftn(_as_float(y), fft_dims)
    check_finite_spectrum(zx, x.dtype, names[0])
    check_finite_spectrum(zy, y.dtype, names[1])
    return zx, zy


def _out_dtype(x: torch.Tensor, y: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype == y.dtype else torch.promote_types(_as_float(x).dtype, _as_float(y).dtype)


def swap_amplitude(phase_source: torch.Tensor, amplitude_source: torch.Tensor, dims: Dims = "chw", *,
                   zero_bins: ZeroBins = "zero") -> torch.Tensor:
    """Image with the phase of ``phase_source`` and the amplitude of ``amplitude_source``.

    Both ``(..., C, H, W)``, on one scale (both uint8 0-255 or both floating 0-1); leading shapes broadcast. Returns
    the dtype of ``phase_source`` when both dtypes agree (uint8 rounded and clamped), otherwise the promoted
    floating dtype. A bin where ``phase_source`` has no amplitude, hence no phase (a grey image's channel
    frequencies 1 and 2 under ``dims="chw"``), stays 0 (``zero_bins="zero"``); ``"phase0"`` gives it phase 0 as
    the reference formula ``|A| * exp(i * angle(P))`` does, which puts that amplitude into a spike at pixel (0, 0)
    (:data:`aprkit.fourier.mixing.ZeroBins`, which also says what "no amplitude" means in float32: at most eps times
    the spectrum's norm, which a very smooth image reaches in most bins). The same holds for the other amplitude ops
    here.
    """
    _check_pair(phase_source, amplitude_source, "phase_source", "amplitude_source")
    _check_same_scale(phase_source, amplitude_source, "phase_source", "amplitude_source")
    fft_dims = check_dims(dims, phase_source, "phase_source")
    if (empty := _empty_pair(phase_source, amplitude_source)) is not None:
        return empty
    zp, za = _pair_spectra(phase_source, amplitude_source, fft_dims, ("phase_source", "amplitude_source"))
    out = _irfft(mix_spectra(zp, za, inplace=True, zero_bins=zero_bins, dims=fft_dims),
                 phase_source, fft_dims)
    return keep_layout(restore_dtype(out, _out_dtype(phase_source, amplitude_source)), phase_source)


def mix_amplitude(
    x: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor = 0.5, dims: Dims = "hw", *,
    zero_bins: ZeroBins = "zero",
) -> torch.Tensor:
    """FACT-style amplitude mix: amplitude ``(1 - lam) * |X| + lam * |Y|`` with the phase of ``x``.

    ``lam`` is a float in [0, 1] or a tensor broadcastable to the leading batch shape (one value per
    image, e.g. shape ``(B,)``). ``lam=0`` returns ``x``; ``lam=1`` equals ``swap_amplitude(x, y, dims)`` given
    the same ``dims`` (the defaults differ: ``"hw"`` here, APR's ``"chw"`` there).
    The default ``dims="hw"`` transforms each channel on its own, as FACT (Xu et al., CVPR 2021,
    ``colorful_spectrum_mix``) does; ``dims="chw"`` mixes the 3-D spectrum over (C, H, W) (APR's transform),
    which gives different numbers (earlier versions defaulted to ``"chw"``: pass it to keep their numbers). Bins of
    ``x`` without amplitude stay 0 (``zero_bins``, as in :func:`swap_amplitude`; FACT's code gives them phase 0:
    ``zero_bins="phase0"``).
    """
    _check_pair(x, y, "x", "y")
    _check_same_scale(x, y)
    fft_dims = check_dims(dims, x, "x")
    lam_t: torch.Tensor | float
    if not isinstance(lam, (torch.Tensor, numbers.Real)) and hasattr(lam, "__array__"):  # a NumPy array of them
        lam = torch.as_tensor(lam)
    if isinstance(lam, torch.Tensor):
        if not lam.is_floating_point():
            lam = lam.float()
        lead = tuple(broadcast_shape(x.shape[:-3], y.shape[:-3]))
        try:
            fits = tuple(broadcast_shape(lam.shape, lead)) == lead  # to the batch shape, not a larger one
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"lam tensor of shape {tuple(lam.shape)} must broadcast to the leading batch shape {lead} "
                "(one value per image)"
            )
        in_range = torch.compiler.is_compiling() or bool(((lam >= 0) & (lam <= 1)).all())  # NaN is not
        if lam.numel() and not in_range:
            raise ValueError("lam must lie in [0, 1] (finite), got values outside or NaN")
        lam_t = lam.to(x.device).reshape(*lam.shape, *([1] * 3))
    else:
        lam_t = check_probability(lam, "lam")
    if (empty := _empty_pair(x, y)) is not None:
        return empty
    zx, zy = _pair_spectra(x, y, fft_dims)
    out = _irfft(mix_spectra(zx, zy, lam_t, inplace=True, zero_bins=zero_bins, dims=fft_dims),
                 x, fft_dims)
    return keep_layout(restore_dtype(out, _out_dtype(x, y)), x)


def _low_band(n: int, b: int) -> list[int]:
    """Indices ``k`` of an ``n``-point DFT whose frequency ``min(k, n - k)`` is at most ``b`` (the centred low band)."""
    return [k for k in range(n) if min(k, n - k) <= b]


def _half_width(shape: tuple[int, ...], beta: float) -> int:
    return int(check_probability(beta, "beta") * min(shape[-2], shape[-1]))


def low_frequency_mask(
    shape: tuple[int, ...], beta: float, dims: Dims = "hw", *, device: torch.device | str | None = None,
    real: bool = True,
) -> torch.Tensor:
    """Boolean mask over the (half, if ``real``) spectrum of an image of ``shape`` ``(..., C, H, W)``.

    True on the centred low-frequency square of half-width ``b = floor(beta * min(H, W))``: every
    frequency with ``|k_h| <= b`` and ``|k_w| <= b`` (FDA convention): of every channel for ``dims="hw"``,
    at every channel frequency for ``dims="chw"`` (the same mask either way). Returned with shape
    ``(1, H, W or W//2+1)`` for broadcasting.
    """
    check_dims(dims)
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape) or \
            min(shape[-2:]) < 2:
        raise ValueError(f"shape must be an image shape (..., H, W) of ints with H, W >= 2 (e.g. x.shape), got {shape}")
    b = _half_width(shape, beta)
    h, w = shape[-2], shape[-1]
    rows, cols = torch.zeros(h, dtype=torch.bool), torch.zeros(w // 2 + 1 if real else w, dtype=torch.bool)
    rows[_low_band(h, b)] = True
    if real:
        cols[: min(b, w // 2) + 1] = True
    else:
        cols[_low_band(w, b)] = True
    return (rows[:, None] & cols[None, :]).unsqueeze(0).to(device)


def low_frequency_swap(x: torch.Tensor, y: torch.Tensor, beta: float = 0.01, dims: Dims = "hw", *,
                       zero_bins: ZeroBins = "zero") -> torch.Tensor:
    """FDA-style swap: ``x`` takes the amplitude of ``y`` inside the centred low-frequency square.

    The square has half-width ``floor(beta * min(H, W))`` (Yang & Soatto, CVPR 2020; the True region of
    :func:`low_frequency_mask`); ``beta=0`` swaps only the DC term. Phase and high-frequency amplitude stay
    those of ``x``: only the bins of the square are read from ``y`` and rewritten (a small fraction of the
    spectrum for the usual ``beta``), so the cost is about that of the three FFTs. The default ``dims="hw"``
    transforms each channel on its own and equals FDA's ``FDA_source_to_target_np`` (to float rounding; with
    ``zero_bins="phase0"`` also at bins of ``x`` without amplitude, which the default leaves at 0);
    ``dims="chw"`` swaps the square at every channel frequency of the 3-D spectrum over (C, H, W), which mixes
    amplitude across channels and gives different numbers (earlier versions defaulted to ``"chw"``: pass it to
    keep their numbers).
    """
    _check_pair(x, y, "x", "y")
    _check_same_scale(x, y)
    fft_dims = check_dims(dims, x, "x")
    b = _half_width(x.shape, beta)
    if (empty := _empty_pair(x, y)) is not None:
        return empty
    zx, zy = _pair_spectra(x, y, fft_dims)
    lead = broadcast_shape(zx.shape[:-3], zy.shape[:-3])
    if zx.shape[:-3] != lead:  # y has more leading dims: x's spectrum is repeated for each
        zx = zx.expand(*lead, *zx.shape[-3:]).clone()
    rows = torch.tensor(_low_band(x.shape[-2], b), device=zx.device)
    band = zx[..., : min(b, x.shape[-1] // 2) + 1]  # a view: the band's columns, every row
    swapped = mix_spectra(band.index_select(-2, rows), zy[..., : band.shape[-1]].index_select(-2, rows), inplace=True,
                          zero_bins=zero_bins, dims=fft_dims)
    band.index_copy_(-2, rows, swapped)
    out = _irfft(zx, x, fft_dims)
    return keep_layout(restore_dtype(out, _out_dtype(x, y)), x)


def phase_only(
    x: torch.Tensor, magnitude: Literal["unit", "mean"] | torch.Tensor = "mean", dims: Dims = "chw", *,
    zero_bins: ZeroBins = "zero",
) -> torch.Tensor:
    """Oppenheim-Lim phase-only reconstruction of ``x`` ``(..., C, H, W)``.

    ``magnitude="unit"`` sets every amplitude to 1 (values are then tiny, about ``1 / sqrt(N)`` for ``N``
    transformed values: rescale for display); it needs a floating ``x`` (a uint8 result would round to 0
    everywhere: ``ValueError``). ``"mean"`` sets every amplitude to the image's own mean amplitude over ``dims``
    (keeps the energy scale); a tensor gives an explicit amplitude spectrum (full-size, broadcastable to
    ``x``), e.g. a dataset-mean amplitude from ``amplitude_phase``. Returns ``x``'s dtype, as every op here.
    Bins of ``x`` without amplitude stay 0 (``zero_bins``, as in :func:`swap_amplitude`).
    """
    check_image_tensor(x, "x", allow_empty=True)
    if x.dtype == torch.uint8 and isinstance(magnitude, str) and magnitude == "unit":
        raise ValueError("phase_only(magnitude='unit') needs a floating image: its values are about 1 / sqrt(N) "
                         "and would round to 0 in uint8; pass x.float() / 255, or magnitude='mean'")
    fft_dims = check_dims(dims, x, "x")
    if not isinstance(magnitude, (str, torch.Tensor)) and hasattr(magnitude, "__array__"):  # a NumPy array of them
        magnitude = torch.as_tensor(magnitude)
    if isinstance(magnitude, torch.Tensor) and (magnitude.is_complex() or not bool(
            ((magnitude >= 0) & (magnitude < float("inf"))).all())):  # an inf amplitude gave NaN images
        got = ("a complex tensor" if magnitude.is_complex() else "negative values" if bool((magnitude < 0).any())
               else "infinite values" if bool(magnitude.isinf().any()) else "NaN values")
        raise ValueError("magnitude must be a real amplitude spectrum, every value finite and >= 0 (e.g. "
                         f"amplitude_phase(x)[0]), got {got}")
    if isinstance(magnitude, str) and magnitude not in ("unit", "mean"):
        raise ValueError(f"magnitude must be 'unit', 'mean' or a tensor, got {magnitude!r}")
    if x.numel() == 0:  # an empty batch comes back as it is (a new tensor), as from the pair ops
        return x.clone()
    xf = _as_float(x)
    amp: torch.Tensor | float
    if isinstance(magnitude, torch.Tensor):
        z = fftn(xf, fft_dims)
        try:
            amp = magnitude.to(z.device, z.real.dtype).expand_as(z.real)  # a mean amplitude made on the host too
        except RuntimeError:
            raise ValueError(
                f"magnitude of shape {tuple(magnitude.shape)} does not broadcast to {tuple(x.shape)}"
            ) from None
        out = ifftn(with_amplitude(z, amp, zero_bins=zero_bins, dims=fft_dims), fft_dims).real
        return keep_layout(restore_dtype(out, x.dtype), x)
    z = rfftn(xf, fft_dims)
    if magnitude == "unit":
        amp = 1.0
    elif magnitude == "mean":
        amp = spectral_magnitude(fftn(xf, fft_dims)).mean(dim=fft_dims, keepdim=True)
    else:
        raise ValueError(f"magnitude must be 'unit', 'mean' or a tensor, got {magnitude!r}")
    out = _irfft(with_amplitude(z, amp, zero_bins=zero_bins, dims=fft_dims), x, fft_dims)
    return keep_layout(restore_dtype(out, x.dtype), x)


def amplitude_only(x: torch.Tensor, dims: Dims = "chw") -> torch.Tensor:
    """Amplitude-only reconstruction ``Re(ifft(|F(x)|))`` (zero phase) of ``x`` ``(..., C, H, W)``.

    The result is centred on pixel (0, 0) (apply ``torch.fft.fftshift`` over H, W to view it centred).
    """
    check_image_tensor(x, "x", allow_empty=True)
    fft_dims = check_dims(dims, x, "x")
    if x.numel() == 0:  # an empty batch comes back as it is (a new tensor), as from the pair ops
        return x.clone()
    z = rfftn(_as_float(x), fft_dims)
    out = _irfft(z.abs().to(z.dtype), x, fft_dims)
    return keep_layout(restore_dtype(out, x.dtype), x)
