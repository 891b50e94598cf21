"""A -C file stacking a corruption's five severities (CIFAR-10-C's layout) is read in one pass per corruption: the
same numbers per cell as each cell read alone, fewer passes and padding rows, and one cell at a time where one pass
cannot serve (a cached cell, a limit, a set of other severities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aprkit._batch import CPU_BLOCK, read_size
from aprkit.data import get_dataset
from aprkit.eval import evaluate
from aprkit.eval.engine.datasets import TensorImageDataset
from conftest import natural_images
from test_eval_speed_paths import Counting, _logged_start, _write_c

pytestmark = pytest.mark.usefixtures("one_thread")

SEVERITIES = [1, 2, 3, 4, 5]
N = 12  # images per cell: 12 rows, one block of CPU_BLOCK on the CPU with 4 padding rows; 60 rows stacked


def _setup(tmp_path):
    images, labels = natural_images(N, seed=6), torch.arange(N) % 10
    (tmp_path / "c").mkdir(parents=True)
    spec = _write_c(tmp_path / "c", images, labels, ["fog", "contrast"])
    return TensorImageDataset(images, labels), spec


def _run(model, data, corrupted, **kw):
    kw = dict(suite=["corruption", "calibration"], data=data, corrupted=corrupted, corruptions=["fog", "contrast"],
              severities=SEVERITIES, device="cpu", batch_size=5, progress=False, report=False,
              channels_last=False, model_id="m") | kw
    return evaluate(model, **kw)


def _cells(res) -> dict:
    return res.models["m"]["corruption"]["cells"]


def test_each_corruption_is_one_pass_with_the_numbers_of_each_cell_read_alone(tmp_path):
    data, spec = _setup(tmp_path)
    stacked_model = Counting()
    stacked = _run(stacked_model, data, spec)
    assert stacked_model._images == read_size(N, CPU_BLOCK) + 2 * read_size(5 * N, CPU_BLOCK)  # 16 + 2 x 64

    def one_cell(corruption: str, severity: int):  # a callable source: opened and read one cell at a time
        return get_dataset(spec, "test", corruption=corruption, severity=severity)

    alone_model = Counting()
    alone = _run(alone_model, data, one_cell)
    assert alone_model._images == read_size(N, CPU_BLOCK) * 11  # the clean set and ten cells of 16 rows
    assert _cells(stacked) == _cells(alone)  # to the last bit: a CPU block's rows do not depend on the others
    for key in ("corrupted", "per_severity"):  # the calibration suite reads the same cells
        assert stacked.models["m"]["calibration"][key] == alone.models["m"]["calibration"][key]
    assert _cells(stacked)["fog"]["3"] != _cells(stacked)["fog"]["4"]  # the rows of each severity, not one's


def test_a_cached_cell_leaves_its_corruption_to_one_cell_at_a_time(tmp_path, monkeypatch):
    """A resumed run serves what is cached and computes the rest of that corruption cell by cell (not the five
    again); the other corruption is still one pass. A run whose cells are all cached opens no -C file."""
    data, spec = _setup(tmp_path)
    cache = tmp_path / "cache"
    _run(Counting(), data, spec, suite="corruption", corruptions=["fog"], severities=[3], cache_dir=cache)
    model = Counting()
    res = _run(model, data, spec, suite="corruption", cache_dir=cache)
    assert model._images == 4 * read_size(N, CPU_BLOCK) + read_size(5 * N, CPU_BLOCK)  # fog 1, 2, 4, 5; contrast
    assert res.meta["cache_units"] == {"reused": 2, "computed": 9}  # clean, fog-3; the other nine cells
    assert _cells(res) == _cells(_run(Counting(), data, spec))
    both = _run(Counting(), data, spec, cache_dir=cache)  # two suites read each cached cell: each counts once
    assert both.meta["cache_units"] == {"reused": 11, "computed": 0}
    import aprkit.eval.suites.corruption as suite
    import aprkit.eval.suites.corruption_cells as cells

    opened: list = []
    for module in (suite, cells):
        monkeypatch.setattr(module, "_open_corrupted", lambda *a: opened.append(a))
    again = Counting()
    assert _cells(_run(again, data, spec, cache_dir=cache)) == _cells(res) and again._images == 0 and opened == []


class BatchNormed(Counting):
    """Counting with a batch norm without running statistics (test-time adaptation): a batch's outputs depend on its
    other images, so a batch must not mix two cells' images."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(3, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.norm(x))


