"""Results and their reports: :class:`Results` (what ``evaluate`` returns), ``results.json``, ``report.md``
(figures as PNG files) and a self-contained ``report.html``.

One report can hold several models side by side: pass a :class:`Results` with several models, a list of
Results, or a mapping name -> Results. The report opens with a header (models, data, device, date, versions,
completeness) and one summary table built from every suite's headline measures (``Suite.headline``); each
suite then renders its own section (``Suite.report``) from the results of every model that ran it. Nothing
here knows a suite by name: the summary and ``Results.summary()`` come from the suites' ``headline`` alone.

A section that fails to render (a plotting or figure-write error) never passes silently: the report is
written with a note in that section (``results.json`` has the numbers), then :func:`write_report` raises
:class:`ReportError` naming every failed section, so a run that asked for a report exits non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._io import atomic_write_text
from ..engine.cache import atomic_write_json, to_jsonable
from ..suites import load_suites
from ..suites.base import Measure, generic_headline
from ..suites.options import suites_without
from .blocks import Paragraph, ReportSection, Table
from .header import header_items, limit_text, run_limits
from .render import HeaderItem, ReportDocument, render_html, render_markdown

__all__ = ["Results", "ReportError", "raise_failed", "write_report", "render_sections", "summary_section",
           "model_headline"]


@dataclass
class Results:
    """Results of one or more models: ``models[model_id][suite_name] -> dict`` plus run metadata."""

    models: dict[str, dict[str, dict]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return list(self.models)

    def __getitem__(self, suite: str) -> dict:
        """``results["corruption"]`` for a single-model run (use ``results.models[id][suite]`` otherwise)."""
        if len(self.models) != 1:
            raise KeyError(f"this Results holds {len(self.models)} models ({', '.join(self.models)}); "
                           f"use results.models[model_id][{suite!r}]")
        suites = next(iter(self.models.values()))
        if suite not in suites:
            raise KeyError(f"no results for suite {suite!r}; available: {', '.join(suites) or 'none'}")
        return suites[suite]

    def headlines(self) -> dict[str, list[Measure]]:
        """Each model's headline measures (``Suite.headline`` of every suite it ran), in suite order."""
        return {mid: model_headline(suites) for mid, suites in self.models.items()}

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Headline numbers per model, ``{model: {measure name: value}}`` (clean accuracy, mean corruption
        error, ECE, mean OOD AUROC per score, shape/phase bias, ...): the values of :meth:`headlines`."""
        return {mid: {m.name: m.value for m in measures} for mid, measures in self.headlines().items()}

    def to_dict(self) -> dict:
        return to_jsonable({"meta": self.meta, "models": self.models})

    def save(self, path: str | Path) -> Path:
        """Write ``{"meta", "models"}`` as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Results:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or "models" not in d:
            raise ValueError(f"{path} is not an aprkit results.json (expected keys 'meta' and 'models')")
        return cls(models=d["models"], meta=d.get("meta", {}))

    @classmethod
    def merge(cls, results: Sequence[Results] | Mapping[str, Results]) -> Results:
        """Combine several runs into one (for side-by-side reports); a mapping renames single-model runs."""
        merged = cls(meta={"runs": []})
        items = results.items() if isinstance(results, Mapping) else [(None, r) for r in results]
        for name, r in items:
            if not isinstance(r, Results):
                raise TypeError(f"expected Results objects to merge, got {type(r).__name__}")
            if name is not None and len(r.models) != 1:
                raise ValueError(f"cannot rename a run holding {len(r.models)} models to {name!r}; pass a list instead")
            meta = r.meta or {}
            for mid, suites in r.models.items():
                key = name or mid
                if key in merged.models:
                    raise ValueError(f"model id {key!r} appears twice; give the runs distinct names")
                merged.models[key] = suites
                if key != mid:
                    meta = _renamed(meta, mid, key)
            # a merged run's own runs join the list (nested, the header read only the outer level)
            merged.meta["runs"].extend(meta["runs"] if isinstance(meta.get("runs"), list) else [meta])
        return merged

    def write_report(self, out_dir: str | Path | None = None, title: str | None = None) -> dict[str, Path]:
        """Write results.json, report.md and report.html (see :func:`write_report`).

        Into an evaluation folder (its own, ``out_dir`` None; or one holding ``index.json``), where ``results.json``
        holds these models' results and others' (several evaluations into one folder add up), the report covers the
        folder's models, as the evaluation's own report does: rewriting it with this call's models alone dropped the
        others. Where the folder holds other numbers for one of these models (measured again since), or does not hold
        some of these results (a later evaluation replaced them), this raises instead of putting numbers back that
        the folder withdrew."""
        target = out_dir if out_dir is not None else self.out_dir
        if target is None:
            raise ValueError("no output folder: pass out_dir "
                             "(reports are never written to the current directory implicitly)")
        own = self.out_dir is not None and Path(target).resolve() == Path(self.out_dir).resolve()
        whole = self._folder_results(Path(target)) if own or (Path(target) / "index.json").is_file() else None
        self.paths = write_report(whole or self, target, title=title)
        return self.paths

    def _folder_results(self, folder: Path) -> Results | None:
        """The results of the evaluation folder ``folder`` where they hold this object's models, with the same numbers,
        and more; else None. Raises ValueError where the folder holds other numbers for one of its models, or not
        some of its results while holding others."""
        path = folder / "results.json"
        if not path.is_file():
            return None
        try:
            loaded = Results.load(path)
        except (OSError, ValueError):
            return None
        mine, held = self.to_dict()["models"], loaded.to_dict()["models"]
        stale = sorted({m for m, suites in mine.items() if m in held
                        for s, v in suites.items() if s in held[m] and held[m][s] != v})
        if stale:  # a later evaluation into the folder measured these again: rewriting would put the old numbers back
            raise ValueError(
                f"{path} holds other numbers for {', '.join(map(repr, stale))} than these results (a later evaluation "
                "into that folder measured them again); rewriting the folder's report from this object would put the "
                "old numbers back and drop the folder's other models. Pass out_dir to write these results elsewhere, "
                f"or rewrite the folder's report from its own file: Results.load({str(path)!r}).write_report("
                f"{str(folder)!r})")
        gone = sorted({m for m, suites in mine.items() for s in suites if s not in (held.get(m) or {})})
        if gone and held:  # the folder dropped them (its label now names other weights), or never held them (another
            # evaluation's folder): writing these would put numbers it does not hold there and drop what it holds
            raise ValueError(
                f"{path} does not hold these results of {', '.join(map(repr, gone))} (a later evaluation into that "
                "folder replaced them, or it is another evaluation's folder); writing them there would replace what "
                "it holds with numbers it does not. Pass another out_dir to write these results, or rewrite the "
                f"folder's report from its own file: Results.load({str(path)!r}).write_report({str(folder)!r})")
        if gone or held == mine:
            return None
        return Results(models=loaded.models, meta=loaded.meta, out_dir=folder)


