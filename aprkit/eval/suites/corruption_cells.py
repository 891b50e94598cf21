"""The corruption suite's cells: the clean set and each (corruption, severity) cell evaluated, or fetched from the
result cache, and summarised (accuracy, error, NLL, Brier, ECE, RMS calibration error, reliability bins), one cached
unit per cell that the corruption and calibration suites share.

A -C set that stacks a corruption's five severities in one file (CIFAR-10-C's ``<corruption>.npy``) is read in one
pass per corruption when all five cells are asked for and none is cached: one dataset opened, one pass of 5N images
(on the CPU in blocks of ``aprkit._batch.CPU_BLOCK`` rows whose numbers do not depend on the other rows, so every
cell's numbers are those of the cell read alone; the padding rows of one block, not five), then five cells summarised
and stored. Per-cell costs (opening the cell, the pass's set-up, a block's padding rows) weigh on small cells: at 200
images per cell ResNet-20 on the CPU spent 3.3-3.5 % of the time outside the forward pass one cell at a time, 2.1-2.2 %
with the stacked pass (``benchmarks/bench_eval.py --interleave run``, 2 threads).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..._batch import batch_dependent
from ..._checks import dataset_len, describe_value
from ...data.registry import DATASET_KINDS, parse_spec, split_spec_options
from ..engine.cache import cached_start, cached_starts
from ..engine.datasets import as_dataset, corrupted_cell_id, dataset_id
from ..engine.inference import check_finite_logits, start_predict
from .base import EvalContext
from .corruption_generated import generated_transform, stored_quality
from .corruption_options import CorruptionOptions, _default_preset, expected_classes
from .corruption_sources import check_cells_present_for
from .corruption_sources import open_corrupted as _open_corrupted

__all__ = ["CELL_VERSION", "cell_summary", "evaluate_cell", "evaluate_cells", "queues_ahead", "start_cell"]

#: what a cached cell's values mean: 2 since the RMS calibration error gives tied confidences their group's mean
#: correctness (cells of version 1 kept the order-dependent value); 3: the NLL is the exact cross-entropy of the
#: logits (it clamped probabilities at 1e-12, capping each sample at 27.6); 4: the calibration bins' edges are k / n
#: rounded in the confidences' precision (a confidence exactly on float32 3/15 fell into the bin below)
CELL_VERSION = 4


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
    order; ``before`` goes to the first cell. A run of a corruption's severities 1..5 that a -C set stacks in one file
    is read in one pass (:func:`start_stacked`).

    On CUDA one ahead: the next cell's (or stacked run's) batches are queued on the device before the cells before are
    summarised, so the device does not wait for the host between cells (under ``torchrun`` with NCCL the outputs'
    gather still waits for the queued cell). Each cell is stored in ``ctx.cache`` when it is summarised; when starting
    a cell fails, the cells before it are summarised and stored first. Elsewhere (nothing runs beside the host) the
    cells are done and stored before the next start. On the CPU a stacked pass gives every cell the numbers of the cell
    read alone to the last bit (blocks of ``aprkit._batch.CPU_BLOCK`` rows); on CUDA, whose kernels may depend on the
    batch, to the last bits."""
    grid = [(c, int(s)) for c, s in cells if c is not None and s is not None]
    if grid and isinstance(opts.corrupted, str):  # every missing cell named before any work (both suites)
        check_cells_present_for(opts.corrupted, grid)
    ahead = queues_ahead(ctx.device)
    waiting: list[Callable[[], dict]] = []
    i = 0
    while i < len(cells):
        first = before if i == 0 else None
        try:
            started = start_stacked(ctx, data, opts, cells[i:i + len(_STACKED)], first)
            if started is None:
                started = [start_cell(ctx, data, opts, *cells[i], first)]
        except BaseException:
            for finish in waiting:  # keep the cells already computed
                finish()
            raise
        i += len(started)
        if not ahead:  # every cell of the pass stored before the first is yielded (a consumer may stop there)
            yield from [finish() for finish in started]
            continue
        yield from (finish() for finish in waiting)
        waiting = started
    yield from (finish() for finish in waiting)


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
    origin, generation, opened = _cell_identity(opts, preset, cell)

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
        pending = _start_pass(ctx, opts, clean, dataset, desc, transform=transform, limit=limit)

        def finish() -> dict:
            out = pending.result()
            return _cell_value(out.logits, out.labels, n_bins, corruption, severity, origin, out.seconds)

        return finish

    return cached_start(ctx, "cell", data, start, corruption=corruption, severity=severity, n_bins=n_bins,
                        v=CELL_VERSION, **generation)


#: the severities a stacked -C file holds, in its order: what its reader opens at once (``severity=None``)
_STACKED = (1, 2, 3, 4, 5)


