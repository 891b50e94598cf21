"""Where the corruption suite's -C cells come from when they are not generated: a -C set on disk (a dataset spec such
as ``"cifar10-c:ROOT"``) or a callable ``(corruption, severity) -> dataset``; its presence check before any work and
whether ``aprkit corrupt`` wrote it."""

from __future__ import annotations

from typing import Any

__all__ = ["open_corrupted", "c_spec_root", "check_cells_present_for", "written_by_aprkit", "source_origin"]


def open_corrupted(source: Any, corruption: str, severity: int | None):
    """The on-disk corrupted dataset for one cell (a spec like ``"cifar10-c:ROOT"`` or a callable); ``severity=None``:
    a spec's five severities stacked, which only a reader of stacked files opens (``ValueError`` otherwise)."""
    if callable(source) and not isinstance(source, str):
        if severity is None:
            raise ValueError("a callable -C source opens one cell at a time; give a severity")
        return source(corruption, severity)
    if isinstance(source, str):
        from aprkit.data import get_dataset

        return get_dataset(source, "test", corruption=corruption,
                           severity=None if severity is None else int(severity))
    raise TypeError("options['corrupted'] must be a -C dataset spec such as 'cifar10-c:ROOT' or a callable "
                    f"(corruption, severity) -> dataset, got {type(source).__name__}")


def c_spec_root(spec: str) -> tuple[str, str] | None:
    """``(kind, root)`` of an on-disk -C set's spec (``?`` options dropped), or ``None`` for a spec the reader will
    refuse itself or one without a root (the data root's copy, which its reader checks and may download)."""
    from aprkit.data.registry import parse_spec, split_spec_options

    try:
        kind, root = parse_spec(split_spec_options(spec)[0])
    except (TypeError, ValueError):
        return None
    return (kind, root) if root else None


def check_cells_present_for(spec: str, grid: list[tuple[str, int]]) -> None:
    """Refuse an on-disk -C set (``spec``) lacking some cells of ``grid`` before any work (else the run stopped at the
    first missing cell after computing every one before it)."""
    from aprkit.data.corrupted import check_cells_present
    from aprkit.data.registry import DATASET_KINDS

    found = c_spec_root(spec)
    if found is not None:
        kind, root = found
        check_cells_present(root, grid, "folder" if getattr(DATASET_KINDS[kind], "folder_cells", False) else "cifar")


def written_by_aprkit(spec: str) -> bool:
    """Whether the -C folder of the dataset spec ``spec`` is one ``aprkit corrupt`` wrote (its manifest)."""
    from pathlib import Path

    from aprkit.corruptions.manifest import read_manifest

    found = c_spec_root(spec)
    return found is not None and read_manifest(Path(found[1]).expanduser()) is not None


def source_origin(source: Any) -> str:
    """``"provided"`` for a callable or dataset source, unless it says it generates its cells (``origin =
    "generated"``: the demo's shared cells); no other value is taken from it."""
    return "generated" if getattr(source, "origin", None) == "generated" else "provided"
