"""On-disk result cache: one atomic JSON file per finished unit of work, keyed by everything it depends on.

A unit is e.g. "model X on dataset D under corruption c at severity s". Each finished unit is written as
``<root>/<slug>-<hash>.json`` via a temporary file and ``os.replace``, so a run that is killed at any
moment leaves only complete files; rerunning with the same cache skips them. Cache files are not
``fsync``-ed (``durable=False`` of ``aprkit._io.atomic_write``): one lost or damaged by a power loss is
read as a miss and recomputed, while an fsync per cell would cost milliseconds of every cell.

Result identity: :func:`result_key` is the only function that builds keys (the suites' cells, the runner's
whole-suite entries and the output folder's suite index all use it, mostly through :func:`cached`). A key
``unit|model|data|name=value,...`` holds

- ``unit``: what was computed (``"cell"``, ``"ood-scores"``, ``"suite:corruption"``, ...) plus the unit's
  format version among its options (``v``);
- ``model``: :func:`~.fingerprint.model_fingerprint`: the module tree as ``repr`` prints it (every submodule's type and
  settings, e.g. a wrapper's resize and crop), then every parameter and buffer, non-persistent ones included
  (names, dtypes, shapes and values; remembered per model object until a weight changes, see there). The
  user's ``model_id`` is a display label only and never part of a key. Input normalisation lives inside aprkit
  models as (non-persistent) buffers or module settings, so preprocessing is covered by the fingerprint;
- ``data``: the dataset identity (``aprkit.eval.engine.datasets.dataset_id``: the normalised spec with its
  split, a ``cache_id``, or a content hash of an in-memory set);
- the run settings that change numbers, added from the evaluation context: ``limit`` (the first N images),
  ``seed``, ``amp`` (false, or the autocast dtype: float16 on CUDA, bfloat16 elsewhere), each unless the unit
  does not read it (``reads``: shape bias neither the seed nor a limit), and ``num_classes`` (when given);
- the unit's own options, e.g. for a corruption cell the corruption name, severity, preset and
  ``aprkit.corruptions.corruption_version`` of a generated corruption, or the on-disk -C source's identity; for
  a whole suite every evaluation option. Values go through :func:`identity` (datasets by content id, specs
  with resolved paths, callables by ``cache_id``).

Not in keys: device, batch size, data-loader workers, world size (``torchrun``), channels_last and library
versions. They change only the floating-point rounding of a forward pass, and of a generated corruption (seeded
per image, see ``suites/corruption.py``: on another device or with another torch, Pillow or libjpeg a value may
land a level higher or lower, as ``aprkit corrupt``'s manifest notes), so cells may be shared between such runs;
each stored value records the world size, batch size, device and channels_last that produced it (``_produced_by``,
kept by the runner) and ``results.json`` lists them, with the library versions. A unit whose inputs cannot be
identified (e.g. a lambda as the -C source) is computed every time and never cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..._batch import batch_dependent
from ..._io import atomic_write_text, to_jsonable
from ...distributed import group_info
from .fingerprint import model_fingerprint

__all__ = [
    "ResultCache", "MemoryCache", "Unidentifiable", "atomic_write_json", "cached", "cached_start", "cached_starts",
    "identity", "nested_get", "result_key", "to_jsonable", "READ_SETTINGS", "RUN_SETTINGS",
]

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

#: options of the evaluation context that are part of every key (besides ``seed`` and ``amp``)
RUN_SETTINGS = ("limit", "num_classes")


def nested_get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` of nested result dicts, or None where a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


class Unidentifiable(ValueError):
    """A key part (e.g. a lambda or an object without ``cache_id``) has no stable identity across runs."""


def identity(value: Any) -> Any:
    """A JSON-able, stable identity of an option value for cache keys.

    Strings are kept, except that specs ``kind:PATH`` naming an existing path get the resolved path;
    paths are resolved; tensors become a content hash; objects with a ``cache_id`` string give it;
    datasets (``__getitem__`` and ``__len__``) give ``dataset_id``; module-level functions and classes give
    ``module.qualname``. Anything else raises :class:`Unidentifiable`.
    """
    from .datasets import _normalise_spec, dataset_id

    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _normalise_spec(value)
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, Mapping):
        return {str(k): identity(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [identity(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((identity(v) for v in value), key=repr)
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"tensor-{digest.hexdigest()[:16]}"
    if type(value).__module__ == "numpy":  # arrays and scalars
        return identity(value.item()) if getattr(value, "ndim", 0) == 0 else identity(torch.as_tensor(value))
    cid = getattr(value, "cache_id", None)
    if isinstance(cid, str) and cid:
        return cid
    if hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        try:
            return dataset_id(value)
        except (TypeError, ValueError, IndexError, KeyError) as err:
            raise Unidentifiable(
                f"cannot identify the {type(value).__name__} {value!r:.60} for the result cache: {err}") from err
    qualname = getattr(value, "__qualname__", None)
    if isinstance(qualname, str) and "<" not in qualname and callable(value):
        return f"{getattr(value, '__module__', '?')}.{qualname}"
    raise Unidentifiable(
        f"cannot identify {type(value).__name__} {value!r:.60} for the result cache (a lambda, a local function or an "
        "object without a 'cache_id' string): results depending on it are recomputed every run; give it a "
        "cache_id attribute that names its content to cache them"
    )


#: per model object: (its key in the last :func:`result_key`, :func:`batch_dependent` of it then)
_BATCH_DEPENDENT: weakref.WeakKeyDictionary[torch.nn.Module, tuple[str, bool]] = weakref.WeakKeyDictionary()


def _batch_dependent(model: Any, key: str) -> bool:
    """:func:`batch_dependent` of ``model``, whose weights fingerprint is ``key``, looked up once per fingerprint (each
    cell's key asked for it, walking every module): the fingerprint covers the module tree (a batch norm's
    ``track_running_stats``) and every buffer (its running statistics or none)."""
    if not isinstance(model, torch.nn.Module):
        return False
    known = _BATCH_DEPENDENT.get(model)
    if known is None or known[0] != key:
        known = _BATCH_DEPENDENT[model] = (key, batch_dependent(model))
    return known[1]


def _model_key(ctx: Any) -> str:
    """The context's weights fingerprint, computed once per context."""
    fp = getattr(ctx, "model_key", None)
    if not fp:
        fp = model_fingerprint(ctx.model, reuse=False)  # once per context: hashed afresh (see model_fingerprint)
        try:
            ctx.model_key = fp
        except AttributeError:  # a frozen or slotted context: recompute next time
            pass
    return fp


