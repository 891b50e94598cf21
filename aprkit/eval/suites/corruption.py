"""Corruption robustness: clean accuracy plus accuracy/error per corruption x severity.

Corrupted images come from a -C dataset on disk (option ``corrupted``, e.g. ``"cifar10-c:ROOT"``;
CIFAR-10-C ``.npy`` files are memory-mapped) or are generated on the fly with ``aprkit.corruptions``
from the clean test set (any dataset). Each (corruption, severity) cell is one cached unit holding
accuracy, error, NLL, Brier, ECE, RMS calibration error and reliability bins, so the calibration suite
reuses the same forward passes. Summary numbers:

- ``mean_corruption_error``: the CIFAR convention, the mean error over the 15 benchmark corruptions x 5
  severities (only when all 75 cells were evaluated; ``mean_error`` is the mean over the evaluated cells).
- The four extra corruptions (speckle noise, Gaussian blur, spatter, saturate) are held out, as in CIFAR-10-C and
  ImageNet-C, where they are validation data: evaluated alongside benchmark ones they are reported per cell and per
  corruption but left out of every mean over corruptions (``mean_error``, ``per_severity``,
  ``relative_robustness``, the calibration suite's corrupted means; ``held_out`` names them); evaluated alone, they
  make the means (:func:`summary_corruptions`).
- ``mce`` / ``relative_mce``: ImageNet-C mCE normalised by the published AlexNet errors (preset
  ``"imagenet"`` with all 15 x 5 cells).
- ``relative_robustness``: mean corrupted accuracy / clean accuracy.

Generated corruptions are seeded per image: image ``i`` of a cell depends on (seed, corruption, severity,
preset, i) only, so the numbers are the same for every batch size, worker count and ``torchrun`` world size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...distributed import is_main_process
from ..engine.datasets import as_dataset
from .base import EvalContext, Measure, ReportSection, Suite, register_suite
from .corruption_cells import CELL_VERSION, cell_summary, evaluate_cell, evaluate_cells, start_cell
from .corruption_generated import STORED_QUALITY, geometry_caveat, stored_quality, warn_geometry
from .corruption_options import (
    CorruptionOptions,
    CorruptionResult,
    _benchmark,
    _default_preset,
    expected_classes,
    summary_corruptions,
)
from .corruption_sources import open_corrupted as _open_corrupted
from .corruption_sources import source_origin as _source_origin
from .corruption_sources import written_by_aprkit as _written_by_aprkit

__all__ = ["CorruptionSuite", "CorruptionOptions", "CorruptionResult", "evaluate_cell", "evaluate_cells",
           "start_cell", "expected_classes",
           "cell_summary", "CELL_VERSION", "MEAN_CELL_ERROR"]

#: the label of the plain mean error over the cells run (reported instead of mCE when they are not the full grid)
MEAN_CELL_ERROR = "mean error over the evaluated corruption cells"


def _mce_cifar(cells: dict, bench: list[str]) -> float:
    from .. import metrics as M

    return M.mean_corruption_error({c: [cells[c][str(s)]["error"] for s in range(1, 6)] for c in bench})


#: ImageNet-C's clean set: the ImageNet-1k validation images, whose per-corruption AlexNet errors normalise mCE
IMAGENET_CLASSES, IMAGENET_VAL_IMAGES = 1000, 50_000


def _mce_refusal(classes: int | None, n_clean: int) -> str | None:
    """Why mCE is not defined for this data (None when it is): AlexNet's errors are those of the 1000 ImageNet
    classes on all 50,000 validation images, so another dataset, a class subset or a ``limit`` has no baseline."""
    if classes != IMAGENET_CLASSES or n_clean != IMAGENET_VAL_IMAGES:
        return (f"mCE is not reported: it normalises by AlexNet's ImageNet-C errors, defined for the "
                f"{IMAGENET_CLASSES} ImageNet classes on all {IMAGENET_VAL_IMAGES:,} validation images; this data has "
                f"{classes if classes is not None else 'unnamed'} classes and {n_clean:,} images (the mean error is "
                "reported instead)")
    return None


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


@register_suite("corruption")
class CorruptionSuite(Suite[CorruptionOptions]):
    """Clean and corrupted accuracy, mean corruption error (CIFAR), mCE (ImageNet-C)."""

    Options = CorruptionOptions
    cell_grid = True
    version = str(CELL_VERSION)

    def run(self, ctx: EvalContext, data: Any) -> CorruptionResult:
        opts = self.options(ctx)
        corruptions, severities = opts.grid()
        grid = [(c, s) for c in corruptions for s in severities]

        def pairs() -> None:  # a -C set that cannot pair with the clean set fails before the clean pass
            from aprkit.data.corrupted import check_matches_clean

            check_matches_clean(_open_corrupted(opts.corrupted, *grid[0]), as_dataset(data), opts.limit,
                                f"the -C set of {grid[0][0]}-{grid[0][1]}")

        caveat = geometry_caveat(ctx.model, as_dataset(data)) if grid and not opts.corrupted else None
        warn_geometry(caveat)
        results = evaluate_cells(ctx, data, opts, [(None, None), *grid],
                                 before=pairs if grid and opts.corrupted else None)
        clean = next(results)
        cells: dict[str, dict[str, dict]] = {}
        from tqdm.auto import tqdm

        bar = tqdm(results, total=len(grid), desc=f"{ctx.model_id}: corruptions", unit="cell",
                   disable=not ctx.progress or not grid or not is_main_process())
        for (c, s), r in zip(grid, bar, strict=True):
            cells.setdefault(c, {})[str(s)] = {k: r[k] for k in ("n", "accuracy", "error", "nll", "ece")}
        summary = summary_corruptions(corruptions)
        errors = [cells[c][str(s)]["error"] for c in summary for s in severities]
        per_corruption = {c: _mean([v["error"] for v in row.values()]) for c, row in cells.items()}
        per_severity = {str(s): _mean([cells[c][str(s)]["error"] for c in summary]) for s in severities}
        full = set(_benchmark()) <= set(corruptions) and sorted(severities) == [1, 2, 3, 4, 5]
        bench = _benchmark()
        mean_err = _mean(errors)
        result: CorruptionResult = {
            "clean": {k: clean[k] for k in ("n", "accuracy", "error")},
            "cells": cells,
            "per_corruption": per_corruption,
            "per_severity": per_severity,
            "mean_error": mean_err,
            "held_out": [c for c in corruptions if c not in summary],
            "mean_corruption_error": _mce_cifar(cells, bench) if full else None,
            "relative_robustness": ((1 - mean_err) / clean["accuracy"]
                                    if mean_err is not None and clean["accuracy"] > 0 else None),
            "complete": full,
            "origin": ("none" if not grid else "generated" if not opts.corrupted
                       else "disk" if isinstance(opts.corrupted, str)
                       else _source_origin(opts.corrupted)),
            "preset": opts.preset or _default_preset(as_dataset(data)),
            "mce": None,
            "relative_mce": None,
            "mce_note": None,
        }
        if caveat:  # kept with the numbers (results.json, the report's header)
            result["caveats"] = [caveat]
        if full and result["preset"] == "imagenet":
            result["mce_note"] = _mce_refusal(expected_classes(opts, as_dataset(data)), clean["n"])
        if full and result["preset"] == "imagenet" and result["mce_note"] is None:
            from .. import metrics as M

            errs = {c: [cells[c][str(s)]["error"] for s in range(1, 6)] for c in bench}
            result["mce"] = M.mce(errs, baseline="alexnet")
            result["relative_mce"] = M.relative_mce(errs, clean["error"], baseline="alexnet")
            if result["origin"] == "generated":
                stored, published = stored_quality(opts.jpeg_quality, "imagenet"), STORED_QUALITY["imagenet"]
                how = ("stored as JPEG quality 85 as those were, with other random draws" if stored == published
                       else f"stored as JPEG quality {stored}, those at {published}" if stored
                       else f"whose images were also saved as JPEG, quality {published}")
                result["mce_note"] = (f"mCE here is from aprkit-generated cells, not the published ImageNet-C files "
                                      f"({how}): close to, not the same as, published mCE figures")
            elif result["origin"] == "disk" and _written_by_aprkit(opts.corrupted):
                result["mce_note"] = ("mCE here is from cells aprkit corrupt wrote (its manifest.json says so), not "
                                      "the published ImageNet-C files: close to, not the same as, published mCE "
                                      "figures")
        return result

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        return [
            Measure("clean_accuracy", "clean accuracy", result["clean"]["accuracy"], percent=True,
                    higher_is_better=True),
            Measure("mean_corruption_error", "mean corruption error (15 x 5 cells)",
                    result.get("mean_corruption_error"), percent=True, higher_is_better=False),
            Measure("mean_error", MEAN_CELL_ERROR, result.get("mean_error"),
                    percent=True, higher_is_better=False),
            Measure("mce", "mCE (ImageNet-C, AlexNet-normalised)", result.get("mce"), percent=True,
                    higher_is_better=False),
        ]

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        from .corruption_report import corruption_section

        return corruption_section(results, fig_dir, _order)


def _order(c: str) -> int:
    try:
        return _benchmark().index(c)
    except (ValueError, ImportError):
        return 99
