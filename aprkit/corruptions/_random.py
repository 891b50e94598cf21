"""Random draws of the corruption families (not public API) and the per-image seeds.

Randomness comes from a ``RandomSource``: one ``torch.Generator`` for the whole batch (or ``None``, the
global RNG), or ``ItemGenerators`` (one generator per image, seeded by ``item_seeds``): then every draw
of image ``i`` comes from its own generator, so its result does not depend on the other images of the
batch (batch size, worker count, process count, ``limit``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from .._hash import stable_hash64

__all__ = ["item_seeds", "ItemGenerators", "RandomSource", "for_each_item", "uniform", "normal", "randint"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def item_seeds(seed: int, name: str, severity: int, preset: str, indices: Any) -> torch.Tensor:
    """Generator seeds ``(N,)`` int64 (non-negative) of the images at dataset ``indices`` for one corruption.

    Seed ``i`` is a function of ``(seed, name, severity, preset, indices[i])`` only (a SplitMix64 mix of
    the index into ``aprkit._hash.stable_hash64`` of the rest), so image ``i`` gets the same corruption whatever batch,
    worker or process it is computed in.
    """
    idx = torch.as_tensor(indices)
    if idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise TypeError(f"indices must be a 1-D sequence of integer dataset indices, "
                        f"got {idx.dtype} shape {tuple(idx.shape)}")
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"indices must be non-negative dataset indices, got minimum {int(idx.min())}")
    base = np.uint64(stable_hash64("aprkit.corruptions", int(seed), name, int(severity), preset) >> 1)  # 63 bits
    z = idx.cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as SplitMix64 intends
        z = base + (z + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(1)).astype(np.int64))


class ItemGenerators:
    """One CPU ``torch.Generator`` per image of a batch, seeded from ``seeds`` (e.g. ``item_seeds``).

    Passed where a generator is expected, the draw helpers below take image ``i``'s values from
    generator ``i`` (in the same order for every batch), so each image's result is independent of
    the batch it is in; slicing (``gens[a:b]``) keeps the generators (and their states).
    """

    def __init__(self, seeds: Any = (), *, generators: Sequence[torch.Generator] | None = None) -> None:
        if generators is not None:
            self.generators = list(generators)
            return
        s = torch.as_tensor(seeds)
        if s.ndim != 1 or s.dtype.is_floating_point or s.dtype.is_complex or s.dtype == torch.bool:
            raise TypeError(f"seeds must be a 1-D integer sequence (one seed per image), "
                            f"got {s.dtype} shape {tuple(s.shape)}")
        self.generators = [torch.Generator().manual_seed(v) for v in s.tolist()]

    def __len__(self) -> int:
        return len(self.generators)

    def __iter__(self) -> Iterator[torch.Generator]:
        return iter(self.generators)

    def __getitem__(self, index: slice) -> ItemGenerators:
        return ItemGenerators(generators=self.generators[index])


RandomSource = torch.Generator | ItemGenerators | None


def _gen_device(generator: RandomSource, device: torch.device) -> torch.device:
    if isinstance(generator, ItemGenerators):
        return torch.device("cpu")
    return generator.device if generator is not None else device


#: per-image draws of at least this many values go to a thread pool (torch's CPU samplers are single-threaded
#: and release the GIL; each image has its own generator, so the values do not depend on the threading)
_PARALLEL_MIN_VALUES = 1 << 15
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def for_each_item(fn: Callable[[int], Any], n: int, values_per_item: int) -> list[Any]:
    """``[fn(i) for i in range(n)]``, on up to ``torch.get_num_threads()`` threads when each call draws at
    least ``_PARALLEL_MIN_VALUES`` values (at 224 px a Gaussian noise field takes ~1.5 ms per image)."""
    threads = min(torch.get_num_threads(), n)
    if threads < 2 or values_per_item < _PARALLEL_MIN_VALUES:
        return [fn(i) for i in range(n)]
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < threads:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL, _POOL_SIZE = ThreadPoolExecutor(threads, thread_name_prefix="aprkit-draw"), threads
        pool = _POOL
    return list(pool.map(fn, range(n)))


def _per_item(draw: Any, shape: Sequence[int], gens: ItemGenerators, batch_dim: int,
              dtype: torch.dtype) -> torch.Tensor:
    """``draw(item_shape, generator, out)`` for every image, gathered along ``batch_dim`` of ``shape`` (CPU)."""
    shape = tuple(shape)
    if shape[batch_dim] != len(gens):
        raise ValueError(f"{len(gens)} per-image generators for a batch of {shape[batch_dim]} images (shape {shape})")
    item = shape[:batch_dim] + shape[batch_dim + 1:]
    numel = int(np.prod(item)) if item else 1
    g = gens.generators
    if batch_dim == 0:  # each image's slice is contiguous: draw straight into it
        out = torch.empty(shape, dtype=dtype)
        for_each_item(lambda i: draw(item, g[i], out[i]), len(g), numel)
        return out
    parts = for_each_item(lambda i: draw(item, g[i], torch.empty(item, dtype=dtype)), len(g), numel)
    return torch.stack(parts, dim=batch_dim)


def uniform(shape: Sequence[int], low: float, high: float, generator: RandomSource,
            device: torch.device, dtype: torch.dtype = torch.float32, batch_dim: int = 0) -> torch.Tensor:
    """Uniform samples in ``[low, high)`` drawn from ``generator`` (on its device), moved to ``device``.

    ``batch_dim``: the image axis of ``shape`` (used by ``ItemGenerators``)."""
    if isinstance(generator, ItemGenerators):
        u = _per_item(lambda s, g, o: torch.rand(s, generator=g, out=o), shape, generator, batch_dim, dtype)
    else:
        u = torch.rand(tuple(shape), generator=generator, device=_gen_device(generator, device), dtype=dtype)
    if low == 0.0 and high == 1.0:  # the identity affine map: skip two passes
        return u.to(device)
    return u.mul_(high - low).add_(low).to(device)  # in place on the fresh draw: the values of u * (high - low) + low


def normal(shape: Sequence[int], mean: float, std: float, generator: RandomSource,
           device: torch.device, dtype: torch.dtype = torch.float32, batch_dim: int = 0) -> torch.Tensor:
    """Normal samples ``N(mean, std^2)`` drawn from ``generator``, moved to ``device``."""
    if isinstance(generator, ItemGenerators):
        z = _per_item(lambda s, g, o: torch.randn(s, generator=g, out=o), shape, generator, batch_dim, dtype)
    else:
        z = torch.randn(tuple(shape), generator=generator, device=_gen_device(generator, device), dtype=dtype)
    z.mul_(std)  # in place on the fresh draw: the values of z * std + mean
    return (z.add_(mean) if mean != 0.0 else z).to(device)  # + 0.0 only turns -0.0 into 0.0


def randint(low: int, high: int, shape: Sequence[int], generator: RandomSource,
            device: torch.device, dtype: torch.dtype = torch.int64, batch_dim: int = 0) -> torch.Tensor:
    """Integers in ``[low, high)`` (like ``np.random.randint``) drawn from ``generator``, moved to ``device``."""
    if isinstance(generator, ItemGenerators):
        r = _per_item(lambda s, g, o: torch.randint(low, high, s, generator=g, out=o), shape, generator, batch_dim,
                      dtype)
    else:
        r = torch.randint(low, high, tuple(shape), generator=generator, device=_gen_device(generator, device),
                          dtype=dtype)
    return r.to(device)