def test_a_model_normalising_by_its_batch_reads_each_cell_on_its_own(tmp_path):
    data, spec = _setup(tmp_path)
    model = BatchNormed()
    res = _run(model, data, spec, suite="corruption")
    assert model._calls == 3 * 11  # batches of 5 of each cell's 12 images, the clean set and ten cells

    def one_cell(corruption: str, severity: int):
        return get_dataset(spec, "test", corruption=corruption, severity=severity)

    assert _cells(res) == _cells(_run(BatchNormed(), data, one_cell, suite="corruption"))


def test_a_limit_reads_each_cell_on_its_own(tmp_path):
    """With a limit each severity's first images are not one run of rows of the file: one pass per cell."""
    data, spec = _setup(tmp_path)
    model = Counting()
    res = _run(model, data, spec, limit=7)
    assert model._images == read_size(7, CPU_BLOCK) * 11
    assert all(cell["n"] == 7 for row in _cells(res).values() for cell in row.values())


def test_a_set_of_other_severities_is_read_cell_by_cell(tmp_path):
    """The severities a set holds come from its aprkit corrupt manifest: a file of 5, 4, 3, 2, 1 cannot be read as
    1..5 stacked, and each cell reads its own rows."""
    data, spec = _setup(tmp_path)
    root = tmp_path / "c"
    for c in ("fog", "contrast"):  # the same images, the severities' rows reversed
        arr = np.load(root / f"{c}.npy")
        np.save(root / f"{c}.npy", np.concatenate([arr[(s - 1) * N:s * N] for s in reversed(SEVERITIES)]))
    from aprkit.corruptions.manifest import _TOOL, MANIFEST

    (root / MANIFEST).write_text(json.dumps({"tool": _TOOL, "params": {"severities": SEVERITIES[::-1]}}))
    model = Counting()
    res = _run(model, data, spec)
    assert model._images == read_size(N, CPU_BLOCK) * 11
    data2, spec2 = _setup(tmp_path / "published")
    assert _cells(res) == _cells(_run(Counting(), data2, spec2))


def test_a_set_whose_files_do_not_match_is_read_cell_by_cell_and_fails_as_one_cell_would(tmp_path):
    """A corruption whose file holds fewer images than the clean set: its stacked reader refuses it, and so does the
    per-cell one, with the same message."""
    data, spec = _setup(tmp_path)
    root = tmp_path / "c"
    arr = np.load(root / "contrast.npy")
    np.save(root / "contrast.npy", arr[: 5 * (N - 2)])  # 10 images per severity: labels.npy no longer matches
    with pytest.raises(ValueError, match="labels.npy must have shape"):
        _run(Counting(), data, spec)


