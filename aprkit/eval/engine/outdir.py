"""Bookkeeping of one evaluation run and its output folder: the run's cache view and the suite index.

:class:`RunCache` wraps the result cache for one ``evaluate`` call: ``resume=False`` ignores old
entries, under ``torchrun`` only rank 0 writes and every rank sees the same hits, and every stored value
carries ``_produced_by`` (the world sizes, batch sizes, devices and memory formats that produced it). Cells are keyed by
what changes their numbers (:func:`aprkit.eval.engine.cache.result_key`), not by how they were batched or
sharded, so a single-process run may reuse cells of a ``torchrun`` run; ``_produced_by`` keeps such
reuse visible: the runner collects it per suite and ``results.json`` lists it (``meta.provenance`` and
the ``world_size`` / ``batch_size`` / ``device`` / ``channels_last`` lists of ``meta``).

:class:`SuiteIndex` is ``<out>/index.json``: one entry per (model label, suite) finished in that folder,
holding the suite's result, its cache key, the model's weights fingerprint and its provenance.
``results.json`` and the report are rebuilt from it, so evaluations with different suites (or
models) into one folder add up instead of replacing each other. A label evaluated again with other
weights drops that label's older entries (with a warning); their cells stay in the cache.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...distributed import group_info, is_main_process
from .cache import READ_SETTINGS, atomic_write_json, to_jsonable

__all__ = ["RunCache", "SuiteIndex", "PRODUCED_BY", "merge_provenance", "check_out_folder"]

#: key of the provenance record inside every stored cache value
PRODUCED_BY = "_produced_by"
_PROVENANCE_FIELDS = ("world_size", "batch_size", "device", "channels_last", "threads")


def merge_provenance(records: Iterable[Mapping[str, Any] | None]) -> dict[str, list]:
    """Union of provenance records ``{"world_size": [...], "batch_size": [...], "device": [...],
    "channels_last": [...], "threads": [...]}`` (sorted lists; a field no record has is left out)."""
    out: dict[str, set] = {f: set() for f in _PROVENANCE_FIELDS}
    for rec in records:
        for f in _PROVENANCE_FIELDS:
            values = (rec or {}).get(f)
            out[f].update(values if isinstance(values, list) else [] if values is None else [values])
    return {f: sorted(v, key=str) for f, v in out.items() if v}


def check_out_folder(out: Path) -> None:
    """Refuse an output folder whose ``results.json`` no evaluation wrote there (no ``index.json`` beside it): the
    run would overwrite it with its own results."""
    if (out / "results.json").is_file() and not (out / "index.json").exists():
        raise FileExistsError(
            f"{out / 'results.json'} exists but {out / 'index.json'} does not: it was not written by an aprkit "
            "evaluation into this folder (or its index was deleted), and this run would overwrite it; choose another "
            "output folder or move the file away")


class RunCache:
    """The cache as one run sees it (see the module docstring); ``collect()`` returns and resets the merged
    provenance of every entry served or stored since the last call."""

    def __init__(self, backend: Any, resume: bool, produced_by: Mapping[str, Any]) -> None:
        self.backend = backend
        self.resume = resume
        self._producer = dict(produced_by)
        self.produced_by = merge_provenance([produced_by])
        self.mem: dict[str, dict] = {}
        self._seen: list[Mapping[str, Any]] = []
        #: cached units this run read from the backend (an earlier run's) and units it computed and stored
        self.reused = self.computed = 0
        self._served: set[str] = set()
        self.snapshot: set[str] | None = None
        if group_info()[1] > 1:
            torch.distributed.barrier()
            self.snapshot = set(backend.keys()) if resume else set()

    def produced_with(self, **fields: Any) -> None:
        """Settings of this run that hold from now on (the model's memory format) in what it stores."""
        self._producer.update(fields)
        self.produced_by = merge_provenance([self._producer])

    def _earlier(self, key: str) -> bool:
        """Whether an earlier run's entry of ``key`` in the backend may be served: on resume, and under ``torchrun``
        only one every process saw at the start (the snapshot)."""
        return self.resume and (self.snapshot is None or key in self.snapshot)

    def get(self, key: str) -> dict | None:
        if key in self.mem:
            value = json.loads(json.dumps(self.mem[key]))
        elif not self._earlier(key):
            return None
        else:
            value = self.backend.get(key)
            if value is None:
                return None
            if key not in self._served:  # a unit that two suites read (a corruption cell) counts once
                self._served.add(key)
                self.reused += 1
        self._seen.append(value.pop(PRODUCED_BY, None) or {})
        return value

    def __contains__(self, key: str) -> bool:
        """Whether :meth:`get` would serve ``key`` (nothing counted as served)."""
        return key in self.mem or (self._earlier(key) and key in self.backend)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Store ``value`` stamped with this run's world size, batch size, device and memory format."""
        stored = dict(to_jsonable(value))
        stored[PRODUCED_BY] = self.produced_by
        self.mem[key] = stored
        self.computed += 1
        if is_main_process():
            self.backend.put(key, stored)
        self._seen.append(self.produced_by)

    def collect(self) -> dict[str, list]:
        seen, self._seen = self._seen, []
        return merge_provenance(seen)


class SuiteIndex:
    """Finished suites of one output folder (``<out>/index.json``), or of this run only when ``out`` is None.

    Changes (:meth:`want`, :meth:`claim`, :meth:`add`) apply at once to this object and are replayed by :meth:`save`
    onto the file as it is then, under a lock on ``index.json.lock``: two processes evaluating into one folder add up
    (each one's save used to overwrite the other's entries with the index it had read at its start)."""

    VERSION = 1

    def __init__(self, out: str | Path | None) -> None:
        self.path = Path(out) / "index.json" if out is not None else None
        #: (model label, suite) pairs asked for in this folder and not finished yet (an interrupted run's too)
        self.pending: list[tuple[str, str]] = []
        self.entries: list[dict[str, Any]] = []
        self.entries, self.pending = self._load() or ([], [])
        self._ops: list[tuple] = []  # this object's changes not yet written

    def _load(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]] | None:
        """The file's entries and pending pairs (none when it does not exist), or ``None`` when it is damaged."""
        if self.path is None or not self.path.is_file():
            return [], []
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            entries = data["entries"]
            if data.get("version") != self.VERSION or not all(
                    isinstance(e, dict) and {"model", "suite", "value"} <= set(e) for e in entries):
                raise ValueError(f"expected version {self.VERSION} entries with model, suite and value")
            pending = [(str(m), str(s)) for m, s in data.get("pending", [])]
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"ignoring the damaged suite index {self.path} ({err}); "
                          "results.json lists this run's suites only",
                          RuntimeWarning, stacklevel=3)
            return None
        return entries, pending

    def _do(self, op: tuple) -> list[str]:
        """Apply ``op`` to this object (and keep it for :meth:`save`); the suites a claim dropped."""
        self._ops.append(op)
        self.entries, self.pending, dropped = _apply(op, self.entries, self.pending)
        return dropped

    def want(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Record (model label, suite) pairs a run is about to compute (its model loaded): pending until :meth:`add`
        finishes them, also for later runs into the folder when this one is interrupted."""
        self._do(("want", [tuple(p) for p in pairs]))

    def claim(self, label: str, fingerprint: str) -> list[str]:
        """Drop ``label``'s entries made with other weights than ``fingerprint`` (a reused label); returns the dropped
        suites."""
        stale = self._do(("claim", label, fingerprint))
        if stale:
            warnings.warn(
                f"{self.path}: model label {label!r} previously named other weights or model code; dropping its "
                f"earlier results ({', '.join(stale)}) from results.json (their cells stay in the cache)",
                RuntimeWarning, stacklevel=3)
        return stale

    def add(self, entry: Mapping[str, Any], option_names: Collection[str] | None = None,
            reads: Collection[str] = READ_SETTINGS) -> None:
        """Record a finished suite, replacing an older entry of the same model label and suite (with a warning when
        that one was measured with other options, seed, mixed precision or data: its numbers leave ``results.json``).
        ``option_names``: the options the suite reads, the only ones compared (an older aprkit recorded the whole
        run's options with every suite); ``reads``: of the seed and the amp, those its numbers depend on."""
        entry = to_jsonable(dict(entry))  # as the index holds it (JSON types), so that equal settings compare equal
        old = next((e for e in self.entries if (e["model"], e["suite"]) == (entry["model"], entry["suite"])), None)
        if old is not None and option_names is not None and isinstance(old.get("options"), Mapping):
            old = {**old, "options": {k: v for k, v in old["options"].items() if k in option_names}}
        changed = [k for k in _SETTINGS if old is not None and k in old and old.get(k) != entry.get(k)
                   and (k not in ("seed", "amp") or k in reads)]
        if old is not None and changed and self.path is not None:
            was = "; ".join(f"{k} {_setting(old, k)}" for k in changed)
            now = "; ".join(f"{k} {_setting(entry, k)}" for k in changed)
            warnings.warn(
                f"{self.path}: {entry['suite']} of {entry['model']!r} was recorded with other settings ({was}); this "
                f"run's ({now}) replace it in results.json and the report (its cells stay in the cache: evaluate the "
                "union of both, e.g. all the corruptions, to show them together, or use another --out to keep both)",
                RuntimeWarning, stacklevel=3)
        self._do(("add", entry))

    @contextlib.contextmanager
    def synced(self) -> Iterator[None]:
        """Hold the folder's lock with this object's changes written onto the index file as it is now (another
        process may have added to it) and this object showing the merged index: ``results.json`` and the report
        written inside the block cannot drop another run's suites. Without a folder (or off rank 0), nothing to do."""
        if self.path is None or not is_main_process():
            yield
            return
        from aprkit.data.download import file_lock

        with file_lock(self.path):
            disk = self._load()
            if disk is None:  # damaged: what this object knows (it includes its changes) replaces it
                entries, pending = self.entries, self.pending
            else:
                entries, pending = disk
                for op in self._ops:
                    entries, pending, _ = _apply(op, entries, pending)
            atomic_write_json(self.path, {"version": self.VERSION, "entries": entries,
                                          "pending": [list(p) for p in pending]})
            self.entries, self.pending, self._ops = entries, pending, []
            yield

    def save(self) -> None:
        """Write this object's changes onto the index file as it is now (see :meth:`synced`)."""
        with self.synced():
            pass

    def models(self) -> dict[str, dict[str, dict]]:
        """``{model label: {suite: result}}`` in the order the labels first appear."""
        out: dict[str, dict[str, dict]] = {}
        for e in self.entries:
            out.setdefault(e["model"], {})[e["suite"]] = e["value"]
        return out

    def provenance(self) -> dict[str, dict[str, dict]]:
        """``{model label: {suite: everything in the entry but the result}}``."""
        out: dict[str, dict[str, dict]] = {}
        for e in self.entries:
            out.setdefault(e["model"], {})[e["suite"]] = {
                k: v for k, v in e.items() if k not in ("model", "suite", "value")}
        return out


#: what a suite entry was measured with, compared when another run replaces it
_SETTINGS = ("options", "seed", "amp", "data")


def _setting(entry: Mapping[str, Any], key: str) -> str:
    """One setting of a suite entry in a line, for messages (options as ``corruptions=['fog']; limit=50``)."""
    value = entry.get(key)
    if key == "options" and isinstance(value, Mapping):
        return "; ".join(f"{k}={v}" for k, v in sorted(value.items()) if v is not None) or "default"
    return repr(value)


def _apply(op: tuple, entries: list[dict[str, Any]], pending: list[tuple[str, str]]
           ) -> tuple[list[dict[str, Any]], list[tuple[str, str]], list[str]]:
    """``(entries, pending, dropped suites)`` after one :class:`SuiteIndex` change."""
    kind = op[0]
    if kind == "want":
        return entries, pending + [p for p in dict.fromkeys(op[1]) if p not in pending], []
    if kind == "claim":
        _, label, fingerprint = op
        stale = [e for e in entries if e["model"] == label and e.get("fingerprint") != fingerprint]
        return [e for e in entries if not any(e is x for x in stale)], pending, [e["suite"] for e in stale]
    entry = op[1]
    key = (entry["model"], entry["suite"])
    # an entry evaluated again keeps its place: the folder's models and suites keep their order in the report
    # (appended, a rerun of the first model moved it last and swapped every column)
    at = next((i for i, e in enumerate(entries) if (e["model"], e["suite"]) == key), None)
    replaced = entries + [entry] if at is None else entries[:at] + [entry] + entries[at + 1:]
    return replaced, [p for p in pending if p != key], []
