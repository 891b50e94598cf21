"""Which data each suite of an ``evaluate`` call reads (one dataset, or a mapping per suite), and the warnings about
``limit`` that are given before any work: a suite that reads no limit, a limit that would take the first classes of
a class-sorted dataset."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..suites import load_suites
from ..suites.options import suites_without
from .data_checks import class_sorted_limit

__all__ = ["data_for", "warn_if_limit_ignored", "warn_if_limit_takes_few_classes"]


def data_for(data: Any, suite: str) -> Any:
    """Per-suite data: a mapping ``{suite name: data, "default": data}`` or one dataset for every suite."""
    if not isinstance(data, Mapping):
        return data
    if suite in data:
        return data[suite]
    if "default" in data:
        return data["default"]
    raise ValueError(f"no data for suite {suite!r}: the data mapping has keys {sorted(data)}; "
                     f"add {suite!r} or 'default'")


def warn_if_limit_ignored(names: Sequence[str], limit: int | None) -> None:
    """Warn when a selected suite reads no ``limit`` (the cue-conflict suites score every stimulus): "the first N
    images of each dataset" would otherwise hold for some sections of the report and silently not for others."""
    if limit is None:
        return
    no_limit = suites_without("limit")
    ignored = [n for n in names if n in no_limit]
    if ignored:
        verb = "it scores" if len(ignored) == 1 else "they score"
        # any suite without the option (a user's too), so no word on what it measures
        warnings.warn(f"limit={limit} does not apply to {', '.join(ignored)}: {verb} every image of its data (a "
                      "subset would be another measurement)", RuntimeWarning, stacklevel=3)


def warn_if_limit_takes_few_classes(data: Any, limit: int | None, names: Sequence[str]) -> dict[str, str]:
    """Warn when ``limit`` ("the first N images") would evaluate a class-sorted dataset's first classes only: an image
    folder lists its images class by class, so ``folder:ROOT`` with ``limit=1000`` scored one class. Only suites
    ``names`` that take the first N images (``Suite.limit_takes_first``; the transplant suite spreads them) count.
    Returns the warning of each such suite (its results carry it into the report), one warning per dataset."""
    if limit is None:
        return {}
    registry, no_limit = load_suites(), suites_without("limit")
    relevant = [n for n in names if registry[n].limit_takes_first and n not in no_limit]
    if not relevant:
        return {}
    from aprkit.data.loading import attribute_labels

    from .datasets import as_dataset

    sources: dict[str, Any] = {}
    for n in relevant:  # the data these suites read (a per-suite mapping gives each its own)
        try:
            sources[n] = data_for(data, n)
        except ValueError:  # no data for it: the run reports that
            continue
    found: dict[int, str | None] = {}
    for d in {id(v): v for v in sources.values()}.values():
        try:
            labels = attribute_labels(as_dataset(d))
        except Exception:  # noqa: BLE001 - a best-effort warning: the suite opens the data and reports its errors
            labels = None
        found[id(d)] = message = class_sorted_limit(labels, limit) if labels is not None else None
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    return {n: m for n, d in sources.items() if (m := found[id(d)])}
