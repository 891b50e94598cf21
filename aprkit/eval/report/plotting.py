"""Figures for reports: ``matplotlib.figure.Figure`` objects saved straight to PNG.

No ``pyplot`` and no global backend switch: a bare :class:`matplotlib.figure.Figure` renders with the Agg
canvas when saved, so making a report never changes the backend (or the open figures) of the program that
asked for it, e.g. a notebook. matplotlib is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure", "grouped_bars", "plot_text", "series_color"]


def new_figure(width: float, height: float) -> Figure:
    """A new figure of ``width`` x ``height`` inches (add axes with ``fig.subplots(...)``)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100, tight: bool = True) -> Path:
    """Lay out (``tight_layout``) and write ``fig`` as a PNG at ``path`` (atomically; parent folders created)."""
    if tight:
        fig.tight_layout()
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))


def bar_height(v: float | None) -> float:
    """A bar's height: NaN (matplotlib draws no bar) for a value that was not measured, never 0."""
    return float("nan") if v is None else float(v)


def file_stem(name: str) -> str:
    """A file name stem for a free-form label (a model id): safe characters only, plus a short hash of the label so
    that labels differing only in other characters do not share a file (no ``/`` or ``..`` reaches the path)."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return f"{safe[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


#: labels longer than this are shortened in the middle in figures (a 48-character timm name squeezed the axes)
PLOT_LABEL_CHARS = 36


def plot_text(text: object) -> str:
    """``text`` (a model id, a data set name) as matplotlib shows it literally: ``$`` escaped (no mathtext, which
    renders ``$x$`` as math and fails on unbalanced TeX), a leading ``_`` (legends drop such labels) after a
    space, and shortened in the middle beyond :data:`PLOT_LABEL_CHARS` characters, with a 4-digit hash of the whole
    (the tables give it whole)."""
    t = str(text)
    if len(t) > PLOT_LABEL_CHARS:  # the head, the tail and a short hash: names differing in the middle stay apart
        import hashlib

        t = t[:PLOT_LABEL_CHARS - 19] + "…" + t[-12:] + " #" + hashlib.sha1(t.encode()).hexdigest()[:4]
    t = t.replace("$", r"\$")
    return " " + t if t.startswith("_") else t


def series_color(i: int) -> Any:
    """The colour of the ``i``-th model in a figure: matplotlib's ten default colours, then the ten lighter shades
    of ``tab20`` (an eleventh model took the first one's colour), then again."""
    import matplotlib

    if i % 20 < 10:
        return f"C{i % 10}"
    return matplotlib.colormaps["tab20"](2 * (i % 10) + 1)


def grouped_bars(ax: Any, series: Mapping[str, Sequence[float]], n_groups: int) -> None:
    """Draw one bar per model in each of ``n_groups`` groups, side by side (``series``: model -> values)."""
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(n_groups)]
        ax.bar(xs, list(values), width, label=plot_text(name), color=series_color(i))