def start_stacked(ctx: EvalContext, data: Any, opts: CorruptionOptions, cells: list[tuple[str | None, int | None]],
                  before: Callable[[], None] | None = None) -> list[Callable[[], dict]] | None:
    """:func:`start_cell` of the five cells ``cells`` (a corruption's severities 1..5, in any order: the functions
    returned follow it) in one pass over the -C file that stacks them; ``None`` when they cannot be read so (other
    cells, a -C set of another layout or of other severities, a ``limit``, a model whose outputs depend on the other
    images of its batch, or ``ctx.cache`` holding one of them): then :func:`start_cell` does each.

    Returns one function per cell, as :func:`start_cell`'s; each cell's ``seconds`` is its share of the pass."""
    source = opts.corrupted
    corruption = cells[0][0]
    asked = [s for _, s in cells]  # the order the cells come back in: any order of the five
    if (corruption is None or [c for c, _ in cells] != [corruption] * len(_STACKED)
            or sorted(s for s in asked if s is not None) != list(_STACKED) or opts.limit is not None
            or not isinstance(source, str)):
        return None
    try:
        kind = parse_spec(split_spec_options(source)[0])[0]
    except (TypeError, ValueError):  # its reader refuses it, cell by cell
        return None
    if not getattr(DATASET_KINDS.get(kind), "stacked_severities", False) or batch_dependent(ctx.model):
        return None  # a model normalising by its batch (test-time adaptation) sees each cell's images alone
    clean = as_dataset(data)
    preset = opts.preset or _default_preset(clean)
    order = [_STACKED.index(int(s)) for s in asked if s is not None]  # each asked cell's place in the file
    keyed = [_cell_identity(opts, preset, (corruption, _STACKED[k])) for k in order]  # the keys start_cell gives
    origin = keyed[0][0]
    options = [dict(corruption=corruption, severity=s, n_bins=opts.n_bins, v=CELL_VERSION, **generation)
               for s, (_, generation, _) in zip((_STACKED[k] for k in order), keyed, strict=True)]

    def start() -> list[Callable[[], dict]] | None:
        from aprkit.data.corrupted import check_matches_clean

        try:  # a set of other severities (its manifest says which): one cell at a time, as its reader opens them
            stacked = _open_corrupted(source, corruption, None)
        except ValueError:
            return None
        if before is not None:
            before()
        # its reader checked that the five severities hold one label sequence: severity 1 pairs with the clean set,
        # so all do
        check_matches_clean(_open_corrupted(source, corruption, _STACKED[0]), clean, None,
                            f"the -C set of {corruption}-{_STACKED[0]}")
        n = dataset_len(clean)
        # an error names an index of the stacked file: i is image i % n of severity i // n + 1
        desc = f"{corruption}-{_STACKED[0]}..{_STACKED[-1]} stacked, {n} images per severity"
        pending = _start_pass(ctx, opts, clean, stacked, desc)

        def finish(k: int) -> dict:
            out = pending.result(check_finite=False)  # each cell checks its own rows: the cells before a bad one
            rows = slice(k * n, (k + 1) * n)  # are stored, and an error names the cell and its image
            logits = out.logits[rows]
            check_finite_logits(logits, torch.arange(n), f"{corruption}-{_STACKED[k]}")
            return _cell_value(logits, out.labels[rows], opts.n_bins, corruption, _STACKED[k], origin,
                               out.seconds / len(_STACKED))

        return [functools.partial(finish, k) for k in order]

    return cached_starts(ctx, "cell", data, start, options)


def _start_pass(ctx: EvalContext, opts: CorruptionOptions, clean: Any, dataset: Any, desc: str,
                transform: Any = None, limit: int | None = None) -> Any:
    """:func:`start_predict` of the context's model over one cell's (or one stacked file's) images."""
    return start_predict(
        ctx.model, dataset, device=ctx.device, batch_size=ctx.batch_size, num_workers=ctx.num_workers,
        amp=ctx.amp, channels_last=ctx.channels_last, transform=transform, limit=limit,
        num_classes=expected_classes(opts, clean), progress=ctx.progress, desc=desc,
    )


def _cell_value(logits: torch.Tensor, labels: torch.Tensor, n_bins: int, corruption: str | None,
                severity: int | None, origin: str, seconds: float) -> dict:
    """One cell's cached value: :func:`cell_summary` and where it came from."""
    value = cell_summary(logits, labels, n_bins)
    value.update(corruption=corruption, severity=severity, origin=origin, seconds=seconds)
    return value


def _cell_identity(opts: CorruptionOptions, preset: str, cell: tuple[str, int] | None) -> tuple[str, dict, Any]:
    """A cell's origin (``"clean"``, ``"disk:<id>"``, ``"source:<name>"``, ``"generated"``), what its cache key holds
    of where its images come from, and a callable source's dataset when opening it was needed for that key."""
    corruption = None if cell is None else cell[0]
    source = opts.corrupted
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
    return origin, generation, opened
