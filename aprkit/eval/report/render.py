"""Rendering a report document (title, header, sections of blocks) to Markdown and HTML with Jinja2.

Both outputs come from the same :class:`ReportDocument` through the package's templates
(``templates/report.md.j2`` and ``templates/report.html.j2``; the block macros are in ``blocks.*.j2``). The
HTML template is autoescaped; the Markdown template escapes Markdown's special characters in every piece of
text, so a label is printed as written in both. Figures are linked relative to the report in Markdown and
embedded as base64 PNGs in the HTML (a self-contained file).
"""

from __future__ import annotations

import base64
import functools
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blocks import Block, Figure, Heading, Paragraph, ReportSection, Table

__all__ = ["HeaderItem", "ReportDocument", "render_markdown", "render_html", "markdown_block", "md_escape"]


@dataclass(frozen=True)
class HeaderItem:
    """One line of the report's header: ``Models: standard, apr-sp``."""

    label: str
    text: str


@dataclass
class ReportDocument:
    """What a report shows: its title, header lines and sections (the summary first), in order."""

    title: str
    header: list[HeaderItem] = field(default_factory=list)
    sections: list[ReportSection] = field(default_factory=list)


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~&$])")  # & (an entity like &amp; is decoded), $ (math on GitHub)
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword underscores never emphasise


def md_escape(text: Any) -> str:
    """``text`` with Markdown's inline syntax characters backslash-escaped (one line; ``#`` escaped at the start)."""
    t = " ".join(str(text).splitlines())  # every line ending CommonMark knows (a \r ended a table row too)
    t = _MD_UNDERSCORE.sub(r"\\_", _MD_SPECIAL.sub(r"\\\1", t))
    return "\\" + t if t.startswith(("#", "+ ", "- ")) else t  # a heading or list marker at a line start


def _md_code(text: Any) -> str:
    t = " ".join(str(text).splitlines())
    fence = "``" if "`" in t else "`"
    return f"{fence} {t} {fence}" if fence == "``" else f"`{t}`"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aprkit.eval.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(md=md_escape, md_code=_md_code, data_uri=_data_uri)
    env.tests.update(heading=lambda b: isinstance(b, Heading), paragraph=lambda b: isinstance(b, Paragraph),
                     table=lambda b: isinstance(b, Table), figure=lambda b: isinstance(b, Figure))
    return env


def _link(base: Path):
    def link(path: Path) -> str:
        p, b = Path(path).resolve(), Path(base).resolve()
        rel = (p.relative_to(b) if p.is_relative_to(b) else Path(os.path.relpath(p, b))).as_posix()
        return urllib.parse.quote(rel)  # spaces and parentheses end a Markdown link target

    return link


def render_markdown(doc: ReportDocument, base: str | os.PathLike[str]) -> str:
    """The Markdown report; figures are linked relative to the folder ``base`` (where report.md goes)."""
    return _environment().get_template("report.md.j2").render(doc=doc, link=_link(Path(base)))


def render_html(doc: ReportDocument) -> str:
    """A self-contained HTML report (figures embedded as base64 PNGs)."""
    return _environment().get_template("report.html.j2").render(doc=doc)


def markdown_block(block: Block, base: str | os.PathLike[str] = ".") -> str:
    """One block as Markdown (e.g. a :class:`~aprkit.eval.report.blocks.Table` printed by a command-line tool)."""
    module = _environment().get_template("blocks.md.j2").make_module({"link": _link(Path(base))})
    return str(module.block(block)).strip("\n")
