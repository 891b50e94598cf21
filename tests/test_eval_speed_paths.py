"""The evaluation's speed paths: read-ahead thread, pinned batches, the clean set evaluated once per run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aprkit.data.arrays import ArrayDataset
from aprkit.eval import evaluate
from aprkit.data.loading import prefetch
from aprkit.eval.engine.batches import default_prefetch, iter_batches
from aprkit.eval.engine.inference import predict
from aprkit.eval.engine.datasets import TensorImageDataset
from conftest import natural_images

from aprkit._batch import CPU_BLOCK, read_size

pytestmark = pytest.mark.usefixtures("one_thread")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")


class Counting(nn.Module):
    """conv -> ReLU -> pool -> Linear on float [0, 1] images; counts forward calls and images seen."""

    def __init__(self, k: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, k)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self._calls = 0  # private: counters are not part of the weights fingerprint
        self._images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        self._images += x.shape[0]
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class Plain(torch.utils.data.Dataset):
    """A dataset without ``get_batch`` (the DataLoader path)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 10


def _write_c(root: Path, images: torch.Tensor, labels: torch.Tensor, corruptions: list[str]) -> str:
    hwc = images.permute(0, 2, 3, 1).numpy()
    for i, c in enumerate(corruptions):
        sev = [np.clip(hwc.astype(np.int16) + 10 * s * (i + 1) - 25, 0, 255).astype(np.uint8) for s in range(1, 6)]
        np.save(root / f"{c}.npy", np.concatenate(sev))
    np.save(root / "labels.npy", np.tile(labels.numpy(), 5).astype(np.int64))
    return f"cifar10-c:{root}"


# ---------------------------------------------------------------- prefetch


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(lambda: iter(range(7)), 2)) == list(range(7))

    def bad():
        yield 1
        raise KeyError("boom")

    it = prefetch(bad, 1)
    assert next(it) == 1
    with pytest.raises(KeyError, match="boom"):
        next(it)
    with pytest.raises(ValueError, match="positive number"):
        next(prefetch(lambda: iter([]), 0))


def test_prefetch_thread_stops_when_closed_early():
    it = prefetch(lambda: iter(range(10**9)), 2)
    assert next(it) == 0
    it.close()
    deadline = time.time() + 2
    while time.time() < deadline and any(t.name == "aprkit-prefetch" for t in threading.enumerate()):
        time.sleep(0.01)
    assert not any(t.name == "aprkit-prefetch" for t in threading.enumerate())


def test_prefetch_default_off_on_cpu():
    assert default_prefetch(torch.device("cpu"), 0) == 0
    assert default_prefetch(torch.device("cuda"), 0) == 2
    assert default_prefetch(torch.device("cuda"), 2) == 0  # loader workers already read ahead
    with pytest.raises(ValueError, match="read_ahead"):
        next(iter_batches(TensorImageDataset(natural_images(4, seed=0)), 2, read_ahead=-1))


@pytest.mark.parametrize("kind", ["tensor", "array", "plain"])
def test_read_ahead_gives_identical_batches_and_outputs(tmp_path, kind):
    images = natural_images(23, seed=1)
    if kind == "tensor":
        ds = TensorImageDataset(images, torch.arange(23) % 10)
    elif kind == "array":
        np.save(tmp_path / "x.npy", images.permute(0, 2, 3, 1).numpy())
        ds = ArrayDataset(tmp_path / "x.npy", np.arange(23) % 10)
    else:
        ds = Plain(images)
    plain = list(iter_batches(ds, 5, read_ahead=0))
    ahead = list(iter_batches(ds, 5, read_ahead=2))
    assert len(plain) == len(ahead) == 5
    for (x0, y0, i0), (x1, y1, i1) in zip(plain, ahead):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(i0, i1)
    model = Counting()
    a = predict(model, ds, batch_size=5, read_ahead=0, features=True)
    b = predict(model, ds, batch_size=5, read_ahead=2, features=True)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.labels, b.labels) and torch.equal(a.features, b.features)


