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
- ``model``: :func:`model_fingerprint`: the module tree as ``repr`` prints it (every submodule's type and
  settings, e.g. a wrapper's resize and crop), then every parameter and buffer, non-persistent ones included
  (names, dtypes, shapes and values; remembered per model object until a weight changes, see there). The
  user's ``model_id`` is a display label only and never part of a key. Input normalisation lives inside aprkit
  models as (non-persistent) buffers or module settings, so preprocessing is covered by the fingerprint;
- ``data``: the dataset identity (``aprkit.eval.engine.datasets.dataset_id``: the normalised spec with its
  split, a ``cache_id``, or a content hash of an in-memory set);
- the run settings that change numbers, added to every key from the evaluation context: ``limit`` (the
  first N images), ``seed``, ``amp`` (false, or the autocast dtype: float16 on CUDA, bfloat16 elsewhere) and
  ``num_classes`` (when given);
- the unit's own options, e.g. for a corruption cell the corruption name, severity, preset and
  ``aprkit.corruptions.corruption_version`` of a generated corruption, or the on-disk -C source's identity; for
  a whole suite every evaluation option. Values go through :func:`identity` (datasets by content id, specs
  with resolved paths, callables by ``cache_id``).

Not in keys: device, batch size, data-loader workers, world size (``torchrun``) and channels_last. They
change only the floating-point rounding of a forward pass (generated corruptions are seeded per image,
see ``suites/corruption.py``), so cells may be shared between such runs; each stored value records the
world size, batch size and device that produced it (``_produced_by``, kept by the runner) and
``results.json`` lists them. A unit whose inputs cannot be identified (e.g. a lambda as the -C source) is
computed every time and never cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import types
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..._io import atomic_write_text

__all__ = [
    "ResultCache", "MemoryCache", "Unidentifiable", "atomic_write_json", "cached", "identity", "model_fingerprint",
    "nested_get", "result_key", "to_jsonable", "RUN_SETTINGS",
]

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

#: options of the evaluation context that are part of every key (besides ``seed`` and ``amp``)
RUN_SETTINGS = ("limit", "num_classes")


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy values, paths and tuples to plain JSON types; non-finite floats become None."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # the common cases first
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if kind is list:
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a value of type {type(value).__name__} in the result cache (expected JSON data)")


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


def result_key(ctx: Any, unit: str, data: Any, **options: Any) -> str:
    """The cache key of one unit computed with ``ctx`` (an ``EvalContext``) on ``data`` (see the module docstring).

    ``data`` is a dataset spec, an id string (from ``dataset_id`` or a ``cache_id``), a dataset, or
    tensors; it is identified with ``dataset_id`` (strings) or :func:`identity`. ``options`` are the unit's own
    options; they must not repeat the run settings (``seed``, ``amp``, ``limit``, ``num_classes``), which every
    key takes from ``ctx``.
    """
    if not isinstance(unit, str) or not unit:
        raise ValueError(f"unit must be a non-empty string naming what was computed, got {unit!r}")
    from .datasets import dataset_id
    from .inference import amp_dtype

    amp = str(amp_dtype(torch.device(ctx.device))).removeprefix("torch.") if ctx.amp else False
    settings = {k: ctx.options.get(k) for k in RUN_SETTINGS} | {"seed": int(ctx.seed), "amp": amp}
    clash = sorted(set(options) & set(settings))
    if clash:
        raise ValueError(f"options {clash} are run settings that every key takes from the context; "
                         "give the unit's own value another name")
    if data is None or (isinstance(data, str) and not data):
        raise ValueError(f"data must identify a dataset (a spec, an id string or a dataset), got {data!r}")
    data_id = dataset_id(data) if isinstance(data, str) else identity(data)
    data_id = data_id if isinstance(data_id, str) else json.dumps(data_id, sort_keys=True)
    parts = {k: identity(v) for k, v in (settings | options).items()}
    opts = ",".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(parts.items()))
    return "|".join([unit, _model_key(ctx), data_id, opts])


def cached(ctx: Any, unit: str, data: Any, compute: Callable[[], dict], **options: Any) -> dict:
    """``compute()`` once per :func:`result_key`: return ``ctx.cache``'s entry when present, else compute and store it.

    Without a cache, or when a key part is :class:`Unidentifiable` (warned once), it just computes.
    """
    if ctx.cache is None:
        return compute()
    try:
        key = result_key(ctx, unit, data, **options)
    except Unidentifiable as err:
        warnings.warn(str(err), RuntimeWarning, stacklevel=2)
        return compute()
    hit = ctx.cache.get(key)
    if hit is not None:
        return hit
    value = compute()
    ctx.cache.put(key, value)
    return value


