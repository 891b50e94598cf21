"""Per-item seeds for random transforms in a DataLoader: :class:`SeededTransform`.

A random transform that draws from the global RNGs (torch's, NumPy's, Python's ``random``) in DataLoader workers
draws from each worker's own stream, so which item gets which draw depends on the worker count, the batch size and the
order the workers take the batches in. Wrapped in :class:`SeededTransform`, item ``i`` is read and transformed under a
seed of its own, derived from ``(seed, "item", epoch, i)``: the same augmentation whatever the worker count or batch
size, and again after a resume (``aprkit train`` reads its training data this way). Give the transforms no ``seed``
or ``generator`` of their own (``APRSingle()``, ``APRSingleV2()``, ``RandomCorruption()``, torchvision's): those draw
from a stream per worker instead.
"""

from __future__ import annotations

import contextlib
import random
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_seed, dataset_len
from .._hash import derive_seed

__all__ = ["SeededReads", "SeededTransform", "draws_random_numbers", "seeded_global_rngs"]


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed torch (CPU), NumPy and Python's ``random`` for the block; restore their states afterwards. The CUDA
    generators are left alone (``torch.manual_seed`` would seed them too, and nothing here restores them: a user's
    CUDA dropout stream restarted at the same state after each evaluation)."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _np_state() -> tuple[bytes, int]:
    """NumPy's global generator state as comparable values (its key array's bytes and position)."""
    state: Any = np.random.get_state(legacy=True)  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
    return np.asarray(state[1]).tobytes(), int(state[2])


def draws_random_numbers(dataset: Any, n: int = 2) -> bool:
    """Whether reading the first ``n`` items of ``dataset`` moves torch's, NumPy's or Python's global generator (it
    draws random numbers itself: its own random transform). Each item is read under a seed of its own, so the check
    draws nothing from the caller's streams. (Comparing two reads of an item missed a coin flip that landed alike.)"""
    for i in range(min(n, dataset_len(dataset))):
        with seeded_global_rngs(derive_seed(0, "probe", i)):
            before = (torch.random.get_rng_state(), _np_state(), random.getstate())
            dataset[i]
            after = (torch.random.get_rng_state(), _np_state(), random.getstate())
        if not (torch.equal(before[0], after[0]) and before[1] == after[1] and before[2] == after[2]):
            return True
    return False


class SeededReads(Dataset):
    """``base`` read item by item under seeds of their own (``(seed, "read", i)``, through
    :func:`seeded_global_rngs`): a dataset that draws random numbers when read (a random transform) then gives the
    same items whatever the batch size, worker or process count, and again from run to run. Its other attributes
    (``classes``, ``targets``, ``cache_id``, ...) are ``base``'s."""

    def __init__(self, base: Any, seed: int = 0) -> None:
        self.base, self.seed = base, int(seed)

    def __len__(self) -> int:
        return dataset_len(self.base)

    def __getitem__(self, i: int) -> Any:
        with seeded_global_rngs(derive_seed(self.seed, "read", int(i))):
            return self.base[i]

    def __getattr__(self, name: str) -> Any:  # (only for names not found on the wrapper itself)
        if name in ("base", "seed") or name.startswith("__"):  # unpickling looks for hooks before base is set
            raise AttributeError(name)
        return getattr(self.base, name)


def _held(transform: object, match: Callable[[object], bool], depth: int = 12) -> list[tuple[str, object]]:
    """The objects ``transform`` holds (itself, its public attributes, a Compose's list, a module's children, a
    user's wrapper's attributes, ... to ``depth`` levels) for which ``match`` holds, with their dotted paths, outer
    ones first; a match is not looked into."""
    seen: set[int] = set()
    found: list[tuple[str, object]] = []

    def visit(obj: object, path: str, left: int) -> None:
        if id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        if match(obj):
            found.append((path.lstrip("."), obj))
            return
        if isinstance(obj, (list, tuple)):  # (a level of its own: Compose([RandomApply([...])]) nests four deep; the
            # first 256 items: a list of file names a user's transform holds is no list of transforms)
            items: list[tuple[str, object]] = [(f"{path}[{i}]", v) for i, v in enumerate(obj[:256])]
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, Dataset, types.ModuleType, types.FunctionType,
                                                                 types.BuiltinFunctionType, types.MethodType)):
            # (not a module a transform keeps, torchvision's functional or torch itself: its default generator is no
            # generator of the transform's; private attributes are re-seeded per call, e.g. AlbuAPRSingle's)
            items = [(f"{path}.{k}", v) for k, v in vars(obj).items() if not k.startswith("_")]
            if isinstance(obj, torch.nn.Module):
                items += [(f"{path}.{k}", v) for k, v in obj._modules.items()]
        else:
            return
        for where, v in items:
            if v is not None and not isinstance(v, (str, bytes, int, float, bool, torch.Tensor, dict, np.ndarray)):
                visit(v, where, left - 1)

    if transform is not None:
        visit(transform, type(transform).__name__, depth)
    return found


