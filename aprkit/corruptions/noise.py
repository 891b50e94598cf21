"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Each function takes a float batch ``(B, C, H, W)`` in [0, 1], the published parameter of one
severity (see ``severity.PARAMS``) and a generator, and returns an unclipped float batch of the same
shape (the dispatcher clamps to [0, 1]). Noise is drawn independently per pixel and channel, as in
the creation scripts.
"""

from __future__ import annotations

import math

import torch

from ._common import normal, uniform

__all__ = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]


def gaussian_noise(x: torch.Tensor, c: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + N(0, c^2)`` per pixel and channel."""
    return x + normal(x.shape, 0.0, c, generator, x.device, x.dtype)


def shot_noise(x: torch.Tensor, c: float, generator: torch.Generator | None = None, *,
               levels: bool = False) -> torch.Tensor:
    """``Poisson(c * x) / c``: photon noise with ``c`` photons per unit intensity.

    ``levels=True`` (8-bit input): the 256 possible rates get exact inverse-CDF tables and one
    ``searchsorted`` draws every count (much faster than a general Poisson sampler)."""
    if levels:
        return _poisson_from_levels(torch.round(x * 255).long(), float(c), generator) / c
    rate = (x * c).clamp_min(0.0)
    if x.device.type == "cpu":  # NumPy's Poisson sampler is ~10x faster than torch's on the CPU
        import numpy as np

        seed = int(torch.randint(0, 2**62, (1,), generator=generator,
                                 device=generator.device if generator is not None else "cpu"))
        counts = np.random.default_rng(seed).poisson(rate.double().numpy())
        return torch.from_numpy(counts).to(x.dtype) / c
    dev = generator.device if generator is not None else x.device
    counts = torch.poisson(rate.to(dev), generator=generator).to(x.device)
    return counts / c


def _poisson_from_levels(v: torch.Tensor, c: float, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson counts with rates ``c * v / 255`` for integer levels ``v`` in 0..255 (float64 CDF tables)."""
    lam_max = c
    k_max = int(lam_max + 12 * math.sqrt(lam_max) + 12)
    lam = torch.arange(256, dtype=torch.float64, device=v.device)[:, None] * (c / 255.0)
    k = torch.arange(k_max, dtype=torch.float64, device=v.device)[None, :]
    logpmf = k * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(k + 1)
    pmf = torch.where(lam > 0, logpmf.exp(), (k == 0).to(torch.float64))
    cdf = pmf.cumsum(dim=1).clamp_max(1.0)
    cdf[:, -1] = 1.0  # the truncated tail (< 1e-12) goes to the last count
    keys = (cdf + torch.arange(256, dtype=torch.float64, device=v.device)[:, None]).flatten()
    u = uniform(v.shape, 0.0, 1.0, generator, v.device, torch.float64)
    idx = torch.searchsorted(keys, (u + v).flatten(), side="left").reshape(v.shape)
    return (idx - v * k_max).to(torch.float32)


def impulse_noise(x: torch.Tensor, c: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt and pepper (scikit-image ``random_noise(mode="s&p", amount=c)``): a fraction ``c`` of the
    values (per channel) is replaced, half by 0 and half by 1."""
    flipped = uniform(x.shape, 0.0, 1.0, generator, x.device) < c
    salted = uniform(x.shape, 0.0, 1.0, generator, x.device) < 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)


def speckle_noise(x: torch.Tensor, c: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``."""
    return x + x * normal(x.shape, 0.0, c, generator, x.device, x.dtype)
