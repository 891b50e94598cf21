"""Text helpers that load nothing heavy (no torch): the reading of comma-separated list options and the
``did you mean`` fragment of error messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["comma_items", "nearest_names", "some_names"]


def comma_items(text: str) -> list[str]:
    """The items of comma-separated text, stripped, blanks dropped (``"fog, snow,"`` -> ``["fog", "snow"]``): how
    every list option given as text (CLI flags, YAML strings, recorded options) is read."""
    return [s.strip() for s in text.split(",") if s.strip()]


def nearest_names(name: str, valid: Sequence[str], n: int = 3) -> str:
    """A ``did you mean`` fragment for error messages (empty when nothing is close); case and ``-``/``_`` do not
    count against a match (``APR_SP`` -> ``'apr_sp'``)."""
    import difflib

    def fold(text: str) -> str:
        return str(text).lower().replace("-", "_")

    by_fold: dict[str, str] = {}
    for v in valid:
        by_fold.setdefault(fold(v), v)
    close = difflib.get_close_matches(fold(name), list(by_fold), n=n, cutoff=0.5)
    if not close and len(fold(name)) >= 3:  # a leading part: 'jpeg' -> 'jpeg_compression'
        close = [v for v in by_fold if v.startswith(fold(name))][:n]
    return f" (did you mean {', '.join(repr(by_fold[c]) for c in close)}?)" if close else ""


def some_names(names: Iterable[str], most: int = 8) -> str:
    """Up to ``most`` of ``names`` for an error message, and how many more there are (``"none"`` for none)."""
    names = list(names)
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more if names else "none"
