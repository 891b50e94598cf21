"""Results and reports: :class:`Results`, :func:`write_report` (``results.json``, ``report.md``, a
self-contained ``report.html`` and ``figures/``) and the pieces it is made of.

- :mod:`.results`: :class:`Results`, :func:`write_report`, :class:`ReportError`, the summary table from the
  suites' headline measures and one section per suite;
- :mod:`.header`: the header in words (models, data, device, date, versions, completeness);
- :mod:`.render`: Markdown and HTML from the same :class:`ReportDocument` through the Jinja2 templates in
  ``templates/``.

Section content is structured (:mod:`aprkit.eval.blocks`): tables, paragraphs and figures, never Markdown.
"""

from __future__ import annotations

from .header import header_items
from .render import HeaderItem, ReportDocument, markdown_block, render_html, render_markdown
from .results import ReportError, Results, model_headline, raise_failed, render_sections, summary_section, write_report

__all__ = ["Results", "ReportError", "raise_failed", "write_report", "render_sections", "summary_section",
           "model_headline", "header_items", "HeaderItem", "ReportDocument", "render_markdown", "render_html",
           "markdown_block"]
