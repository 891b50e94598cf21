"""Results and their reports: :class:`Results` (what ``evaluate`` returns), ``results.json``, ``report.md``
(figures as PNG files) and a self-contained ``report.html``.

One report can hold several models side by side: pass a :class:`Results` with
several models, a list of Results, or a mapping name -> Results. Each suite renders its own section
(``Suite.report``) from the results of every model that ran it; figures are written with matplotlib's
Agg backend (imported lazily by the suites) and embedded in the HTML as base64 PNGs.

A section that fails to render (a plotting or figure-write error) never passes silently: the report is
written with a note in that section (``results.json`` has the numbers), then :func:`write_report` raises
:class:`ReportError` naming every failed section, so a run that asked for a report exits non-zero.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from .cache import atomic_write_json, nested_get, to_jsonable
from .suites import ReportSection, load_suites

__all__ = ["Results", "ReportError", "raise_failed", "write_report", "render_sections", "render_markdown", "render_html", "markdown_to_html"]


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
            raise KeyError(f"this Results holds {len(self.models)} models ({', '.join(self.models)}); use results.models[model_id][{suite!r}]")
        suites = next(iter(self.models.values()))
        if suite not in suites:
            raise KeyError(f"no results for suite {suite!r}; available: {', '.join(suites) or 'none'}")
        return suites[suite]

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Headline numbers per model (clean accuracy, mean corruption error, ECE, mean OOD AUROC, ...)."""
        out: dict[str, dict[str, float | None]] = {}
        for mid, suites in self.models.items():
            row: dict[str, float | None] = {}
            cor, cal, ood = (suites.get(k) or {} for k in ("corruption", "calibration", "ood"))
            if cor:
                row.update(clean_accuracy=nested_get(cor, "clean", "accuracy"), mean_error=cor.get("mean_error"),
                           mean_corruption_error=cor.get("mean_corruption_error"), mce=cor.get("mce"))
            if cal:
                if row.get("clean_accuracy") is None:
                    row["clean_accuracy"] = nested_get(cal, "clean", "accuracy")
                row.update({k: nested_get(cal, "clean", k) for k in ("ece", "rms", "nll", "brier")})
                row["corrupted_ece"] = nested_get(cal, "corrupted", "ece")
            for score, metrics in (ood.get("mean") or {}).items():
                row[f"ood_auroc_{score}"] = nested_get(metrics, "auroc")
            for name, r in suites.items():
                if name not in ("corruption", "calibration", "ood") and isinstance(r, Mapping):
                    for k, v in r.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            row[f"{name}.{k}"] = float(v)
            out[mid] = row
        return out

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
            for mid, suites in r.models.items():
                key = name or mid
                if key in merged.models:
                    raise ValueError(f"model id {key!r} appears twice; give the runs distinct names")
                merged.models[key] = suites
            merged.meta["runs"].append(r.meta)
        return merged

    def write_report(self, out_dir: str | Path | None = None, title: str | None = None) -> dict[str, Path]:
        """Write results.json, report.md and report.html (see :func:`write_report`)."""
        target = out_dir if out_dir is not None else self.out_dir
        if target is None:
            raise ValueError("no output folder: pass out_dir (reports are never written to the current directory implicitly)")
        self.paths = write_report(self, target, title=title)
        return self.paths


class ReportError(RuntimeError):
    """One or more report sections failed to render; the files were written with a note in their place."""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