#: the run settings a unit may leave out of its key when its numbers do not depend on them (``reads``)
READ_SETTINGS = ("limit", "seed", "amp")


def result_key(ctx: Any, unit: str, data: Any, *, reads: Collection[str] = READ_SETTINGS, **options: Any) -> str:
    """The cache key of one unit computed with ``ctx`` (an ``EvalContext``) on ``data`` (see the module docstring).

    ``data`` is a dataset spec, an id string (from ``dataset_id`` or a ``cache_id``), a dataset, or
    tensors; it is identified with ``dataset_id`` (strings) or :func:`identity`. ``options`` are the unit's own
    options; they must not repeat the run settings (``seed``, ``amp``, ``limit``, ``num_classes``), which the key
    takes from ``ctx``: ``num_classes`` always, those of :data:`READ_SETTINGS` that the unit ``reads`` (all of them
    unless it says otherwise: shape bias reads neither the seed nor a limit, the transplant test runs in float32),
    so that runs differing in a setting the unit ignores share its entry.
    """
    if not isinstance(unit, str) or not unit:
        raise ValueError(f"unit must be a non-empty string naming what was computed, got {unit!r}")
    unknown = sorted(set(reads) - set(READ_SETTINGS))
    if unknown:
        raise ValueError(f"reads names {unknown}; expected some of {', '.join(READ_SETTINGS)}")
    from .datasets import dataset_id
    from .inference import amp_dtype

    amp = str(amp_dtype(torch.device(ctx.device))).removeprefix("torch.") if ctx.amp else False
    every = {k: ctx.options.get(k) for k in RUN_SETTINGS} | {"seed": int(ctx.seed), "amp": amp}
    settings = {k: v for k, v in every.items() if k not in READ_SETTINGS or k in reads}
    clash = sorted(set(options) & set(every))
    if clash:
        raise ValueError(f"options {clash} are run settings that every key takes from the context; "
                         "give the unit's own value another name")
    if data is None or (isinstance(data, str) and not data):
        raise ValueError(f"data must identify a dataset (a spec, an id string or a dataset), got {data!r}")
    data_id = dataset_id(data) if isinstance(data, str) else identity(data)
    data_id = data_id if isinstance(data_id, str) else json.dumps(data_id, sort_keys=True)
    parts = {k: identity(v) for k, v in (settings | options).items()}
    opts = ",".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(parts.items()))
    return "|".join([unit, model_part(ctx.model, _model_key(ctx), ctx.batch_size), data_id, opts])


def model_part(model: Any, fingerprint: str, batch_size: int) -> str:
    """The model's part of every cache key (:func:`result_key`, ``layer_sweep``'s): its weights ``fingerprint``, and
    for a batch-dependent model (:func:`batch_dependent`) the batch size and the number of processes sharing the data,
    since its results are not the same for other ones (other models': to the last bits)."""
    if not _batch_dependent(model, fingerprint):
        return fingerprint
    world = group_info()[1]
    return fingerprint + f"@batch{int(batch_size)}" + (f"x{world}" if world > 1 else "")