def own_generator(transform: object, depth: int = 12) -> str | None:
    """Where ``transform`` (or a transform it holds: a Compose's list, a module's children, an adapter's core) keeps
    a ``torch.Generator`` of its own, as a dotted path; ``None`` when it draws from the global RNGs."""
    held = _held(transform, lambda o: isinstance(o, torch.Generator), depth)
    return held[0][0] if held else None


def _albumentations(obj: object) -> bool:
    """An albumentations transform or pipeline: it draws from generators of its own, which ``set_random_state``
    replaces (a Compose's transforms share the pipeline's)."""
    return (any(c.__module__.split(".")[0] == "albumentations" for c in type(obj).__mro__[:-1])  # AlbuAPRSingle too
            and callable(getattr(obj, "set_random_state", None)))


class SeededTransform(Dataset):
    """Read item ``i`` of ``base`` and apply ``transform`` under a seed derived from ``(seed, "item", epoch, i)``;
    call :meth:`set_epoch` at the start of each epoch (as with ``DistributedSampler``) for new draws.

    The read is seeded too: a dataset that draws from torch's, NumPy's or Python's global RNG in ``__getitem__``
    (its own random transform) gives the same items whatever the worker count, and again after a resume. An
    albumentations pipeline in ``transform`` (also inside a function object of the user's: ``self.compose``; not
    inside a closure or lambda, which hide it) draws from generators of its own: the pipeline gets a pair seeded with
    the item's seed (``set_random_state``), a ``Compose(seed=...)`` given included.
    """

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor] | None, seed: int):
        check_seed(seed)
        self.base, self.transform, self.seed, self.epoch = base, transform, int(seed), 0
        # albumentations draws from each transform's own NumPy and Python generators, which no global seed reaches:
        # they are seeded per item instead (also a user's function-object wrapper's ``A.Compose``)
        self._seeded = [obj for _, obj in _held(transform, _albumentations)]
        held = own_generator(transform)
        if held is not None:
            warnings.warn(f"SeededTransform: the transform holds its own torch.Generator ({held}: seed= or generator= "
                          "given), which its draws come from instead of the item's seed: they depend on the worker "
                          "count and the order the items are read in. Create it without seed/generator (e.g. "
                          "APRSingleV2()) to have per-item draws", RuntimeWarning, stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return dataset_len(self.base)

    def item_seed(self, i: int, epoch: int | None = None) -> int:
        """The seed item ``i`` is read and transformed under in ``epoch`` (default: the current one). Tagged: ``(seed,
        epoch, i)`` was the seed of the device draws of step ``i`` on rank ``epoch``, ``(seed, rank, step)``."""
        return derive_seed(self.seed, "item", self.epoch if epoch is None else epoch, int(i))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        seed = self.item_seed(i)
        with seeded_global_rngs(seed):
            x, y = self.base[i]
            for obj in self._seeded:  # one pair of generators for the whole pipeline: set_random_seed would give each
                # of its transforms the same seed, so that their coin flips (p) all came out alike
                obj.set_random_state(np.random.default_rng(seed % (1 << 32)),  # type: ignore[attr-defined]
                                     random.Random(seed % (1 << 32)))
            if self.transform is not None:
                try:
                    x = self.transform(x)
                except ValueError as e:  # e.g. one image smaller than the crop (torchvision's bare message)
                    shape = "x".join(map(str, getattr(x, "shape", ()))) or type(x).__name__
                    raise ValueError(f"item {i} of the data read ({shape}; of the subset, where one was taken): "
                                     f"{e}") from e
        return x, y