#: per model object: (signature of its weights' state, full fingerprint) of the last :func:`model_fingerprint`
_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def model_fingerprint(model: nn.Module, length: int = 16, *, reuse: bool = True) -> str:
    """Hex digest of everything in ``model`` that its outputs depend on: the module tree as ``repr`` prints it
    (submodule types and settings such as a preprocessing wrapper's resize, crop and interpolation; memory
    addresses are masked), every module's public attributes that are plain values (numbers, strings, and lists, tuples
    and dicts of them, e.g. a temperature or a mean), functions (``self.act = torch.tanh``; Python functions by name
    and code) or tensors (by value, like the weights), its forward (pre-)hooks (an observer hook counts too: the
    fingerprint cannot tell it from a test-time flip), and every parameter and buffer, non-persistent ones too (e.g. a
    normalisation's mean and std): names, dtypes, shapes and values. Keep counters that change in ``forward`` in
    ``_private`` attributes, else no result is reused.

    Hashing every weight takes a while for a large model (0.16 s for WRN-28-10 on a CPU), so the digest is
    remembered per model object with a signature of its state: the tree's text and each tensor's storage
    address, version counter, shape, strides, dtype and device. Every in-place change through autograd-visible
    tensors (an optimizer step, ``load_state_dict``, ``copy_`` under ``no_grad``) bumps the version
    counter and a replaced tensor has a new address, so the value is hashed again. PyTorch does not
    version writes through ``param.data`` (``p.data.copy_(...)``, as EMA helpers swap weights in): after such a write
    pass ``reuse=False``; ``evaluate`` and ``layer_sweep`` hash afresh once per call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from aprkit.models.normalize import unwrap_model

    model = unwrap_model(model)  # DDP / DataParallel / torch.compile wrappers: the same weights, the same digest (DDP
    # keeps attributes that change after a forward pass and differ per rank)
    state, tree = _model_state(model), _structure(model)
    sig = _state_signature(model, state, tree)
    if reuse and sig is not None:
        known = _FINGERPRINTS.get(model)
        if known is not None and known[0] == sig:
            return known[1][:length]
    digest = _hash_state(model, state, tree)
    if sig is not None:
        _FINGERPRINTS[model] = (sig, digest)
    return digest[:length]


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any, depth: int = 0) -> bool:
    """Numbers, strings and None, and non-empty lists, tuples and string-keyed dicts of them (nested a few levels; an
    empty container is often a cache that ``forward`` fills, e.g. LeViT's attention-bias cache)."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 4:
        return False
    if isinstance(value, (tuple, list)):
        return (bool(value) or isinstance(value, tuple)) and all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return bool(value) and all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _immutable(value: Any) -> bool:
    """Numbers, strings, None and tuples of them: values a function may hold that ``forward`` cannot change."""
    return isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(_immutable(v) for v in value))


def _const_text(c: Any) -> str:
    """A code constant as text that is the same in every process: nested code by content (not by file and line),
    frozensets sorted (their order follows ``PYTHONHASHSEED``)."""
    if isinstance(c, types.CodeType):
        return _code_digest(c)
    if isinstance(c, frozenset):
        return "frozenset(" + repr(sorted(map(_const_text, c))) + ")"
    if isinstance(c, tuple):
        return "(" + ",".join(map(_const_text, c)) + ")"
    return _ADDRESS.sub("0x?", repr(c))