def test_read_ahead_error_in_forward_stops_thread():
    class Boom(Counting):
        def forward(self, x):
            if self._calls == 1:
                raise RuntimeError("forward failed")
            return super().forward(x)

    ds = TensorImageDataset(natural_images(40, seed=2))
    with pytest.raises(RuntimeError, match="forward failed"):
        predict(Boom(), ds, batch_size=4, read_ahead=2)
    time.sleep(0.2)
    assert not any(t.name == "aprkit-prefetch" for t in threading.enumerate())


# ---------------------------------------------------------------- get_batch


def test_array_get_batch_is_one_fresh_copy(tmp_path):
    x = natural_images(9, seed=4).permute(0, 2, 3, 1).numpy()
    np.save(tmp_path / "x.npy", x)
    ds = ArrayDataset(tmp_path / "x.npy", np.arange(2, 8), start=2, stop=8)
    imgs, labels = ds.get_batch(slice(1, 4))
    assert torch.equal(imgs, torch.from_numpy(x[3:6]).permute(0, 3, 1, 2)) and labels.tolist() == [3, 4, 5]
    assert imgs.is_contiguous(memory_format=torch.channels_last)
    imgs[:] = 0  # writable and not aliasing the file
    assert ds.get_batch([4, 1, 3])[0].equal(torch.from_numpy(x[[6, 3, 5]]).permute(0, 3, 1, 2))


@needs_cuda
def test_pinned_get_batch_matches():
    images = natural_images(12, seed=5)
    for ds in (TensorImageDataset(images), ArrayDataset(images.permute(0, 2, 3, 1).numpy(), None)):
        for where in (slice(2, 9), [7, 1, 4]):
            x0, _ = ds.get_batch(where)
            x1, _ = ds.get_batch(where, pin_memory=True)
            assert x1.is_pinned() and torch.equal(x0, x1)


# ---------------------------------------------------------------- clean once


def test_clean_set_evaluated_once_per_run(tmp_path):
    images, labels = natural_images(12, seed=6), torch.arange(12) % 10
    data = TensorImageDataset(images, labels)
    corrupted = _write_c(tmp_path, images, labels, ["fog", "contrast"])
    model = Counting()
    res = evaluate(model, suite=["corruption", "calibration"], data=data, corrupted=corrupted, corruptions=["fog", "contrast"],
                   severities=[1, 2],
                   device="cpu", batch_size=5, progress=False, report=False, channels_last=False)
    rows = read_size(12, CPU_BLOCK)  # forward rows per pass: 12 images in blocks (aprkit._batch), the last padded
    assert model._images == rows * (1 + 2 * 2)  # clean once, then 4 cells; calibration reuses every cell
    assert res.models["Counting"]["calibration"]["clean"]["n"] == 12
    # a run in pieces sharing one cache (how bench_eval interleaves): the clean set is not evaluated again
    model._images = 0
    for c in ("fog", "contrast"):
        evaluate(model, suite="corruption", data=data, corrupted=corrupted, corruptions=[c], severities=[1],
                 device="cpu", batch_size=5, progress=False, report=False, channels_last=False, cache_dir=tmp_path / "cache")
    assert model._images == rows * (1 + 2)


# ---------------------------------------------------------------- cells one ahead


def _logged_start(monkeypatch, log: list, fail: str | None = None) -> None:
    """Record when each cell's prediction starts and when its result is taken (``fail``: that cell fails to start)."""
    import aprkit.eval.suites.corruption_cells as corruption_cells
    from aprkit.eval.engine.inference import start_predict

    def start(*args, desc: str, **kw):
        if desc == fail:
            raise RuntimeError(f"cannot start {desc}")
        log.append(("start", desc))
        pending = start_predict(*args, desc=desc, **kw)
        taken = pending.result

        def result(**kw):
            log.append(("result", desc))
            return taken(**kw)

        pending.result = result
        return pending

    monkeypatch.setattr(corruption_cells, "start_predict", start)
    monkeypatch.setattr(corruption_cells, "queues_ahead", lambda device: True)  # as on CUDA


