"""The content of a report section as data: headings, paragraphs, tables and figures (no Markdown strings).

Suites build a :class:`ReportSection` from these blocks; :mod:`aprkit.eval.report` renders the same blocks
to Markdown and to HTML through its Jinja2 templates. Inline text is a sequence of :class:`Span` (plain,
``strong``, ``em`` or ``code``): emphasis is explicit data, never Markdown syntax parsed back out of a string,
so ``*`` or ``|`` in a label is just a character in both outputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Span", "Inline", "strong", "em", "code", "spans", "Heading", "Paragraph", "Table", "Figure", "Block",
           "ReportSection", "pct"]

Style = Literal["plain", "strong", "em", "code"]
_NUMBER = re.compile(r"[\d\s.,+\-–±%/()]*\d[\d\s.,+\-–±%/()]*")
_STYLES = ("plain", "strong", "em", "code")


@dataclass(frozen=True)
class Span:
    """A run of text with one style."""

    text: str
    style: Style = "plain"

    def __post_init__(self) -> None:
        if self.style not in _STYLES:
            raise ValueError(f"unknown span style {self.style!r}; expected one of {', '.join(_STYLES)}")
        if not isinstance(self.text, str):
            raise TypeError(f"span text must be a string, got {type(self.text).__name__}")


#: inline content: a string (plain text), a Span, a number (printed with ``str``) or a sequence of these
Inline = str | Span | int | float | Sequence[str | Span | int | float]


def strong(text: str) -> Span:
    return Span(str(text), "strong")


def em(text: str) -> Span:
    return Span(str(text), "em")


def code(text: str) -> Span:
    return Span(str(text), "code")


def spans(value: Inline) -> tuple[Span, ...]:
    """``value`` as a tuple of spans (strings and numbers become plain spans)."""
    if isinstance(value, Span):
        return (value,)
    if isinstance(value, str):
        return (Span(value),) if value else ()
    if isinstance(value, bool) or value is None:
        raise TypeError(f"report text must be a string, Span or number, got {value!r}")
    if isinstance(value, (int, float)):
        return (Span(str(value)),)
    if isinstance(value, Sequence):
        return tuple(s for part in value for s in spans(part))
    raise TypeError(f"report text must be a string, Span, number or a sequence of them, got {type(value).__name__}")


@dataclass
class Heading:
    """A sub-heading inside a section (one level below the section title)."""

    text: str


@dataclass
class Paragraph:
    """A paragraph of inline text (``Paragraph(["see ", code("results.json"), "."])``)."""

    text: Inline

    def __post_init__(self) -> None:
        self.text = spans(self.text)


@dataclass
class Table:
    """A table: ``headers`` and ``rows`` of cells (inline text); ``caption`` above it, ``notes`` below it."""

    headers: Sequence[Inline]
    rows: Sequence[Sequence[Inline]]
    caption: str = ""
    notes: Inline = ""

    def __post_init__(self) -> None:
        self.headers = [spans(h) for h in self.headers]
        if not self.headers:
            raise ValueError("a table needs at least one column header")
        checked = []
        for i, row in enumerate(self.rows):
            if isinstance(row, (str, Span)) or len(row) != len(self.headers):
                raise ValueError(f"table row {i} has {1 if isinstance(row, (str, Span)) else len(row)} cells, "
                                 f"expected {len(self.headers)} (one per header)")
            checked.append([spans(c) for c in row])
        self.rows = checked
        self.notes = spans(self.notes)

    @property
    def numeric(self) -> list[bool]:
        """Per column: whether every cell is a number or ``-`` (missing), so the column is right-aligned."""
        def num(cell: tuple[Span, ...]) -> bool | None:
            text = "".join(s.text for s in cell).replace("pp", "").strip()
            if text in ("", "-", "–"):
                return None
            return bool(_NUMBER.fullmatch(text))

        cols = []
        for j in range(len(self.headers)):
            kinds = [num(row[j]) for row in self.rows]  # type: ignore[arg-type]
            cols.append(all(k is not False for k in kinds))  # a column of "-" only is a missing number
        return cols


@dataclass
class Figure:
    """A PNG file shown in the report (embedded as base64 in the HTML, linked from the Markdown)."""

    path: Path
    caption: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)


Block = Heading | Paragraph | Table | Figure


@dataclass
class ReportSection:
    """One section of the report: a title and its blocks, in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    error: BaseException | None = None  # set by the report writer when rendering this section failed

    def __post_init__(self) -> None:
        for b in self.blocks:
            if not isinstance(b, (Heading, Paragraph, Table, Figure)):
                raise TypeError(f"section {self.title!r}: blocks must be Heading, Paragraph, Table or Figure, "
                                f"got {type(b).__name__}")

    @property
    def figures(self) -> list[Path]:
        """The PNG files of the section's figures."""
        return [b.path for b in self.blocks if isinstance(b, Figure)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage for a table cell (``"-"`` for None)."""
    return "-" if x is None else f"{100 * x:.{digits}f}"


def num(x: float | None, digits: int = 3) -> str:
    """A number for a table cell with ``digits`` decimals (``"-"`` for None)."""
    return "-" if x is None else f"{x:.{digits}f}"
