"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Each function takes a float batch ``(B, C, H, W)`` in [0, 1], the published parameter of one
severity (see ``severity.PARAMS``) and a generator, and returns an unclipped float batch of the same
shape (the dispatcher clamps to [0, 1]). Noise is drawn independently per pixel and channel, as in
the creation scripts.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ._random import ItemGenerators, RandomSource, for_each_item, normal, randint, uniform

__all__ = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]


def gaussian_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """``x + N(0, c^2)`` per pixel and channel."""
    return x + normal(x.shape, 0.0, c, generator, x.device, x.dtype)


def shot_noise(x: torch.Tensor, c: float, generator: RandomSource = None, *,
               levels: bool = False) -> torch.Tensor:
    """``Poisson(c * x) / c``: photon noise with ``c`` photons per unit intensity.

    ``levels=True`` (8-bit input): the 256 possible rates get exact inverse-CDF tables and one
    ``searchsorted`` draws every count (much faster than a general Poisson sampler)."""
    if levels:
        return _poisson_from_levels(torch.round(x * 255).long(), float(c), generator) / c
    return _poisson((x * c).clamp_min(0.0), generator) / c


def _poisson(rate: torch.Tensor, generator: RandomSource) -> torch.Tensor:
    """Poisson counts ``(B, ...)`` of ``rate`` (same dtype); per-image generators draw each image alone."""
    if isinstance(generator, ItemGenerators):
        gens = generator.generators
        return torch.cat(for_each_item(lambda i: _poisson(rate[i:i + 1], gens[i]), len(gens), rate[0].numel()))
    if rate.device.type == "cpu":  # NumPy's Poisson sampler is ~10x faster than torch's on the CPU
        import numpy as np

        seed = int(randint(0, 2**62, (1,), generator, torch.device("cpu")))
        counts = np.random.default_rng(seed).poisson(rate.double().numpy())
        return torch.from_numpy(counts).to(rate.dtype)
    dev = generator.device if generator is not None else rate.device
    return torch.poisson(rate.to(dev), generator=generator).to(rate.device)


@lru_cache(maxsize=8)
def _poisson_tables(c: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Flat float64 CDF ``(256 * k_max,)`` of Poisson(``c * v / 255``) per level ``v`` and the guide table
    ``(256 * bins,)``: per level, the first count whose CDF reaches each of ``bins`` equal steps of ``u``."""
    k_max = int(c + 12 * math.sqrt(c) + 12)
    lam = torch.arange(256, dtype=torch.float64, device=device)[:, None] * (c / 255.0)
    k = torch.arange(k_max, dtype=torch.float64, device=device)[None, :]
    logpmf = k * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(k + 1)
    pmf = torch.where(lam > 0, logpmf.exp(), (k == 0).to(torch.float64))
    cdf = pmf.cumsum(dim=1).clamp_max(1.0)
    cdf[:, -1] = 1.0  # the truncated tail (< 1e-12) goes to the last count
    bins = 2 * k_max
    edges = torch.arange(bins, dtype=torch.float64, device=device) / bins
    guide = torch.searchsorted(cdf, edges.expand(256, bins).contiguous(), side="left")
    return cdf.flatten(), guide.flatten(), k_max, bins


def _poisson_from_levels(v: torch.Tensor, c: float, generator: RandomSource) -> torch.Tensor:
    """Poisson counts with rates ``c * v / 255`` for integer levels ``v`` in 0..255 (float64 CDF tables).

    Inverse-CDF sampling: the count is the first ``k`` with ``u <= cdf[v, k]``. The guide table starts
    every search at or just below the answer; a few vectorised steps over the unfinished entries end
    it. The result is exactly that of a binary search, far cheaper than ``searchsorted`` over all
    ``256 * k_max`` keys."""
    flat_cdf, guide, k_max, bins = _poisson_tables(float(c), v.device)
    u = uniform(v.shape, 0.0, 1.0, generator, v.device, torch.float64).flatten()
    vf = v.flatten()
    row = vf * k_max
    idx = row + guide.index_select(0, vf * bins + (u * bins).long().clamp_max(bins - 1))
    # advance while cdf[v, k] < u (the guide never overshoots); only the unfinished entries are revisited
    act = (flat_cdf.index_select(0, idx) < u).nonzero().squeeze(1)
    if act.numel():
        pos, ua = idx.index_select(0, act) + 1, u.index_select(0, act)
        sub = torch.arange(act.numel(), device=v.device)
        while True:
            more = (flat_cdf.index_select(0, pos.index_select(0, sub)) < ua.index_select(0, sub)).nonzero().squeeze(1)
            if not more.numel():
                break
            sub = sub.index_select(0, more)
            pos.index_add_(0, sub, torch.ones_like(sub))
        idx.index_copy_(0, act, pos)
    return (idx - row).reshape(v.shape).to(torch.float32)


def impulse_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Salt and pepper (scikit-image ``random_noise(mode="s&p", amount=c)``): a fraction ``c`` of the
    values (per channel) is replaced, half by 0 and half by 1."""
    u = uniform(x.shape, 0.0, 1.0, generator, x.device, x.dtype)  # one draw: u < c flips, u < c/2 salts
    return x.masked_fill(u < c, 0.0).masked_fill_(u < 0.5 * c, 1.0)


def speckle_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``."""
    return x + x * normal(x.shape, 0.0, c, generator, x.device, x.dtype)