def _renamed(meta: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    """``meta`` of a run whose model ``old`` is merged as ``new``: its per-model entries (specs, provenance, pending
    suites) under the new name, in every nested run too."""
    out = dict(meta)
    for key in ("models", "provenance", "pending"):
        value = out.get(key)
        if isinstance(value, Mapping) and old in value:
            out[key] = {new if k == old else k: v for k, v in value.items()}
    if isinstance(out.get("runs"), list):
        out["runs"] = [_renamed(m, old, new) if isinstance(m, Mapping) else m for m in out["runs"]]
    return out


class ReportError(RuntimeError):
    """One or more report sections failed to render; the files were written with a note in their place."""


def _as_results(results: Any) -> Results:
    if isinstance(results, Results):
        return results
    if isinstance(results, Mapping) and all(isinstance(v, Results) for v in results.values()):
        return Results.merge(results)
    if isinstance(results, Sequence) and not isinstance(results, str) and all(isinstance(v, Results) for v in results):
        return Results.merge(list(results))
    raise TypeError(f"expected Results, a list of Results or a mapping name -> Results, got {type(results).__name__}")


def write_report(results: Any, out_dir: str | Path, title: str | None = None, *, summary: ReportSection | None = None,
                 intro: Sequence[ReportSection] = (), header: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``report.html`` and ``figures/`` under ``out_dir``; return their paths.

    The report: title, header (models, data, device, date, versions, status; ``header`` adds or replaces lines,
    label -> text), ``summary`` (default: the table of every suite's headline measures), the ``intro`` sections,
    then one section per suite. A caller with its own summary (the demo's verdict table) passes it as
    ``summary``, so the report has one summary section."""
    if out_dir is None or str(out_dir) == "":
        raise ValueError("out_dir is required (reports are never written to the current directory implicitly)")
    res = _as_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or ("aprkit evaluation: " + " vs ".join(res.models or (res.meta or {}).get("pending") or {}))
    paths = {"json": res.save(out / "results.json"), "markdown": out / "report.md", "html": out / "report.html"}
    limitless = suites_without("limit")
    if summary is None:
        try:
            summary = summary_section(res.headlines())
            runs = res.meta.get("runs", [res.meta]) if isinstance(res.meta, Mapping) else []
            # among the suites that read a limit (a cue-conflict suite's every stimulus shares no measure with them)
            if summary is not None and any(len({repr(v) for s, v in run_limits(r, limitless).items()
                                                if s not in limitless}) > 1 for r in runs if isinstance(r, Mapping)):
                summary.blocks.append(Paragraph(
                    "The suites ran on different numbers of images (header: Images), so a measure that several suites "
                    "report (clean accuracy) is the first suite's value; each suite's section has its own."))
        except Exception as err:  # a malformed result: the report and the numbers are still written, then we raise
            summary = ReportSection("Summary", [Paragraph(f"Building the summary failed ({type(err).__name__}: {err}); "
                                                          "the numbers are in results.json.")], error=err)
    sections = [("summary", summary)] if summary is not None else []
    sections += [(sec.title, sec) for sec in intro] + render_sections(res, out / "figures")
    registry = load_suites()

    def images(suite: str, options: Mapping[str, Any]) -> str:
        cls = registry.get(suite)
        return cls.images_text(options) if cls is not None else limit_text(options.get("limit"))

    def setup(suite: str, options: Mapping[str, Any]) -> str:
        cls = registry.get(suite)
        return cls.setup_text(options) if cls is not None else ""

    # each cell-grid suite with its default corruptions (a run that named them reads the same as one that did not)
    grid = {name: list(cls.Options.model_fields["corruptions"].get_default(call_default_factory=True))
            if "corruptions" in cls.Options.model_fields else [] for name, cls in registry.items() if cls.cell_grid}
    # a run stopped before its first suite finished: the models asked for (the title names them too)
    ids = list(res.model_ids) or list((res.meta or {}).get("pending") or {})
    items = {item.label: item for item in header_items(ids, res.meta, limitless, images, setup, grid)}
    items.update({label: HeaderItem(label, str(text)) for label, text in (header or {}).items()})
    doc = ReportDocument(title, list(items.values()), [sec for _, sec in sections])
    atomic_write_text(paths["markdown"], render_markdown(doc, out))
    atomic_write_text(paths["html"], render_html(doc))
    raise_failed(sections, out)
    return paths


def model_headline(suites: Mapping[str, Any]) -> list[Measure]:
    """The headline measures of one model's results ``{suite name: result}``, in suite order.

    A measure declared by two suites (``clean_accuracy`` by corruption and calibration) is listed once, with
    the first value that is not None; a suite that is not installed contributes its top-level numbers."""
    registry = load_suites()
    out: dict[str, Measure] = {}
    for name, result in suites.items():
        measures = registry[name]().headline(result) if name in registry else generic_headline(name, result)
        for m in measures:
            if not isinstance(m, Measure):
                raise TypeError(f"suite {name!r}: headline() must return Measure objects, got {type(m).__name__}")
            if m.name not in out or (out[m.name].value is None and m.value is not None):
                out[m.name] = m
    return list(out.values())


def summary_section(headlines: Mapping[str, list[Measure]], title: str = "Summary") -> ReportSection | None:
    """One table, a row per headline measure and a column per model (None when there is no measure)."""
    first: dict[str, Measure] = {}
    values: dict[str, dict[str, Measure]] = {}
    for model, measures in headlines.items():
        for m in measures:
            first.setdefault(m.name, m)
            values.setdefault(m.name, {})[model] = m
    names = list(first)  # a measure no model could compute shows "-": leaving it out hid that it was asked for
    if not any(m.value is not None for n in names for m in values[n].values()):
        return None
    # "neither": a descriptive measure (shape or phase bias, follow rates), where "-" read as a missing value
    better = {True: "higher", False: "lower", None: "neither"}
    notes: list[str] = []  # a model's own caveat (a transplant site that follows B by construction) beside its value

    def cell(name: str, model: str) -> str:
        m = values[name].get(model)
        if m is None:
            return "-"
        if not m.note:
            return m.formatted()
        notes.append(f"{m.formatted()}* ({model}, {m.label}): {m.note}")
        return m.formatted() + "*"

    rows = [[first[n].display_label, better[first[n].higher_is_better] if first[n].direction_known else "unknown"]
            + [cell(n, model) for model in headlines]
            for n in names]
    table = Table(["measure", "better"] + list(headlines), rows,
                  notes=" ".join(["Each suite's headline measures (details in its section below); % values are "
                                  "percentages.", *notes]))
    return ReportSection(title, [table])


def render_sections(results: Any, fig_root: str | Path) -> list[tuple[str, ReportSection]]:
    """Render every suite present in ``results`` (a ``Results`` or a mapping model -> {suite: result}, models
    side by side); figures go to ``fig_root/<suite>/``.

    A section whose renderer raises becomes a note naming the error, with the exception kept in
    ``section.error`` (``write_report`` raises after writing them; so does ``raise_failed``)."""
    models: Mapping[str, Mapping[str, Any]] = getattr(results, "models", results)
    registry = load_suites()
    order: list[str] = []
    for suites in models.values():
        order += [s for s in suites if s not in order]
    sections = []
    for sname in order:
        per_model = {mid: suites[sname] for mid, suites in models.items() if sname in suites}
        fig_dir = Path(fig_root) / sname.replace("/", "_")
        fig_dir.mkdir(parents=True, exist_ok=True)
        if sname not in registry:
            note = Paragraph(f"(no report renderer: suite {sname!r} is not installed)")
            sections.append((sname, ReportSection(sname, [note])))
            continue
        try:
            section = registry[sname]().report(per_model, fig_dir)
            if not isinstance(section, ReportSection):
                raise TypeError(f"report() returned {type(section).__name__}, expected a ReportSection")
        except Exception as err:  # the other sections and the numbers are still written, then write_report raises
            section = ReportSection(sname, [Paragraph(f"Rendering this section failed ({type(err).__name__}: {err}); "
                                                      "the numbers are in results.json.")])
            section.error = err
        sections.append((sname, section))
    return sections


def raise_failed(sections: list[tuple[str, ReportSection]], out: Path) -> None:
    """Raise :class:`ReportError` naming every section of ``sections`` that failed to render."""
    failed = [(name, sec.error) for name, sec in sections if sec.error is not None]
    if failed:
        detail = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in failed)
        raise ReportError(f"report sections failed to render ({detail}); {out / 'report.md'} was written with a "
                          f"note in their place and the numbers are in {out / 'results.json'}") from failed[0][1]
