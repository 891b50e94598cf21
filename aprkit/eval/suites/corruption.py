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

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..._checks import describe_value
from ..engine.cache import cached_start
from ..engine.datasets import as_dataset, corrupted_cell_id, dataset_id
from ..engine.inference import start_predict
from .base import EvalContext, Measure, ReportSection, Suite, register_suite
from .corruption_generated import STORED_QUALITY, generated_transform, geometry_caveat, stored_quality, warn_geometry
from .corruption_options import (
    CorruptionOptions,
    CorruptionResult,
    _benchmark,
    _default_preset,
    expected_classes,
    summary_corruptions,
)
from .corruption_sources import check_cells_present_for as _check_cells_present
from .corruption_sources import open_corrupted as _open_corrupted
from .corruption_sources import source_origin as _source_origin
from .corruption_sources import written_by_aprkit as _written_by_aprkit

__all__ = ["CorruptionSuite", "CorruptionOptions", "CorruptionResult", "evaluate_cell", "evaluate_cells",
           "start_cell", "expected_classes",
           "cell_summary", "MEAN_CELL_ERROR"]

#: what a cached cell's values mean: 2 since the RMS calibration error gives tied confidences their group's mean
#: correctness (cells of version 1 kept the order-dependent value); 3: the NLL is the exact cross-entropy of the
#: logits (it clamped probabilities at 1e-12, capping each sample at 27.6); 4: the calibration bins' edges are k / n
#: rounded in the confidences' precision (a confidence exactly on float32 3/15 fell into the bin below)
CELL_VERSION = 4
#: the label of the plain mean error over the cells run (reported instead of mCE when they are not the full grid)
MEAN_CELL_ERROR = "mean error over the evaluated corruption cells"