code{background:#f4f4f4;padding:0 .2em}.meta{color:#666;font-size:.85em}
"""


def _as_results(results: Any) -> Results:
    if isinstance(results, Results):
        return results
    if isinstance(results, Mapping) and all(isinstance(v, Results) for v in results.values()):
        return Results.merge(results)
    if isinstance(results, Sequence) and not isinstance(results, str) and all(isinstance(v, Results) for v in results):
        return Results.merge(list(results))
    raise TypeError(f"expected Results, a list of Results or a mapping name -> Results, got {type(results).__name__}")


def render_sections(results: Any, fig_root: str | Path) -> list[tuple[str, ReportSection]]:
    """Render every suite present in ``results`` (models side by side); figures go to ``fig_root/<suite>/``.

    A section whose renderer raises becomes a note naming the error, with the exception kept in
    ``section.error`` (:func:`write_report` raises after writing them; so does :func:`raise_failed`)."""
    res = _as_results(results)
    registry = load_suites()
    order: list[str] = []
    for suites in res.models.values():
        order += [s for s in suites if s not in order]
    sections = []
    for sname in order:
        per_model = {mid: suites[sname] for mid, suites in res.models.items() if sname in suites}
        fig_dir = Path(fig_root) / sname.replace("/", "_")
        fig_dir.mkdir(parents=True, exist_ok=True)
        if sname not in registry:
            sections.append((sname, ReportSection(sname, f"(no report renderer: suite {sname!r} is not installed)")))
            continue
        try:
            section = registry[sname]().report(per_model, fig_dir)
        except Exception as err:  # the other sections and the numbers are still written, then write_report raises
            section = ReportSection(sname, f"Rendering this section failed ({type(err).__name__}: {err}); the numbers are in results.json.")
            section.error = err
        sections.append((sname, section))
    return sections


def _summary_table(res: Results) -> str:
    from .suites.corruption import markdown_table

    summary = res.summary()
    keys = ["clean_accuracy", "mean_corruption_error", "mean_error", "mce", "ece", "corrupted_ece"]
    keys += sorted({k for row in summary.values() for k in row if k.startswith("ood_auroc_")})
    keys = [k for k in keys if any(summary[m].get(k) is not None for m in summary)]
    if not keys:
        return ""
    rows = [[k] + ["-" if summary[m].get(k) is None else f"{100 * summary[m][k]:.2f}" for m in summary] for k in keys]
    return "## Summary (%)\n\n" + markdown_table(["metric"] + list(summary), rows) + "\n"


def render_markdown(res: Results, sections: list[tuple[str, ReportSection]], base: Path, title: str) -> str:
    """The Markdown report; figures are linked relative to ``base``."""
    parts = [f"# {title}\n", _meta_line(res) + "\n", _summary_table(res)]
    for _, sec in sections:
        parts.append(f"## {sec.title}\n\n{sec.markdown}\n")
        for fig in sec.figures:
            rel = Path(fig).resolve().relative_to(base.resolve()) if Path(fig).resolve().is_relative_to(base.resolve()) else Path(fig)
            parts.append(f"![{Path(fig).stem}]({rel.as_posix()})\n")
    return "\n".join(parts)


def render_html(res: Results, sections: list[tuple[str, ReportSection]], title: str) -> str:
    """A self-contained HTML report with figures embedded as base64 PNGs."""
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{html.escape(_meta_line(res))}</p>"]
    summary = _summary_table(res)
    if summary:
        body.append(markdown_to_html(summary))
    for _, sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body.append(markdown_to_html(sec.markdown))
        for fig in sec.figures:
            data = base64.b64encode(Path(fig).read_bytes()).decode("ascii")
            body.append(f"<img alt='{html.escape(Path(fig).stem)}' src='data:image/png;base64,{data}'>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _meta_line(res: Results) -> str:
    m = res.meta
    runs = m.get("runs", [m])
    first = runs[0] if runs else {}
    bits = [f"models: {', '.join(res.models)}"]
    for k in ("data", "device", "world_size", "date", "aprkit", "torch"):
        v = first.get(k)
        if v:
            bits.append(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    if first.get("complete") is False:
        bits.append("INCOMPLETE (pending: " + ", ".join(f"{m}: {', '.join(s)}" for m, s in (first.get("pending") or {}).items()) + ")")
    return "; ".join(bits)


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t


def markdown_to_html(md: str) -> str:
    """Convert the Markdown subset the suites emit (headings, pipe tables, lists, paragraphs) to HTML."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, body = rows[0], [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body) + "</tbody></table>")
        elif re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append(f"<li>{_inline(lines[i].strip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith("!["):
            i += 1  # figures are embedded separately
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("|", "#")) and not re.match(r"\s*[-*] ", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def write_report(results: Any, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``report.html`` and ``figures/`` under ``out_dir``; return their paths."""
    if out_dir is None or str(out_dir) == "":
        raise ValueError("out_dir is required (reports are never written to the current directory implicitly)")
    res = _as_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or ("aprkit evaluation: " + " vs ".join(res.models))
    paths = {"json": res.save(out / "results.json"), "markdown": out / "report.md", "html": out / "report.html"}
    sections = render_sections(res, out / "figures")
    _write_text(paths["markdown"], render_markdown(res, sections, out, title))
    _write_text(paths["html"], render_html(res, sections, title))
    raise_failed(sections, out)
    return paths


def raise_failed(sections: list[tuple[str, ReportSection]], out: Path) -> None:
    """Raise :class:`ReportError` naming every section of ``sections`` that failed to render."""
    failed = [(name, sec.error) for name, sec in sections if sec.error is not None]
    if failed:
        detail = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in failed)
        raise ReportError(f"report sections failed to render ({detail}); {out / 'report.md'} was written with a note in "
                          f"their place and the numbers are in {out / 'results.json'}") from failed[0][1]


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)
