"""One ``evaluate`` call's record of its output folder (:class:`EvalRun`): the folder's suite index, this run's
entries, the suites still to do or failed, ``results.json`` and the report rewritten from them, and the run's
metadata (``meta``)."""

from __future__ import annotations

import datetime
import json
import platform
import sys
import time
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...distributed import is_main_process
from ..report.results import Results, write_report
from .cache import READ_SETTINGS
from .fingerprint import MODEL_PACKAGES, package_version
from .outdir import SuiteIndex, merge_provenance

__all__ = ["EvalRun", "describe", "now"]


def now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class EvalRun:
    """One ``evaluate`` call's view of its output folder: the folder's suite index, this run's entries and
    the (model label, suite) pairs still to do."""

    out: Path | None
    index: SuiteIndex
    this_run: SuiteIndex
    started: float
    settings: dict[str, Any]
    pending: list[tuple[str, str]] = field(default_factory=list)
    unloadable: str | None = None  # the label of a model whose loading raised (nothing of it was started)
    load_error: str | None = None  # what its loading raised (results.json's load_failed says so)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)  # (model label, suite) -> the error it raised
    warned_unlike: set[str] = field(default_factory=set)  # suites whose unlike results in the folder were warned of

    def finish(self, entry: dict, option_names: Collection[str], reads: Collection[str] = READ_SETTINGS) -> None:
        """Record a finished suite (``option_names``: the options it reads, which its entry's ``options`` hold;
        ``reads``: the run settings its numbers depend on, ``Suite.reads``)."""
        self._warn_unlike(entry, "limit" in option_names, "seed" in reads)
        for idx in (self.index, self.this_run):
            idx.add(entry, option_names, reads)
        self.pending = [p for p in self.pending if p != (entry["model"], entry["suite"])]
        self.write()

    def _warn_unlike(self, entry: Mapping[str, Any], takes_limit: bool, takes_seed: bool = True) -> None:
        """Warn (once per suite) when the folder holds the suite's results of other models measured on other data,
        with another seed or on another number of images (a suite that ``takes_limit``): the report sets them side
        by side."""
        if self.out is None or entry["suite"] in self.warned_unlike:
            return

        def setup(e: Mapping[str, Any]) -> tuple[str, str, str]:
            options = e.get("options")
            limit = options.get("limit") if takes_limit and isinstance(options, Mapping) else None
            return repr(e.get("data")), repr(e.get("seed") if takes_seed else None), repr(limit)

        mine = setup(entry)
        others = sorted({str(e["model"]) for e in self.index.entries if e["suite"] == entry["suite"]
                         and e["model"] != entry["model"] and setup(e) != mine})
        if others:
            self.warned_unlike.add(entry["suite"])
            warnings.warn(f"{self.out} holds {entry['suite']} results of {', '.join(others)} measured on other data, "
                          "with another seed or on another number of images than this run's: the report sets them "
                          "side by side (its header says what each used); evaluate into another folder to keep "
                          "them apart", RuntimeWarning, stacklevel=3)

    def refresh_report(self) -> None:
        """Rewrite the report from what the folder's index holds now (pending suites included): never a report of
        withdrawn numbers, so where nothing finished is left (a label's old weights were dropped, a first run cut off
        before its first suite) it only says what is pending, or is removed when nothing is. A section that fails to
        render warns here (the run goes on; its final report raises)."""
        if self.out is None or not is_main_process() or not self.settings.get("report", True):
            return
        with self.index.synced():
            if self.index.entries or self.pending:
                try:
                    write_report(self.written(), self.out, title=self.settings.get("title"))
                except Exception as err:  # noqa: BLE001 - the run's results matter more than this early report
                    warnings.warn(f"could not refresh the report in {self.out} ({err}); it is written at the end",
                                  RuntimeWarning, stacklevel=2)
            else:
                for name in ("report.md", "report.html"):
                    (self.out / name).unlink(missing_ok=True)

    def written(self) -> Results:
        """What ``results.json`` holds: every suite finished in the output folder (index order)."""
        return Results(models=self.index.models(), meta=self.meta(self.index), out_dir=self.out)

    def write(self) -> None:
        """Save the folder's index and write ``results.json`` from it (as merged with other runs' changes). A run
        without a report (``report=False``) removes the folder's earlier report, which would no longer match."""
        if self.out is not None and is_main_process():
            with self.index.synced():  # the folder's index as it is now: another run's suites are kept
                self.written().save(self.out / "results.json")
            if not self.settings.get("report", True):
                self._drop_report()

    def _drop_report(self) -> None:
        """Remove report.md/report.html left by an earlier run (they showed numbers results.json no longer holds)."""
        assert self.out is not None
        old = [self.out / name for name in ("report.md", "report.html") if (self.out / name).exists()]
        for path in old:
            path.unlink(missing_ok=True)
        if old:
            warnings.warn(f"removed {', '.join(p.name for p in old)} from {self.out}: written by an earlier run, they "
                          "no longer match results.json (this run writes no report; to write one from the folder's "
                          f"results: Results.load({str(self.out / 'results.json')!r}).write_report({str(self.out)!r}))",
                          RuntimeWarning, stacklevel=3)

    def final_report(self, title: str | None) -> Any:
        """Write ``results.json`` and the report of the folder's merged index (raises when a section fails)."""
        assert self.out is not None  # (called with an output folder only)
        with self.index.synced():
            return write_report(self.written(), self.out, title=title)

    def _failed_by_model(self, pending: Mapping[str, list[str]]) -> dict[str, dict[str, str]]:
        """``{model: {suite: error}}`` of this run's suites that raised and are still not finished."""
        out: dict[str, dict[str, str]] = {}
        for (label, sname), error in self.failed.items():
            if sname in pending.get(label, []):
                out.setdefault(label, {})[sname] = error
        return out

    def meta(self, index: SuiteIndex) -> dict:
        """Run metadata; ``world_size``/``batch_size``/``device``/``amp``/``channels_last``/``threads`` list what
        produced the results shown."""
        import aprkit

        st = self.settings
        prov = index.provenance()
        entries = [p for suites in prov.values() for p in suites.values()]
        produced = merge_provenance(p.get("produced_by") for p in entries)
        datas = {json.dumps(p.get("data"), sort_keys=True) for p in entries}
        options = _union([p["options"] for p in entries if isinstance(p.get("options"), Mapping)])
        # what the numbers shown cannot be read without (e.g. a limit that took a class-sorted set's first classes)
        caveats = list(dict.fromkeys([*(c for p in entries for c in p.get("caveats", [])), *_older(prov)]))
        pending: dict[str, list[str]] = {}
        # the folder's index also remembers what an earlier, interrupted run left undone
        for label, sname in dict.fromkeys([*self.pending, *(index.pending if index is self.index else [])]):
            pending.setdefault(label, []).append(sname)
        return {
            "aprkit": aprkit.__version__,
            "torch": torch.__version__,
            # the image library the generated corruptions' JPEG and pixelate steps run through, when loaded
            **_pillow_versions(),
            # the model libraries imported (a release can change a model's code; a model's fingerprint names its own)
            **{pkg: v for pkg in MODEL_PACKAGES if pkg in sys.modules and (v := package_version(pkg))},
            "python": platform.python_version(),
            "date": now(),
            "seconds": round(time.time() - self.started, 2),
            # a model that failed to load leaves a finished folder complete, but not one where nothing finished
            "complete": not pending and (bool(entries) or self.load_error is None),
            "pending": pending,
            **({"failed": failed} if (failed := self._failed_by_model(pending)) else {}),
            **({"load_failed": {self.unloadable: self.load_error}} if self.load_error is not None else {}),
            "models": {label: next(iter(suites.values())).get("spec") for label, suites in prov.items()},
            "suites": list(dict.fromkeys(s for suites in prov.values() for s in suites)),
            "data": (json.loads(datas.pop()) if len(datas) == 1
                     else describe(st["data"]) if not datas else "mixed (see provenance)"),
            "options": (options if options is not None else "mixed (see provenance)") if entries
                       else describe(st["opts"]),
            "device": produced.get("device", [st["dev"].type]),
            "amp": sorted({bool(p.get("amp")) for p in entries}) or [st["amp"]],
            # unknown ([]) for results cached before it was recorded; this run's own when nothing was cached
            "channels_last": produced.get("channels_last",
                                          [] if entries or "channels_last" not in st else [st["channels_last"]]),
            "batch_size": produced.get("batch_size", [st["batch_size"]]),
            "world_size": produced.get("world_size", [st["world"]]),
            # unknown ([]) for results cached before it was recorded
            "threads": produced.get("threads", [] if entries else [torch.get_num_threads()]),
            **({"caveats": caveats} if caveats else {}),
            "provenance": prov,
        }