def test_cells_are_queued_one_ahead_with_the_numbers_of_cells_alone(tmp_path, monkeypatch):
    """The corruption suite queues cell i + 1 before it summarises cell i (so a GPU never waits for the host between
    cells); every cell's numbers are those of the cell evaluated on its own."""
    images, labels = natural_images(12, seed=6), torch.arange(12) % 10
    data = TensorImageDataset(images, labels)
    corrupted = _write_c(tmp_path, images, labels, ["fog", "contrast"])
    kw = dict(data=data, corrupted=corrupted, device="cpu", batch_size=5, progress=False, report=False,
              channels_last=False)
    log: list = []
    with monkeypatch.context() as m:
        _logged_start(m, log)
        res = evaluate(Counting(), suite=["corruption", "calibration"], corruptions=["fog", "contrast"],
                       severities=[1, 2], **kw)
    order = ["clean", "fog-1", "fog-2", "contrast-1", "contrast-2"]
    want = [("start", order[0])]
    for before, cell in zip(order, order[1:]):
        want += [("start", cell), ("result", before)]
    assert log == want + [("result", order[-1])]  # calibration reuses every cell
    cells = res.models["Counting"]["corruption"]["cells"]
    for c in ("fog", "contrast"):
        for s in (1, 2):
            alone = evaluate(Counting(), suite="corruption", corruptions=[c], severities=[s], **kw)
            assert alone.models["Counting"]["corruption"]["cells"][c][str(s)] == cells[c][str(s)]


def test_a_cell_that_fails_to_start_keeps_the_cell_before(tmp_path, monkeypatch):
    """When cell i + 1 cannot start, cell i (already queued) is summarised and stored before the error surfaces:
    a rerun computes only the cells from the failed one on."""
    images, labels = natural_images(12, seed=6), torch.arange(12) % 10
    data = TensorImageDataset(images, labels)
    (tmp_path / "c").mkdir()  # the -C folder's identity is its files': the cache lies beside it, not in it
    corrupted = _write_c(tmp_path / "c", images, labels, ["fog", "contrast"])
    kw = dict(suite="corruption", data=data, corrupted=corrupted, corruptions=["fog", "contrast"], severities=[1, 2],
              device="cpu", batch_size=5, progress=False, report=False, channels_last=False,
              cache_dir=tmp_path / "cache")
    model, log = Counting(), []
    with monkeypatch.context() as m, pytest.raises(RuntimeError, match="cannot start fog-2"):
        _logged_start(m, log, fail="fog-2")
        evaluate(model, **kw)
    assert log == [("start", "clean"), ("start", "fog-1"), ("result", "clean"), ("result", "fog-1")]
    model._images = 0
    evaluate(model, **kw)
    rows = read_size(12, CPU_BLOCK)  # 12 images in blocks of CPU_BLOCK rows (aprkit._batch)
    assert model._images == rows * 3  # fog-2, contrast-1, contrast-2: clean and fog-1 came from the cache


def test_on_the_cpu_each_cell_is_done_before_the_next_starts(monkeypatch):
    """Off CUDA nothing runs beside the host: each cell is summarised and stored before the next one starts."""
    import aprkit.eval.suites.corruption_cells as corruption_cells
    from aprkit.eval.engine.inference import start_predict

    log: list = []

    def start(*args, desc: str, **kw):
        log.append(desc)
        pending = start_predict(*args, desc=desc, **kw)
        taken = pending.result
        pending.result = lambda **kw: (log.append("result"), taken(**kw))[1]
        return pending

    monkeypatch.setattr(corruption_cells, "start_predict", start)
    data = TensorImageDataset(natural_images(12, seed=6), torch.arange(12) % 10)
    evaluate(Counting(), suite="corruption", data=data, corruptions=["fog"], severities=[1, 2], device="cpu",
             batch_size=5, progress=False, report=False, channels_last=False)
    assert log == ["clean", "result", "fog-1", "result", "fog-2", "result"]
    assert not corruption_cells.queues_ahead("cpu") and corruption_cells.queues_ahead(torch.device("cuda", 0))
