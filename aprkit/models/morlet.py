"""Fixed complex Morlet / Gabor filter banks for the phase-collapse scattering network.

Filters are built on a periodic ``P x Q`` grid in the spatial domain (summing shifted copies of the
Gaussian envelope, so they wrap around like the circular convolution that applies them) and
returned in the Fourier domain, where they are real (up to round-off) because the envelopes are
centred on the origin. Conventions of Guth, Zarka & Mallat (ICLR 2022) and Kymatio:

- Gabor ``g(u) = exp(-u^T A u + i xi (u_x cos t + u_y sin t)) / (2 pi sigma^2 / slant)`` with
  ``A = R_t diag(1, slant^2) R_t^T / (2 sigma^2)``;
- Morlet ``psi = g_xi - K g_0`` with ``K`` chosen so that ``psi`` has zero mean;
- ``L`` orientations ``t = (floor(L/2) - 1 - l) pi / L``, ``slant = 4 / L``;
- half-octave factorisation: even layers use ``psi_1`` (sigma 0.8, xi 3pi/4) and odd layers
  ``psi_{3/2}`` (sigma 0.8 sqrt(3/2), xi pi/sqrt(2)), both with the low-pass ``phi_{1/2}``
  (Gaussian, sigma 0.8/sqrt(2)); only odd layers subsample, so two layers make one octave.
"""

from __future__ import annotations

import math

import torch

from .._tensor_cache import tensor_cache

__all__ = ["gabor_2d", "morlet_2d", "morlet_filter_bank"]


def gabor_2d(P: int, Q: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> torch.Tensor:
    """Periodised spatial Gabor filter ``(P, Q)`` complex128 (origin at index ``(0, 0)``).

    Sums the Gaussian-windowed wave over the grid's periodic copies within two periods of the
    origin (coordinates taken centred, in ``[-P/2, P/2)``), as the reference and kymatio do (one period, used
    before on grids of 16 px and more, left 0.8 % out of the widest filters at L = 32 on 16 px).
    """
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    curv = rot @ torch.diag(torch.tensor([1.0, slant * slant], dtype=torch.float64)) @ rot.T / (2 * sigma * sigma)
    ax = lambda n: (torch.arange(n, dtype=torch.float64) + n // 2) % n - n // 2  # noqa: E731
    xx0, yy0 = torch.meshgrid(ax(P), ax(Q), indexing="ij")
    out = torch.zeros(P, Q, dtype=torch.complex128)
    folds = (-2, -1, 0, 1, 2)
    for ex in folds:
        for ey in folds:
            xx, yy = xx0 + ex * P, yy0 + ey * Q
            quad = curv[0, 0] * xx * xx + (curv[0, 1] + curv[1, 0]) * xx * yy + curv[1, 1] * yy * yy
            out += torch.exp(torch.complex(-quad, xi * (xx * c + yy * s)))
    return out / (2 * math.pi * sigma * sigma / slant)


def morlet_2d(P: int, Q: int, sigma: float, theta: float, xi: float, slant: float = 0.5) -> torch.Tensor:
    """Periodised zero-mean spatial Morlet filter ``(P, Q)`` complex128."""
    wave = gabor_2d(P, Q, sigma, theta, xi, slant)
    envelope = gabor_2d(P, Q, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


def morlet_filter_bank(P: int, Q: int, L: int, half: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fourier-domain filters of one layer: ``(phi (P, Q), psi (L, P, Q))``, float32, real.

    ``half=0``: ``psi_1`` wavelets; ``half=1``: ``psi_{3/2}`` wavelets; ``half=-1``: a full octave
    (``psi`` at sigma 0.8 with the low-pass at sigma 0.8, for a first layer that subsamples at once).
    """
    if L < 1:
        raise ValueError(f"number of orientations L must be >= 1, got {L}")
    if P < 4 or Q < 4:
        raise ValueError(f"filter grid must be at least 4x4, got {P}x{Q}")
    if half not in (-1, 0, 1):
        raise ValueError(f"half must be -1 (full octave), 0 (psi_1) or 1 (psi_3/2), got {half}")
    if half == 1 and L < 3:
        raise ValueError(f"half-octave wavelets (half=1) need L >= 3 orientations, got {L}")
    phi, psi = _bank(int(P), int(Q), int(L), int(half))
    return phi.clone(), psi.clone()


@tensor_cache(32)  # built outside inference mode: a bank first made under it would break later training
def _bank(P: int, Q: int, L: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    slant = 4.0 / L
    thetas = [(int(L - L / 2 - 1) - j) * math.pi / L for j in range(L)]
    if half == 1:
        sigma, xi = 0.8 * math.sqrt(1.5), math.pi / math.sqrt(2)
        slant = math.sqrt(3 * slant**2 / (4 - slant**2))
        phi_sigma = 0.8 / math.sqrt(2)
    elif half == 0:
        sigma, xi, phi_sigma = 0.8, 3 * math.pi / 4, 0.8 / math.sqrt(2)
    else:
        sigma, xi, phi_sigma = 0.8, 3 * math.pi / 4, 0.8
    psi = torch.stack([morlet_2d(P, Q, sigma, t, xi, slant) for t in thetas])
    phi = gabor_2d(P, Q, phi_sigma, 0.0, 0.0)
    return torch.fft.fft2(phi).real.float(), torch.fft.fft2(psi).real.float()