def _older(prov: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """A caveat per suite whose results in the folder were computed by another version of it than this aprkit's (a
    folder where an upgrade evaluated only other suites kept them: a fixed bug's numbers, shown as current)."""
    from ..suites import load_suites

    registry = load_suites()
    older: dict[str, list[str]] = {}
    for label, suites in prov.items():
        for sname, p in suites.items():
            recorded, cls = p.get("suite_version"), registry.get(sname)
            if cls is None or str(recorded if recorded is not None else "1") == cls.version:
                continue  # an entry from before versions were recorded: version 1 (the version every suite began at)
            was = f"its version {recorded}" if recorded is not None else "an aprkit that recorded no suite versions"
            older.setdefault(f"{sname} (computed by {was}; now {cls.version})", []).append(label)
    return [f"the {what} results of {', '.join(labels)} come from an older aprkit: evaluate the suite again to "
            "update them" for what, labels in older.items()]


def describe(value: Any) -> Any:
    """JSON-able description of data/options for metadata (datasets by type name)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    return type(value).__name__


def _union(options: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The suites' recorded options as one mapping (each entry holds the options its suite reads), or ``None`` when
    two entries give one key other values (models or runs measured with other settings)."""
    out: dict[str, Any] = {}
    for opts in options:
        for k, v in opts.items():
            if k in out and json.dumps(out[k], sort_keys=True) != json.dumps(v, sort_keys=True):
                return None
            out[k] = v
    return out


def _pillow_versions() -> dict[str, str]:
    """Pillow's and its libjpeg's versions when Pillow is loaded (:func:`aprkit.corruptions.manifest.environment`'s
    reading), else nothing."""
    if "PIL" not in sys.modules:
        return {}
    from ...corruptions.manifest import environment

    versions = environment("cpu")["versions"]
    return {k: str(versions[k]) for k in ("pillow", "libjpeg") if versions.get(k)}
