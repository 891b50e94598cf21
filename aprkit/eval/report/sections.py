"""The report's sections: one per suite (``Suite.report``) and the summary table built from the suites'
headline measures (``Suite.headline``); nothing here knows a suite by name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..blocks import Paragraph, ReportSection, Table
from ..suites import load_suites
from ..suites.base import Measure, generic_headline

__all__ = ["model_headline", "summary_section", "render_sections"]


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
    names = [n for n in first if any(m.value is not None for m in values[n].values())]
    if not names:
        return None
    better = {True: "higher", False: "lower", None: "-"}
    rows = [[first[n].display_label, better[first[n].higher_is_better]]
            + [values[n][model].formatted() if model in values[n] else "-" for model in headlines] for n in names]
    table = Table(["measure", "better"] + list(headlines), rows,
                  notes="Each suite's headline measures (details in its section below); % values are percentages.")
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
            sections.append((sname, ReportSection(sname, [Paragraph(f"(no report renderer: suite {sname!r} is not installed)")])))
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
