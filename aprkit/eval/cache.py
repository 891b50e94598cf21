"""On-disk result cache: one atomic JSON file per finished unit of work.

A unit is e.g. "model X on dataset D under corruption c at severity s": its key is a canonical string
built by :func:`make_key` from those parts (and every option that changes the number). Each finished
unit is written as ``<root>/<slug>-<hash>.json`` via a temporary file and ``os.replace``, so a run that
is killed at any moment leaves only complete files; rerunning with the same cache skips them.

The model part of a key is the user-given name or :func:`model_fingerprint` (a hash of the state_dict),
so two different checkpoints never share cached numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from .._io import atomic_write_text

__all__ = ["ResultCache", "MemoryCache", "atomic_write_json", "make_key", "model_fingerprint", "nested_get", "to_jsonable"]

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


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


def make_key(model_id: str, dataset: str, corruption: str | None = None, severity: int | None = None, **extra: Any) -> str:
    """Canonical cache key ``model|dataset|corruption|severity|k=v,...`` (extra options sorted by name)."""
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty string identifying the data, got {dataset!r}")
    opts = ",".join(f"{k}={json.dumps(to_jsonable(v), sort_keys=True)}" for k, v in sorted(extra.items()))
    return "|".join([model_id, dataset, corruption or "clean", str(severity if severity is not None else 0), opts])


def model_fingerprint(model: nn.Module, length: int = 16) -> str:
    """Hex digest of the model's class name and state_dict (names, dtypes, shapes and values)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(t).encode())
    return h.hexdigest()[:length]


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

    ``get`` returns ``None`` for a missing key (or a file damaged by hand); ``put`` overwrites. Files
    hold ``{"key": ..., "value": ...}`` so a hash collision can never return the wrong result.
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
        if not isinstance(record, dict) or record.get("key") != key:
            self.misses += 1
            return None
        self.hits += 1
        return record["value"]

    def put(self, key: str, value: dict) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"cache values must be dicts, got {type(value).__name__}")
        atomic_write_json(self.path_for(key), {"key": key, "value": to_jsonable(value)})

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


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text)