def cell_summary(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Accuracy, error, NLL, Brier, ECE, RMS calibration error and reliability bins from logits ``(N, K)``.

    Same values as the separate functions in :mod:`aprkit.eval.metrics`, computed from one float64 softmax
    and one set of bin statistics (this runs once per corruption x severity cell, so nothing is computed or checked
    twice: the logits' finiteness and the labels are checked here; the softmax's top probabilities then lie in
    [0, 1] and the correctness is 0/1 by construction, so the bins and the RMS error take them unchecked: their
    checks cost about 60 us per cell, more than half a percent of a 200-image cell of ResNet-20 on the CPU).
    """
    from .. import metrics as M
    from ..metrics._validate import check_labels_for
    from ..metrics.calibration import RMS_BIN_SIZE, _bin_statistics, _check_n_bins, _rms_from_confidences

    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor (N, K), got {describe_value(logits)}")
    if logits.shape[0] == 0 or not bool(torch.isfinite(logits).all()):
        raise ValueError(f"logits must be finite with at least one row, got shape {tuple(logits.shape)} "
                         "(NaN/inf or empty)")
    z = logits.double()
    probs = torch.softmax(z, dim=1)
    y = check_labels_for(labels, probs.shape[0], probs.shape[1], device=probs.device)
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()  # the float64 form every metric below uses
    picked = probs.gather(1, y[:, None]).squeeze(1)
    stats = _bin_statistics(conf, correct, _check_n_bins(n_bins))
    reliability = M.reliability_from_bins(stats)  # holds the ECE
    acc = float(correct.mean())
    return {
        "n": int(labels.shape[0]),
        "accuracy": acc,
        "error": 1.0 - acc,
        "nll": M.nll_from_logits(z, y),
        "brier": M.brier_from_picked(probs, picked),
        "ece": reliability["ece"],
        "rms": _rms_from_confidences(conf, correct, RMS_BIN_SIZE),
        "reliability": reliability,
    }


def evaluate_cell(ctx: EvalContext, data: Any, opts: CorruptionOptions, corruption: str | None = None,
                  severity: int | None = None, before: Callable[[], None] | None = None) -> dict:
    """Evaluate (or fetch from ``ctx.cache``) one cell with the corruption suite's options ``opts``: clean when
    ``corruption`` is None.

    The cell's key (:func:`aprkit.eval.engine.cache.result_key`) holds the corruption, severity and either the
    generation (preset, ``aprkit.corruptions.corruption_version``, for frost the textures' digest; the seed is a run
    setting) or the -C source. ``before`` runs first when the cell is computed (never on a cache hit).
    """
    return start_cell(ctx, data, opts, corruption, severity, before)()


def evaluate_cells(ctx: EvalContext, data: Any, opts: CorruptionOptions, cells: list[tuple[str | None, int | None]],
                   before: Callable[[], None] | None = None) -> Iterator[dict]:
    """:func:`evaluate_cell` of each ``(corruption, severity)`` of ``cells`` (``(None, None)``: the clean cell), in
    order; ``before`` goes to the first cell.

    On CUDA one ahead: cell ``i + 1``'s batches are queued on the device before cell ``i`` is summarised, so the device
    does not wait for the host between cells (under ``torchrun`` with NCCL the outputs' gather still waits for the
    queued cell). Each cell is stored in ``ctx.cache`` when it is summarised; when starting a cell fails, the cell
    before it is summarised and stored first. Elsewhere (nothing runs beside the host) each cell is done and stored
    before the next starts."""
    ahead = queues_ahead(ctx.device)
    waiting: Callable[[], dict] | None = None
    for i, (corruption, severity) in enumerate(cells):
        first = before if i == 0 else None
        if not ahead:
            yield evaluate_cell(ctx, data, opts, corruption, severity, first)
            continue
        try:
            started = start_cell(ctx, data, opts, corruption, severity, first)
        except BaseException:
            if waiting is not None:  # keep the cell already computed
                waiting()
            raise
        if waiting is not None:
            yield waiting()
        waiting = started
    if waiting is not None:
        yield waiting()


def queues_ahead(device: torch.device | str) -> bool:
    """Whether :func:`evaluate_cells` queues a cell before the one before it is summarised: on CUDA, whose work runs
    beside the host's."""
    return torch.device(device).type == "cuda"


def start_cell(ctx: EvalContext, data: Any, opts: CorruptionOptions, corruption: str | None = None,
               severity: int | None = None, before: Callable[[], None] | None = None) -> Callable[[], dict]:
    """:func:`evaluate_cell` in two steps: queues the cell's work (unless ``ctx.cache`` holds it) and returns a
    function that waits for it and returns (and stores) the cell's summary (its ``seconds``: from the start to the
    result, which on CUDA includes queueing the next cell)."""
    cell: tuple[str, int] | None = None  # (corruption, severity); None: the clean cell
    if corruption is not None:
        if severity is None:
            raise ValueError(f"evaluate_cell: corruption {corruption!r} needs a severity (an int in 1..5), got None")
        cell = (corruption, severity)
    limit = opts.limit
    clean = as_dataset(data)
    source = opts.corrupted
    preset = opts.preset or _default_preset(clean)
    n_bins = opts.n_bins
    generation: dict[str, Any] = {}
    opened = None  # a callable source's dataset for this cell, once opened
    if corruption is None:
        origin = "clean"
    elif isinstance(source, str) and source:
        origin = "disk:" + dataset_id(source, "c")
        generation["source"] = origin
        if cell is not None:  # an ImageNet-C cell's images lie below what the root's identity reads
            files = corrupted_cell_id(source, *cell)
            if files is not None:
                generation["files"] = files
    elif source:
        source_name = getattr(source, "cache_id", None) or getattr(source, "__qualname__", type(source).__name__)
        origin = "source:" + str(source_name)
        if isinstance(getattr(source, "cache_id", None), str) and source.cache_id:
            generation["source"] = source  # its cache_id names what it opens
        else:  # a function's name says nothing of the data it returns: the cell's dataset itself keys it
            opened = _open_corrupted(source, *cell) if cell is not None else None
            generation["source"] = opened
    else:
        from aprkit.corruptions import corruption_version

        origin = "generated"
        generation.update(preset=preset, code=corruption_version(corruption))
        quality = stored_quality(opts.jpeg_quality, preset)
        if quality is not None:  # (absent: the keys of the cells computed before the round trip existed)
            generation["stored"] = f"jpeg{quality}"
        if corruption == "frost":  # the textures it blends in: another set gives other images
            from aprkit.corruptions._frost import texture_id

            generation["frost"] = texture_id()

    def start() -> Callable[[], dict]:
        if before is not None:  # a check that only a computed cell needs (a cached one reads no data)
            before()
        transform = None
        dataset = clean
        if cell is not None and source:
            dataset = opened if opened is not None else _open_corrupted(source, *cell)
            from aprkit.data.corrupted import check_matches_clean

            check_matches_clean(dataset, clean, limit, f"the -C set of {corruption}-{severity}")
        elif cell is not None:
            transform = generated_transform(cell[0], int(cell[1]), preset, ctx.seed,
                                            stored_quality(opts.jpeg_quality, preset))
        desc = "clean" if corruption is None else f"{corruption}-{severity}"
        pending = start_predict(
            ctx.model, dataset, device=ctx.device, batch_size=ctx.batch_size, num_workers=ctx.num_workers,
            amp=ctx.amp, channels_last=ctx.channels_last, transform=transform, limit=limit,
            num_classes=expected_classes(opts, clean), progress=ctx.progress, desc=desc,
        )

        def finish() -> dict:
            out = pending.result()
            value = cell_summary(out.logits, out.labels, n_bins)
            value.update(corruption=corruption, severity=severity, origin=origin, seconds=out.seconds)
            return value

        return finish

    return cached_start(ctx, "cell", data, start, corruption=corruption, severity=severity, n_bins=n_bins,
                        v=CELL_VERSION, **generation)


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
    version = str(CELL_VERSION)

    def run(self, ctx: EvalContext, data: Any) -> CorruptionResult:
        opts = self.options(ctx)
        corruptions, severities = opts.grid()
        grid = [(c, s) for c in corruptions for s in severities]

        def pairs() -> None:  # a -C set that cannot pair with the clean set fails before the clean pass
            from aprkit.data.corrupted import check_matches_clean

            check_matches_clean(_open_corrupted(opts.corrupted, *grid[0]), as_dataset(data), opts.limit,
                                f"the -C set of {grid[0][0]}-{grid[0][1]}")

        if grid and isinstance(opts.corrupted, str):
            _check_cells_present(opts.corrupted, grid)
        caveat = geometry_caveat(ctx.model, as_dataset(data)) if grid and not opts.corrupted else None
        warn_geometry(caveat)
        results = evaluate_cells(ctx, data, opts, [(None, None), *grid],
                                 before=pairs if grid and opts.corrupted else None)
        clean = next(results)
        cells: dict[str, dict[str, dict]] = {}
        from tqdm.auto import tqdm

        bar = tqdm(results, total=len(grid), desc=f"{ctx.model_id}: corruptions", unit="cell",
                   disable=not ctx.progress or not grid)
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
