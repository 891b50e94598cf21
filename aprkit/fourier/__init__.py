"""Stateless, batched, differentiable Fourier amplitude/phase operations.

Every function takes images of shape ``(..., C, H, W)`` (any leading batch shape of at least one image), in
uint8 or a floating dtype, on any device. The image ops (swap, mix, low-frequency swap, phase-only,
amplitude-only) return the same shape and dtype (uint8 results are rounded and clamped to [0, 255], never
wrapped around); ``spectrum`` and ``amplitude_phase`` return complex64 / float32 spectra (float64 input:
complex128 / float64) and ``recombine`` a float32 (or float64) image. Computation runs in float32 (float64 for
float64 input); gradients flow through every floating path.

``dims="chw"`` is a 3-D FFT over (C, H, W), as in the reference APR code (Chen et al., ICCV 2021);
``dims="hw"`` is a per-channel 2-D FFT over (H, W). Every op defaults to ``"chw"`` except the FDA- and FACT-style
``low_frequency_swap`` and ``mix_amplitude`` (and ``low_frequency_mask``), which default to ``"hw"`` as those
methods transform each channel on its own.

The ops that produce real images from real images (swap, mix, low-frequency swap, phase-only,
amplitude-only) use real FFTs (``rfftn``/``irfftn``): the recombined spectrum of real inputs is
Hermitian, so the half spectrum is exact and about half the work. ``amplitude_phase`` and
``recombine`` expose the full spectrum so users can edit and visualise it freely.

Modules, lowest first: :mod:`~aprkit.fourier.fft` (the FFTs, with CPU fast routes),
:mod:`~aprkit.fourier.spectra` (spectra, magnitudes),
:mod:`~aprkit.fourier.mixing` (amplitude edits of spectra) and :mod:`~aprkit.fourier.images` (the image ops).
Every public name is importable from ``aprkit.fourier``.
"""

from __future__ import annotations

from .fft import fftn, ifftn, irfftn, rfftn
from .images import (
    amplitude_only,
    low_frequency_mask,
    low_frequency_swap,
    mix_amplitude,
    phase_only,
    swap_amplitude,
)
from .mixing import ZeroBins, mix_spectra, transfer_amplitude, with_amplitude
from .spectra import Dims, amplitude_phase, recombine, spectral_magnitude, spectral_power, spectrum

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
    "spectral_power",
    "rfftn",
    "irfftn",
    "fftn",
    "ifftn",
    "mix_spectra",
    "transfer_amplitude",
    "with_amplitude",
    "ZeroBins",
]
