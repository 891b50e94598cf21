"""Random draws of the corruption families (not public API).

Randomness comes from a ``RandomSource``: one ``torch.Generator`` for the whole batch (or ``None``, the
global RNG), or ``ItemKeys`` (``_itemkeys``): one 63-bit key per image (``item_seeds``) on the images' device and a
draw counter, whose ``k``-th draw call gives element ``j`` of image ``i`` a value that is a pure function of
``(key_i, k, j)``, made from a 32-bit half-word of a SplitMix64 hash: uniforms use its high 24 bits (float32) or all
32 (float64), normals invert the normal CDF there, integers multiply-shift it. The integer hash is exact everywhere:
uniforms and integers are identical on every device and normals (``erfinv``) agree to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .._tensor_cache import tensor_cache
from .._tensors import generator_device
from ._common import positions
from ._itemkeys import Fill, ItemKeys, draw, item_seeds, mix64_, words  # noqa: F401 (the tests import the last two here)

__all__ = ["item_seeds", "ItemKeys", "RandomSource", "uniform", "normal", "randint", "poisson", "poisson_levels"]


def _compute_into(o: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``o`` if it has ``dtype``, else a new buffer of its shape in ``dtype`` (for ``_store``)."""
    return o if o.dtype == dtype else torch.empty(o.shape, dtype=dtype, device=o.device)


