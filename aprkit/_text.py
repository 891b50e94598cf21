"""Text helpers that load nothing heavy (no torch): the reading of comma-separated list options and the
``did you mean`` fragment of error messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["comma_items", "nearest", "nearest_names", "some_names", "add_note"]


def comma_items(text: str) -> list[str]:
    """The items of comma-separated text, stripped, blanks dropped (``"fog, snow,"`` -> ``["fog", "snow"]``): how
    every list option given as text (CLI flags, YAML strings, recorded options) is read."""
    return [s.strip() for s in text.split(",") if s.strip()]


def nearest_names(name: str, valid: Sequence[str], n: int = 3) -> str:
    """A ``did you mean`` fragment for error messages (empty when nothing is close): :func:`nearest`'s names."""
    close = nearest(name, valid, n)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def nearest(name: str, valid: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``valid`` close to ``name``, closest first, as ``valid`` spells them; case and ``-``/``_`` do
    not count against a match (``APR_SP`` -> ``apr_sp``), and a leading part matches (``jpeg``)."""
    import difflib

    def fold(text: str) -> str:
        return str(text).lower().replace("-", "_")

    by_fold: dict[str, str] = {}
    for v in valid:
        by_fold.setdefault(fold(v), v)
    close = difflib.get_close_matches(fold(name), list(by_fold), n=n, cutoff=0.5)
    if not close and len(fold(name)) >= 3:  # a leading part: 'jpeg' -> 'jpeg_compression'
        close = [v for v in by_fold if v.startswith(fold(name))][:n]
    return [by_fold[c] for c in close]


def some_names(names: Iterable[str], most: int = 8) -> str:
    """Up to ``most`` of ``names`` for an error message, and how many more there are (``"none"`` for none)."""
    names = list(names)
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more if names else "none"


def add_note(err: BaseException, note: str) -> None:
    """Add ``note`` to ``err``'s notes (``BaseException.add_note`` of Python 3.11, by hand on 3.10): what the CLI's
    one-line error prints before the message (which model, entry or data it was)."""
    setattr(err, "__notes__", [*getattr(err, "__notes__", []), note])  # noqa: B010 - the 3.10 spelling of add_note