def cached(ctx: Any, unit: str, data: Any, compute: Callable[[], dict], **options: Any) -> dict:
    """``compute()`` once per :func:`result_key`: return ``ctx.cache``'s entry when present, else compute and store it.

    Without a cache, or when a key part is :class:`Unidentifiable` (warned once), it just computes.
    """
    return cached_start(ctx, unit, data, lambda: compute, **options)()


def cached_start(ctx: Any, unit: str, data: Any, start: Callable[[], Callable[[], dict]],
                 **options: Any) -> Callable[[], dict]:
    """:func:`cached` for a computation in two steps: ``start()`` begins it (e.g. queues its work on the device) and
    returns ``finish``, whose value is stored when it returns. Returns a function giving the value: the cache's entry
    (``start`` never runs), or ``finish()``'s, stored then."""
    key = None
    if ctx.cache is not None:
        try:
            key = result_key(ctx, unit, data, **options)
        except Unidentifiable as err:
            warnings.warn(str(err), RuntimeWarning, stacklevel=3)
        else:
            hit = ctx.cache.get(key)
            if hit is not None:
                return lambda: hit
    finish = start()
    return finish if key is None else _storing(ctx, key, finish)


def cached_starts(ctx: Any, unit: str, data: Any, start: Callable[[], list[Callable[[], dict]] | None],
                  options: list[dict[str, Any]]) -> list[Callable[[], dict]] | None:
    """:func:`cached_start` for units computed together: ``start()`` begins them all and returns one ``finish`` per
    entry of ``options`` (each unit's own options), whose value is stored when it returns. ``None`` when the cache
    holds one of them (``start`` not run), one cannot be keyed, or ``start()`` returns ``None`` (it cannot compute them
    together, and began nothing): :func:`cached_start` then does each on its own."""
    keys: list[str | None] = [None] * len(options)
    if ctx.cache is not None:
        try:
            made = [result_key(ctx, unit, data, **o) for o in options]
        except Unidentifiable:
            return None
        if any(_holds(ctx.cache, k) for k in made):
            return None
        keys = list(made)
    finishes = start()
    if finishes is None:
        return None
    if len(finishes) != len(options):
        raise RuntimeError(f"start() returned {len(finishes)} functions for {len(options)} units")
    return [f if k is None else _storing(ctx, k, f) for k, f in zip(keys, finishes, strict=True)]


def _holds(cache: Any, key: str) -> bool:
    """Whether ``cache`` holds ``key``: ``key in cache`` (nothing counted as served), or for a cache with only ``get``
    and ``put`` (what the suites' protocol asks of one) its ``get``."""
    return key in cache if hasattr(cache, "__contains__") else cache.get(key) is not None


def _storing(ctx: Any, key: str, finish: Callable[[], dict]) -> Callable[[], dict]:
    """``finish`` storing its value in ``ctx.cache`` under ``key`` when it returns."""

    def store() -> dict:
        value = finish()
        ctx.cache.put(key, value)
        return value

    return store


class MemoryCache:
    """A process-local cache with the same interface (used when no output folder is given)."""

    def __init__(self) -> None:
        self._data: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        value = self._data.get(key)
        return json.loads(json.dumps(value)) if value is not None else None

    def put(self, key: str, value: dict) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"cache values must be dicts, got {type(value).__name__}")
        self._data[key] = to_jsonable(value)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))


class ResultCache:
    """Finished results as atomic JSON files under ``root`` (created on first write).

    ``get`` returns ``None`` for a missing key or a damaged file (by hand, or truncated by a crash: ``put``
    does not fsync); ``put`` overwrites. Files hold ``{"key": ..., "value": ...}`` so a hash collision can
    never return the wrong result.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        if root is None or str(root) == "":
            raise ValueError("ResultCache needs a folder path; pass out_dir/cache_dir explicitly")
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        """The file that stores ``key``: a readable slug plus a hash of the full key."""
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        slug = _SLUG.sub("_", key)[:80].strip("_") or "result"
        return self.root / f"{slug}-{digest}.json"

    def get(self, key: str) -> dict | None:
        path = self.path_for(key)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            self.misses += 1
            return None
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("value"), dict):
            self.misses += 1  # another key's record, or one edited by hand: computed again
            return None
        self.hits += 1
        return record["value"]

    def put(self, key: str, value: dict) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"cache values must be dicts, got {type(value).__name__}")
        atomic_write_json(self.path_for(key), {"key": key, "value": value}, durable=False)  # converts once

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> Iterator[str]:
        """Keys of every complete entry on disk."""
        if not self.root.is_dir():
            return iter(())
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                with open(p, encoding="utf-8") as f:
                    out.append(json.load(f)["key"])
            except (json.JSONDecodeError, KeyError, TypeError, OSError):
                continue
        return iter(out)

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def __repr__(self) -> str:
        return f"ResultCache({str(self.root)!r})"


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None, *, durable: bool = True) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file in the same folder, then ``os.replace``;
    ``durable``: fsync before the rename, see ``aprkit._io.atomic_write``)."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text, durable=durable)

