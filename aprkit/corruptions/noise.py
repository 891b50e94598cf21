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

from ._random import RandomSource, normal, poisson, uniform

__all__ = ["gaussian_noise", "shot_noise", "impulse_noise", "impulse_bytes", "speckle_noise"]


def gaussian_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """``x + N(0, c^2)`` per pixel and channel."""
    return normal(x.shape, 0.0, c, generator, x.device, x.dtype).add_(x)  # the noise buffer takes the sum


def shot_noise(x: torch.Tensor, c: float, generator: RandomSource = None, *,
               levels: bool = False) -> torch.Tensor:
    """``Poisson(c * x) / c``: photon noise with ``c`` photons per unit intensity.

    ``levels=True`` (8-bit input, ``x`` float ``k / 255`` or the uint8 levels ``k`` themselves): the 256 possible
    rates get exact inverse-CDF tables, and a table lookup per value draws its count (much faster than a general
    Poisson sampler)."""
    if levels:
        k = x.to(torch.int32) if x.dtype == torch.uint8 else torch.mul(x, 255).round_().to(torch.int32)
        return _poisson_from_levels(k, float(c), generator).div_(c)
    return poisson((x * c).clamp_min(0.0), generator) / c


@lru_cache(maxsize=8)
def _poisson_tables(c: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Flat float64 CDF ``(256 * k_max,)`` of Poisson(``c * v / 255``) per level ``v`` and the bin table
    ``(256 * bins,)`` (float32, ``bins`` a power of two): entry ``(v, j)`` is the count itself when every ``u`` in
    ``[j / bins, (j + 1) / bins)`` has the same answer, else ``-1 - lo`` with ``lo`` the first count whose CDF
    reaches ``j / bins`` (the answer lies between ``lo`` and the first count reaching ``(j + 1) / bins``)."""
    k_max = int(c + 12 * math.sqrt(c) + 12)
    lam = torch.arange(256, dtype=torch.float64, device=device)[:, None] * (c / 255.0)
    k = torch.arange(k_max, dtype=torch.float64, device=device)[None, :]
    logpmf = k * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(k + 1)
    pmf = torch.where(lam > 0, logpmf.exp(), (k == 0).to(torch.float64))
    cdf = pmf.cumsum(dim=1).clamp_max(1.0)
    cdf[:, -1] = 1.0  # the truncated tail (< 1e-12) goes to the last count
    bins = 1 << (16 * k_max - 1).bit_length()  # ~16 bins per count: few bins hold a CDF step
    edges = torch.arange(bins + 1, dtype=torch.float64, device=device) / bins  # exact: bins is a power of two
    first = torch.searchsorted(cdf, edges.expand(256, bins + 1).contiguous(), side="left")  # (256, bins + 1)
    lo, hi = first[:, :-1], first[:, 1:]
    table = torch.where(lo == hi, lo, -1 - lo).to(torch.float32)
    return cdf.flatten(), table.flatten(), k_max, bins


def _poisson_from_levels(v: torch.Tensor, c: float, generator: RandomSource) -> torch.Tensor:
    """Poisson counts (float32) with rates ``c * v / 255`` for integer levels ``v`` in 0..255 (int32).

    Inverse-CDF sampling: the count is the first ``k`` with ``u <= cdf[v, k]`` (float64 ``u`` and CDF).
    ``u * bins`` is exact (``bins`` is a power of two), so its bin ``j`` bounds the answer between the first
    counts whose CDF reaches ``j / bins`` and ``(j + 1) / bins``; where those agree (all but a few percent of
    the draws) the bin table holds the answer, and a few vectorised steps over the rest end their search. The
    result is exactly that of a binary search, far cheaper than ``searchsorted`` over all ``256 * k_max`` keys."""
    flat_cdf, table, k_max, bins = _poisson_tables(float(c), v.device)
    u = uniform(v.shape, 0.0, 1.0, generator, v.device, torch.float64).flatten()
    vf = v.flatten()
    key = torch.add(u.mul_(bins).to(torch.int32), vf, alpha=bins)  # v * bins + floor(u * bins); u * bins exact
    counts = table.index_select(0, key)
    act = (counts < 0).nonzero().squeeze(1)
    if act.numel():  # walk from the bin's first candidate while cdf[v, k] < u
        rows = vf.index_select(0, act).long() * k_max
        pos, ua = (-1 - counts.index_select(0, act)).long(), u.index_select(0, act).div_(bins)
        sub = torch.arange(act.numel(), device=v.device)
        while True:
            more = (flat_cdf.index_select(0, rows.index_select(0, sub) + pos.index_select(0, sub))
                    < ua.index_select(0, sub)).nonzero().squeeze(1)
            if not more.numel():
                break
            sub = sub.index_select(0, more)
            pos.index_add_(0, sub, torch.ones_like(sub))
        counts.index_copy_(0, act, pos.to(counts.dtype))
    return counts.reshape(v.shape)


def impulse_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Salt and pepper (scikit-image ``random_noise(mode="s&p", amount=c)``): a fraction ``c`` of the
    values (per channel) is replaced, half by 0 and half by 1."""
    u = uniform(x.shape, 0.0, 1.0, generator, x.device, x.dtype)  # one draw: u < c flips, u < c/2 salts
    return torch.mul(x, u >= c).add_(u < 0.5 * c)  # masks as 0/1 factors: cheaper than masked_fill on CPU


def impulse_bytes(u8: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """``impulse_noise`` of uint8 images -> uint8 (the same draws; pepper 0, salt 255, the rest unchanged)."""
    u = uniform(u8.shape, 0.0, 1.0, generator, u8.device, torch.float32)
    return torch.mul(u8, u >= c).add_((u < 0.5 * c).to(torch.uint8).mul_(255))


def speckle_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``."""
    return normal(x.shape, 0.0, c, generator, x.device, x.dtype).mul_(x).add_(x)  # x * z + x == x + x * z