def _store(o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``o`` holding ``v`` (converted like ``v.to(o.dtype)``)."""
    return o if v is o else o.copy_(v)


def _unit_fill(dtype: torch.dtype, low: float, high: float) -> Fill:
    """Uniforms in ``[low, high)``: ``low + (high - low) u`` in ``dtype`` for ``u`` in [0, 1) the multiples of ``2^-b``
    from the high ``b`` bits of each half-word, float64 ``b = 32``, else (float32) ``b = 24``: ``u = 0.5 + t 2^-b``
    for ``t`` the signed high bits, exact, so every device gives the same values."""
    if dtype not in (torch.float32, torch.float64):  # a float16 value could round up to ``high``
        raise ValueError(f"per-image (seeds=) uniform draws need dtype float32 or float64, got {dtype}")
    bits, exact = (32, torch.float64) if dtype == torch.float64 else (24, torch.float32)

    def fill(w: torch.Tensor, o: torch.Tensor) -> None:
        t = w.bitwise_right_shift_(32 - bits) if bits < 32 else w
        u = _store(o, _compute_into(o, exact).copy_(t).mul_(2.0**-bits).add_(0.5))
        if not (low == 0.0 and high == 1.0):  # the identity affine map: skip two passes
            u.mul_(high - low).add_(low)
    return fill


def _normal_fill(dtype: torch.dtype, mean: float, std: float) -> Fill:
    """``mean + std z`` in ``dtype``, ``z = sqrt(2) erfinv(v)`` by inversion, ``v`` uniform on the odd multiples of
    ``2^-b`` in (-1, 1) (exact) from the high ``b`` bits of each half-word: float64 ``b = 31``, else (float32
    arithmetic) ``b = 24``, where ``|z|`` stays below 5.42 (a tail of probability 6e-8 is cut; 6.1 and 1e-9 for
    float64)."""
    bits, exact = (31, torch.float64) if dtype == torch.float64 else (24, torch.float32)
    std = std * math.sqrt(2.0)  # erfinv of a uniform on (-1, 1) has variance 1/2

    def fill(w: torch.Tensor, o: torch.Tensor) -> None:
        odd = (w.bitwise_right_shift_(31 - bits) if bits < 31 else w).bitwise_or_(1)  # |odd| < 2^bits
        z = _store(o, _compute_into(o, exact).copy_(odd).mul_(2.0**-bits).erfinv_())  # odd * 2^-bits: exact
        z.mul_(std)
        if mean != 0.0:  # + 0.0 only turns -0.0 into 0.0
            z.add_(mean)
    return fill


def _int_fill(low: int, n: int) -> Fill:
    """``low + (u n >> b)`` for ``u`` the high ``b`` bits of each half-word, ``b = 24`` for ``n <= 128`` (int32
    arithmetic, widened where ``low`` needs it) else 32 (int64)."""
    wide = not -(1 << 31) <= low <= (1 << 31) - n  # low + r would wrap in int32

    def fill(w: torch.Tensor, o: torch.Tensor) -> None:
        if n <= 1 << 7:  # (u24 * n) < 2^31
            r = w.bitwise_right_shift_(8).add_(1 << 23).mul_(n).bitwise_right_shift_(24)
        else:  # (u32 * n) < 2^63
            r = w.to(torch.int64).add_(1 << 31).mul_(n).bitwise_right_shift_(32)
        if wide and r.dtype == torch.int32:
            r = r.to(torch.int64)
        _store(o, r.add_(low) if low else r)
    return fill


RandomSource = torch.Generator | ItemKeys | None


def _item_draw(shape: Sequence[int], keys: ItemKeys, batch_dim: int, dtype: torch.dtype, fill: Fill) -> torch.Tensor:
    """A ``draw`` of ``shape`` with the image axis at ``batch_dim``."""
    shape = tuple(shape)
    if shape[batch_dim] != len(keys):
        raise ValueError(f"{len(keys)} per-image keys for a batch of {shape[batch_dim]} images (shape {shape})")
    item = shape[:batch_dim] + shape[batch_dim + 1:]
    return draw(keys, math.prod(item), dtype, fill).view(len(keys), *item).movedim(0, batch_dim)


def uniform(shape: Sequence[int], low: float, high: float, generator: RandomSource,
            device: torch.device, dtype: torch.dtype = torch.float32, batch_dim: int = 0) -> torch.Tensor:
    """Uniform samples in ``[low, high)`` drawn from ``generator`` (on its device), moved to ``device``.

    ``batch_dim``: the image axis of ``shape`` (used by ``ItemKeys``)."""
    if isinstance(generator, ItemKeys):
        return _item_draw(shape, generator, batch_dim, dtype, _unit_fill(dtype, low, high)).to(device)
    u = torch.rand(tuple(shape), generator=generator, device=generator_device(generator, device), dtype=dtype)
    if low == 0.0 and high == 1.0:  # the identity affine map: skip two passes
        return u.to(device)
    return u.mul_(high - low).add_(low).to(device)  # in place on the fresh draw: the values of u * (high - low) + low


def normal(shape: Sequence[int], mean: float, std: float, generator: RandomSource,
           device: torch.device, dtype: torch.dtype = torch.float32, batch_dim: int = 0) -> torch.Tensor:
    """Normal samples ``N(mean, std^2)`` drawn from ``generator``, moved to ``device``."""
    if isinstance(generator, ItemKeys):
        return _item_draw(shape, generator, batch_dim, dtype, _normal_fill(dtype, mean, std)).to(device)
    z = torch.randn(tuple(shape), generator=generator, device=generator_device(generator, device), dtype=dtype)
    z.mul_(std)  # in place on the fresh draw: the values of z * std + mean
    return (z.add_(mean) if mean != 0.0 else z).to(device)  # + 0.0 only turns -0.0 into 0.0


def randint(low: int, high: int, shape: Sequence[int], generator: RandomSource,
            device: torch.device, dtype: torch.dtype = torch.int64, batch_dim: int = 0) -> torch.Tensor:
    """Integers in ``[low, high)`` (like ``np.random.randint``) drawn from ``generator``, moved to ``device``.

    ``ItemKeys`` (ranges ``n = high - low`` up to ``2^31``): ``low + (u * n >> b)`` for ``u`` the high ``b`` bits of
    a 32-bit half-word, ``b = 24`` for ``n <= 128`` (int32 arithmetic) else 32: a multiply-shift, exact integer
    math, each value's probability off by at most ``n / 2^b`` relative."""
    if isinstance(generator, ItemKeys):
        n, low = int(high) - int(low), int(low)
        if not 1 <= n <= 1 << 31:
            raise ValueError(f"randint with per-image keys needs 1 <= high - low <= 2^31, got [{low}, {high})")
        return _item_draw(shape, generator, batch_dim, dtype, _int_fill(low, n)).to(device)
    r = torch.randint(low, high, tuple(shape), generator=generator, device=generator_device(generator, device),
                      dtype=dtype)
    return r.to(device)


def poisson(rate: torch.Tensor, generator: RandomSource, max_rate: float | None = None) -> torch.Tensor:
    """Poisson counts of ``rate`` ``(B, ...)`` (non-negative), in ``rate``'s dtype and device.

    ``max_rate``: a bound on the rates known before the draw (shot noise: ``c``); ``ItemKeys`` split every rate
    by it (default ``_ITEM_POISSON_MAX``), never by the batch's largest rate, so that an image's counts do not
    depend on the other images of its batch. Rates above it raise with ``ItemKeys``."""
    if isinstance(generator, ItemKeys):
        return _item_poisson(rate, generator, _ITEM_POISSON_MAX if max_rate is None else float(max_rate))
    if rate.device.type == "cpu":  # NumPy's Poisson sampler is ~10x faster than torch's on the CPU
        seed = int(randint(0, 2**62, (1,), generator, torch.device("cpu")))
        counts = np.random.default_rng(seed).poisson(rate.double().numpy())
        return torch.from_numpy(counts).to(rate.dtype)
    dev = generator_device(generator, rate.device)
    return torch.poisson(rate.to(dev), generator=generator).to(rate.device)


#: per-image Poisson draws: rates up to this (shot noise: at most 500 photons per unit intensity)
_ITEM_POISSON_MAX = 512.0
#: inversion steps at most (rates below 1: a count of 32 has probability < 1e-35)
_INVERSION_STEPS = 32


def _item_poisson(rate: torch.Tensor, keys: ItemKeys, bound: float) -> torch.Tensor:
    """Poisson counts of ``rate`` ``(N, ...)`` (at most ``bound <= _ITEM_POISSON_MAX``) from per-image keys, exactly, by
    splitting each rate: ``Poisson(r) = Poisson(c v / 255) + Poisson(r - c v / 255)`` for ``v = floor(255 r / c)``
    (a sum of independent Poisson counts is Poisson), ``c`` the power of two at or above ``bound`` (fixed before the
    draw: a batch-dependent ``c`` would make an image's counts depend on its neighbours' rates). The first part
    comes from the levels' inverse-CDF tables (``poisson_levels``), the remainder (below ``c / 255``) is split
    again with ``c / 255`` until ``c <= 1``, then drawn by inversion: every part is one draw call."""
    if not 0.0 <= bound <= _ITEM_POISSON_MAX:
        raise ValueError(f"max_rate must lie in [0, {_ITEM_POISSON_MAX:g}] for per-image keys, got {bound:g}")
    r = rate.to(device=keys.device, dtype=torch.float64).clamp_min(0.0)
    top = float(r.max()) if r.numel() else 0.0
    if not top <= bound:
        raise ValueError(f"Poisson draws with per-image keys take rates up to {bound:g}, got {top:g}")
    c = 2.0 ** math.ceil(math.log2(bound)) if bound > 1 else 1.0
    counts = torch.zeros_like(r)
    while c > 1:
        v = torch.mul(r, 255.0 / c).floor_().clamp_(0, 255).to(torch.int32)
        counts += poisson_levels(v, c, keys)
        r = r.sub_(v.to(torch.float64).mul_(c / 255.0)).clamp_min_(0.0)  # the tables' rate of level v (float64)
        c /= 255.0
    u = uniform(r.shape, 0.0, 1.0, keys, keys.device, torch.float64)
    counts += _inversion(r.flatten(), u.flatten()).view(r.shape)
    return counts.to(device=rate.device, dtype=rate.dtype)


def _inversion(lam: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The first ``k`` with ``u <= P(Poisson(lam) <= k)`` (float64, small ``lam``), all elements stepping up
    together."""
    k = torch.zeros_like(lam)
    idx = torch.arange(lam.numel(), device=lam.device)
    p = torch.exp(-lam)
    cdf = p.clone()
    for step in range(1, _INVERSION_STEPS + 1):
        more = positions(cdf - u, "<", 0)  # u > cdf, exactly
        if not more.numel():
            break
        idx, lam, u, p, cdf = (t.index_select(0, more) for t in (idx, lam, u, p, cdf))
        p = p.mul_(lam).div_(step)
        cdf = cdf.add_(p)
        k.index_fill_(0, idx, float(step))
    return k


@tensor_cache(maxsize=16)
def _poisson_tables(c: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Flat float64 CDF ``(256 * k_max,)`` of Poisson(``c * v / 255``) per level ``v`` and the bin table
    ``(256 * bins,)`` (``bins`` a power of two; int8 where every entry fits, else int16: a table of 2^19 entries
    then stays in a 2 MiB L2 cache, where float32 entries did not): entry ``(v, j)`` is the count itself when
    every ``u`` in ``[j / bins, (j + 1) / bins)`` has the same answer, else ``-1 - lo`` with ``lo`` the first count
    whose CDF reaches ``j / bins`` (the answer lies between ``lo`` and the first count reaching ``(j + 1) / bins``)."""
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
    # entries lie in [-1 - k_max, k_max)
    small = torch.int8 if k_max <= 127 else torch.int16 if k_max <= 32767 else torch.int32
    table = torch.where(lo == hi, lo, -1 - lo).to(small)
    return cdf.flatten(), table.flatten(), k_max, bins


def poisson_levels(v: torch.Tensor, c: float, generator: RandomSource) -> torch.Tensor:
    """Poisson counts (float32) with rates ``c * v / 255`` for integer levels ``v`` in 0..255 (int32).

    Inverse-CDF sampling: the count is the first ``k`` with ``u <= cdf[v, k]`` (float64 ``u`` and CDF).
    ``u * bins`` is exact (``bins`` is a power of two), so its bin ``j`` bounds the answer between the first
    counts whose CDF reaches ``j / bins`` and ``(j + 1) / bins``; where those agree (all but a few percent of
    the draws) the bin table holds the answer, and a few vectorised steps over the rest end their search. The
    result is exactly that of a binary search, far cheaper than ``searchsorted`` over all ``256 * k_max`` keys.

    With ``ItemKeys`` the float64 uniforms ``u = 0.5 + t 2^-32`` (``uniform``'s, ``t`` the signed half-words) are
    only formed where the table leaves a search: the bin is ``j = bins / 2 + (t >> (32 - log2 bins))`` (the
    arithmetic shift floors, exactly as ``floor(u * bins)``), in int32."""
    flat_cdf, table, k_max, bins = _poisson_tables(float(c), v.device)
    vf = v.flatten()
    if isinstance(generator, ItemKeys):
        raw = _item_draw(v.shape, generator, 0, torch.int32, _raw_fill).to(v.device).flatten()
        j = torch.bitwise_right_shift(raw, 32 - (bins.bit_length() - 1)).add_(bins // 2)
    else:
        u = uniform(v.shape, 0.0, 1.0, generator, v.device, torch.float64).flatten()
        j = u.mul(bins).to(torch.int32)
    key = j.add_(vf, alpha=bins)  # v * bins + floor(u * bins): u * bins is exact
    counts = table.index_select(0, key)
    act = positions(counts, "<", 0)
    counts = counts.to(torch.float32)
    if act.numel():  # walk from the bin's first candidate while cdf[v, k] < u
        rows = vf.index_select(0, act).long() * k_max
        pos = (-1 - counts.index_select(0, act)).long()
        if isinstance(generator, ItemKeys):  # uniform's values: exact float64 products and sums
            ua = raw.index_select(0, act).to(torch.float64).mul_(2.0**-32).add_(0.5)
        else:
            ua = u.index_select(0, act)
        sub = torch.arange(act.numel(), device=v.device)
        while True:
            more = positions(flat_cdf.index_select(0, rows.index_select(0, sub) + pos.index_select(0, sub))
                                .sub_(ua.index_select(0, sub)), "<", 0)  # cdf - u < 0: cdf < u, exactly
            if not more.numel():
                break
            sub = sub.index_select(0, more)
            pos.index_add_(0, sub, torch.ones_like(sub))
        counts.index_copy_(0, act, pos.to(counts.dtype))
    return counts.reshape(v.shape)


def _raw_fill(w: torch.Tensor, o: torch.Tensor) -> None:
    """The half-words themselves (int32)."""
    o.copy_(w)