def test_on_cuda_a_stacked_pass_is_queued_before_the_cells_before_it_are_summarised(tmp_path, monkeypatch):
    data, spec = _setup(tmp_path)
    log: list = []
    _logged_start(monkeypatch, log)
    res = _run(Counting(), data, spec, suite="corruption")
    starts = [d for what, d in log if what == "start"]
    assert starts == ["clean", f"fog-1..5 stacked, {N} images per severity",
                      f"contrast-1..5 stacked, {N} images per severity"]
    fog_results = [i for i, (what, d) in enumerate(log) if what == "result" and d.startswith("fog")]
    assert len(fog_results) == 5 and min(fog_results) > log.index(("start", starts[2]))
    assert _cells(res) == _cells(_run(Counting(), data, spec, suite="corruption"))


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data, spec = _setup(Path(out_dir) / f"rank{rank}")
        torch.save(_cells(_run(Counting(), data, spec, batch_size=7)), f"{out_dir}/cells{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_stacked_pass_shared_by_two_processes_gives_the_same_cells(tmp_path) -> None:
    """Under torchrun each process reads its share of the stacked rows; the gathered cells are one process's."""
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    data, spec = _setup(tmp_path / "one")
    ref = _cells(_run(Counting(), data, spec))
    for rank in (0, 1):
        assert torch.load(tmp_path / f"cells{rank}.pt") == ref


class NaNFor(Counting):
    """Counting whose logits are NaN for images brighter than ``level`` on average."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return torch.where(x.mean((1, 2, 3))[:, None] > self.level, torch.nan, out)


def test_nan_logits_in_a_stacked_pass_name_the_cell_and_keep_the_cells_before_it(tmp_path):
    """The whole pass was checked at once: an error named indices of the stacked file, and none of the corruption's
    cells was stored. Each cell checks its own rows: the cells before the bad one are cached, the error names it."""
    data, spec = _setup(tmp_path)
    bright = float(natural_images(N, seed=6).float().div(255).mean()) + 0.3  # only contrast-5 passes it
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"for \d+ of 12 images \(contrast-5; dataset indices \[\d"):
        _run(NaNFor(bright), data, spec, suite="corruption", cache_dir=cache)
    model = NaNFor(bright)
    res = _run(model, data, spec, suite="corruption", cache_dir=cache, corruptions=["fog", "contrast"],
               severities=[1, 2, 3, 4])
    assert model._images == 0 and res.meta["cache_units"]["reused"] == 9  # clean, fog-1..4, contrast-1..4


def test_a_cache_with_only_get_and_put_serves_a_stacked_run(tmp_path):
    """The suites' cache protocol asks for get and put only: the stacked pass asks such a cache with get."""
    from aprkit.eval.suites.base import EvalContext
    from aprkit.eval.suites.corruption import CorruptionOptions, evaluate_cells

    class Plain:
        def __init__(self) -> None:
            self.data: dict = {}

        def get(self, key):
            return self.data.get(key)

        def put(self, key, value):
            self.data[key] = value

    data, spec = _setup(tmp_path)
    opts = CorruptionOptions(corrupted=spec, corruptions=["fog"])
    cells = [("fog", s) for s in SEVERITIES]
    ctx = EvalContext(Counting(), device="cpu", batch_size=5, cache=Plain(), channels_last=False)
    first = list(evaluate_cells(ctx, data, opts, cells))
    assert len(ctx.cache.data) == 5 and ctx.model._images == read_size(5 * N, CPU_BLOCK)
    ctx.model._images = 0
    assert list(evaluate_cells(ctx, data, opts, cells)) == first and ctx.model._images == 0


def test_negative_c_labels_and_missing_cells_are_named_before_any_work(tmp_path):
    """A -C labels.npy holding -1 ("no label") skipped the pairing check, ran the pass, then failed on a label range
    naming neither the file nor the cell; the calibration suite alone named the first missing severity only."""
    data, spec = _setup(tmp_path)
    root = tmp_path / "c"
    labels = np.load(root / "labels.npy")
    labels[3] = -1
    np.save(root / "labels.npy", labels)
    model = Counting()
    with pytest.raises(ValueError, match=r"labels.npy holds negative labels \(down to -1\)"):
        _run(model, data, spec, suite="corruption")
    labels[3] = 3
    np.save(root / "labels.npy", labels)
    (root / "contrast.npy").unlink()
    for suite in ("corruption", "calibration"):
        with pytest.raises(FileNotFoundError, match=r"lacks 5 of the 10 requested cells \(contrast-1, contrast-2"):
            _run(model, data, spec, suite=suite)


def test_the_five_severities_in_another_order_are_one_pass_and_the_same_numbers(tmp_path):
    """Severities and corruptions in another order are evaluated and reported in one order (ascending, the published
    one): the pooled numbers were summed in the order given, and moved in the last bit with it (tester)."""
    data, spec = _setup(tmp_path)
    model = Counting()
    res = _run(model, data, spec, suite=["corruption", "calibration"], severities=[5, 3, 1, 2, 4],
               corruptions=["contrast", "fog"])
    assert model._images == read_size(N, CPU_BLOCK) + 2 * read_size(5 * N, CPU_BLOCK)
    assert list(_cells(res)["fog"]) == ["1", "2", "3", "4", "5"] and list(_cells(res)) == ["fog", "contrast"]
    ref = _run(Counting(), data, spec, suite=["corruption", "calibration"], corruptions=["fog", "contrast"])
    assert res.models == ref.models
