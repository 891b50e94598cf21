"""Random generators of the transforms: one per transform (``generator=`` or ``seed=``), re-seeded per DataLoader
worker so that forked or pickled copies do not draw the same stream, and pickled as plain bytes
(``GeneratorPickling``) so that spawned workers can receive them."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["make_generator", "worker_generator", "worker_seed", "GeneratorPickling"]


def make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    """The generator to draw from: ``generator``, or a new CPU one seeded with ``seed``, or ``None`` (global RNG)."""
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed))
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


class _PickledGenerator(NamedTuple):
    """A ``torch.Generator`` as plain data: its device and its state's bytes."""

    device: str
    state: bytes

    def restore(self) -> torch.Generator:
        g = torch.Generator(self.device)
        g.set_state(torch.frombuffer(bytearray(self.state), dtype=torch.uint8))  # the seed and the stream position
        return g


class GeneratorPickling:
    """Mixin (before ``nn.Module`` or any other base): the ``torch.Generator`` attributes of an instance pickle as
    plain bytes (device and state). torch's multiprocessing pickler otherwise shares a generator's state tensor
    through shared memory, which fails in DataLoader workers started with ``spawn`` or ``forkserver`` ("unable to
    resize file", pytorch#146828); plain ``pickle`` and ``copy.deepcopy`` give the same generator either way (its
    seed and position: ``worker_generator`` still recognises an unused copy)."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # type: ignore[misc]  # object's (Python >= 3.11) or a base class's
        for key, value in state.items():
            if isinstance(value, torch.Generator):
                state[key] = _PickledGenerator(str(value.device), value.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {k: v.restore() if isinstance(v, _PickledGenerator) else v for k, v in state.items()}
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
