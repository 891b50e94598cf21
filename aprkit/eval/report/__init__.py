"""Results and reports: :class:`Results`, :func:`write_report` (``results.json``, ``report.md``, a
self-contained ``report.html`` and ``figures/``) and the pieces it is made of.

- :mod:`.blocks`: section content as data (headings, paragraphs, tables, figures; never Markdown), which the
  suites build;
- :mod:`.plotting`: the suites' figures (``matplotlib.figure.Figure``, written as PNG);
- :mod:`.results`: :class:`Results`, :func:`write_report`, :class:`ReportError`, the summary table from the
  suites' headline measures and one section per suite;
- :mod:`.header`: the header in words (models, data, device, date, versions, completeness);
- :mod:`.render`: Markdown and HTML from the same :class:`ReportDocument` through the Jinja2 templates in
  ``templates/``.

Public names are imported lazily on first access: the suites import :mod:`.blocks` while :mod:`.results` imports
the suites, so this ``__init__`` imports neither.
"""

from __future__ import annotations

from ..._lazy import lazy_getattr

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["Results", "ReportError", "raise_failed", "write_report", "render_sections", "summary_section",
                     "model_headline"], "aprkit.eval.report.results"),
    "header_items": "aprkit.eval.report.header",
    **dict.fromkeys(["HeaderItem", "ReportDocument", "render_markdown", "render_html", "markdown_block"],
                    "aprkit.eval.report.render"),
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
