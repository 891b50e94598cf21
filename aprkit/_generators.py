"""Random generators of the transforms: one per transform (``generator=`` or ``seed=``), re-seeded per DataLoader
worker so that forked or pickled copies do not draw the same stream; sent to other processes as plain bytes, so that
spawned workers can receive them."""

from __future__ import annotations

from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
import torch

from ._checks import check_seed

__all__ = ["make_generator", "worker_generator", "worker_seed"]


def make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    """The generator to draw from: ``generator``, or a new CPU one seeded with ``seed`` (an integer in
    ``0..2**63 - 1``), or ``None`` (global RNG)."""
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None:
        return torch.Generator().manual_seed(check_seed(seed))  # 1.5, "3" and True were taken as 1, 3 and 1
    return generator


def worker_seed(seed: int, worker_seed_: int) -> int:
    """A 64-bit seed mixed from a transform's ``seed`` and a DataLoader worker's torch seed (``SeedSequence``)."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(worker_seed_) % 2**64]).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1]) << 32)


def worker_generator(generator: torch.Generator | None, base_seed: int | None) -> torch.Generator | None:
    """``generator``, re-seeded once per DataLoader worker at its first use there.

    Forked (or pickled) workers each hold a copy of a seeded generator, so without this every worker
    would draw the same stream. Inside a worker whose copy still carries ``base_seed`` (the generator's
    ``initial_seed()`` when the transform was built), the copy is re-seeded in place with
    :func:`worker_seed` ``(base_seed, get_worker_info().seed)``, as torch seeds its own RNG per worker
    (``base_seed`` of the loader + worker id): streams differ between workers and epochs and repeat
    whenever the loader's seed does (``torch.manual_seed`` or ``DataLoader(generator=...)``). In the
    main process, and for a generator its owner re-seeded after construction, nothing changes.
    """
    if generator is None or base_seed is None:
        return generator
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    if info is not None and generator.initial_seed() == base_seed:
        generator.manual_seed(worker_seed(base_seed, info.seed))
    return generator


def _generator_from_bytes(device: str, state: bytes) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` with the state ``state`` (its seed and its position in the stream)."""
    g = torch.Generator(device)
    g.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return g


def _reduce_generator(g: torch.Generator) -> tuple[Any, tuple[str, bytes]]:
    return _generator_from_bytes, (str(g.device), g.get_state().numpy().tobytes())


# Generators sent to DataLoader workers (and other processes) travel as plain bytes. torch's multiprocessing pickler
# would share their state tensor through shared memory, which fails in workers started with spawn or forkserver
# ("unable to resize file", pytorch#146828), so every transform holding a seeded generator crashed them. Registered
# on the multiprocessing pickler only: plain pickle and copy.deepcopy keep torch's own reduction. Within one pickle a
# generator shared by several transforms stays one object (the pickler memoises it).
ForkingPickler.register(torch.Generator, _reduce_generator)