def _code_digest(code: types.CodeType) -> str:
    """A hash of what ``code`` computes: its bytecode, names and constants (nested code recursed); its file name and
    line numbers are left out."""
    h = hashlib.sha1(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    h.update("|".join(map(_const_text, code.co_consts)).encode())
    return h.hexdigest()[:12]


def _value_text(v: Any) -> str:
    return _const_text(v) if _immutable(v) else type(v).__name__


def _callable_id(f: Any) -> str | None:
    """What a function attribute or hook computes, the same text in every process: its qualified name, for Python
    functions also a hash of its code and its immutable closure values and defaults (values a forward pass may change,
    such as a list an observer hook appends to, count by type only); for callable objects their class and plain
    public attributes. ``None`` for anything else."""
    if isinstance(f, functools.partial):
        inner = _callable_id(f.func)
        args = [_value_text(a) for a in f.args]
        kwargs = {k: _value_text(v) for k, v in sorted(f.keywords.items())}
        return f"partial({inner}, {args!r}, {kwargs!r})"
    if isinstance(f, types.MethodType):
        owner = f.__self__
        state = "" if isinstance(owner, nn.Module) else repr(
            {k: _value_text(v) for k, v in sorted(getattr(owner, "__dict__", {}).items()) if not k.startswith("_")})
        return f"{type(owner).__qualname__}{state}.{_callable_id(f.__func__)}"
    if isinstance(f, types.FunctionType):
        closure = [_value_text(c.cell_contents) for c in (f.__closure__ or ())]
        defaults = [_value_text(d) for d in (f.__defaults__ or ())]
        kwdefaults = {k: _value_text(v) for k, v in sorted((f.__kwdefaults__ or {}).items())}
        extra = hashlib.sha1(repr((closure, defaults, kwdefaults)).encode()).hexdigest()[:8]
        return f"{f.__module__}.{f.__qualname__}#{_code_digest(f.__code__)}{extra}"
    if isinstance(f, types.BuiltinFunctionType):  # torch.tanh, math.exp, a C method
        return f"{getattr(f, '__module__', None)}.{getattr(f, '__qualname__', repr(f))}"
    if callable(f) and not isinstance(f, (nn.Module, type)):
        attrs = {k: v for k, v in sorted(vars(f).items()) if not k.startswith("_") and _plain(v)} \
            if hasattr(f, "__dict__") else {}
        return f"{type(f).__module__}.{type(f).__qualname__}({attrs!r})"
    return None


def _structure(model: nn.Module) -> str:
    """The module tree as ``repr`` prints it plus every module's plain public attributes (numbers, strings, and lists,
    tuples and dicts of them: a temperature ``self.t = 1.5`` or a mean ``[0.5, 0.5, 0.5]`` that no ``extra_repr``
    shows; ``training`` aside), its function attributes (``self.act = torch.tanh``) and its forward (pre-)hooks, with
    memory addresses (``0x7f...`` of a function or object in some ``extra_repr``) masked so that the text is the same
    in every process."""
    lines = [repr(model)]
    for name, mod in model.named_modules():
        for k, v in sorted(vars(mod).items()):
            if k.startswith("_") or k == "training" or isinstance(v, (torch.Tensor, nn.Module)):
                continue  # tensors: hashed with the weights (_model_state)
            text = repr(v) if _plain(v) else _callable_id(v)
            if text is not None:
                lines.append(f"{name}.{k}={text}")
        for kind in ("_forward_pre_hooks", "_forward_hooks"):
            for hook in getattr(mod, kind, {}).values():
                lines.append(f"{name}.{kind}={_callable_id(hook)}")
    return _ADDRESS.sub("0x?", "\n".join(lines))


def _model_state(model: nn.Module) -> dict[str, Any]:
    """``state_dict`` (the tensors themselves, so that addresses and versions identify them) plus the
    non-persistent buffers, which ``state_dict`` leaves out but the forward pass uses."""
    state: dict[str, Any] = dict(model.state_dict(keep_vars=True))
    for name, buf in model.named_buffers():
        if name not in state:
            state[f"{name} (non-persistent)"] = buf
    for name, mod in model.named_modules():  # tensors kept as plain attributes (a gain, a mean), not registered
        for k, v in sorted(vars(mod).items()):
            if isinstance(v, torch.Tensor) and not k.startswith("_"):
                state[f"{name + '.' if name else ''}{k} (attribute)"] = v
    return state


def _state_signature(model: nn.Module, state: Mapping[str, Any], tree: str) -> tuple | None:
    """What identifies the current values of ``state`` without reading them, or None when a tensor has no
    version counter (made in ``inference_mode``: then the values are hashed every time)."""
    sig: list[Any] = [type(model).__name__, tree]
    for name, t in state.items():
        if isinstance(t, torch.Tensor):
            if t.is_inference():
                return None
            sig.append((name, t.data_ptr(), t._version, t.shape, t.stride(), t.dtype, t.device))
        else:
            sig.append((name, repr(t)))
    return tuple(sig)


def _hash_state(model: nn.Module, state: Mapping[str, Any], tree: str) -> str:
    """The full sha256 hex digest of ``model``'s class name, module tree ``tree`` (:func:`_structure`) and ``state``
    (every name, dtype, shape and value)."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(tree.encode())
    for name, t in state.items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


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

