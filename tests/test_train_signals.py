"""Ctrl-C and SIGTERM during training wait for the end of the step, which is saved in last.pt before they act: the
resumed run equals the uninterrupted one, bit for bit. A second signal acts at once; the handlers are given back."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from train_common import Images, same_weights, strip_times, train_config

import aprkit.data.loading as loading
import aprkit.train.loop as loop
from aprkit.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _signal_at(monkeypatch, call: int, signum: int, times: int = 1) -> None:
    """Raise ``signum`` (``times`` times) inside the ``call``-th training step, before its loss."""
    real, calls = loop.method_loss, [0]

    def signalling(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            for _ in range(times):
                signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "method_loss", signalling)


def test_ctrl_c_keeps_the_step_it_came_in_and_the_resume_is_bit_for_bit(tmp_path, monkeypatch, capsys):
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config()
    full = fit(cfg, out=tmp_path / "full", datasets=(ds, test))  # 3 epochs x 5 steps
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _signal_at(monkeypatch, 8, signal.SIGINT)  # inside epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, out=tmp_path / "part", datasets=(ds, test))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    state = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    assert (state["global_step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 3)
    assert "stopping at step 8 (epoch 2, batch 3 of 5)" in capsys.readouterr().err
    monkeypatch.undo()
    resumed = fit(cfg, out=tmp_path / "part", resume=True, datasets=(ds, test))
    assert same_weights(full["model"], resumed["model"])
    assert strip_times(resumed["history"]) == strip_times(full["history"])


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    _signal_at(monkeypatch, 3, signal.SIGINT, times=2)
    with pytest.raises(KeyboardInterrupt):
        fit(train_config(), out=tmp_path, datasets=(Images(40), None))
    assert not (tmp_path / "last.pt").exists()  # stopped inside step 3 of epoch 1: nothing saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_repeated_sigterm_still_saves_the_step(tmp_path, monkeypatch):
    """A scheduler signals every process of a job and torchrun's agent forwards the signal again: the same stop
    arrives twice and must not act at once as a second Ctrl-C does."""
    _signal_at(monkeypatch, 3, signal.SIGTERM, times=2)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(_Terminated):
            fit(train_config(), out=tmp_path, datasets=(Images(40), None))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["global_step"] == 3


def test_sigterm_to_aprkit_train_saves_the_step_and_exits_143(tmp_path, monkeypatch, capsys):
    from aprkit.cli import main

    _signal_at(monkeypatch, 2, signal.SIGTERM)
    rc = main(["train", "--out", str(tmp_path), "--set", "model.name=_tiny_test_cnn", "data.dataset=synthetic:64",
               "optim.batch_size=16", "optim.epochs=2", "data.test_limit=16", "data.num_workers=0"])
    assert rc == 143
    assert torch.load(tmp_path / "last.pt", weights_only=False)["global_step"] == 2
    assert "terminated (SIGTERM); finished results are kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_without_an_output_folder_a_signal_stops_at_once(monkeypatch):
    """Nothing to save: the signal acts where it comes (inside the step's loss, which is never computed)."""
    _signal_at(monkeypatch, 2, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stop:
        fit(train_config(), datasets=(Images(40), None))
    assert any(t.name == "signalling" for t in stop.traceback)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _CheckedInWorkers(Images):
    """Refuses to load in a worker process that would die of Ctrl-C, or end by SIGTERM in a way that fails the main
    process's step."""

    def __getitem__(self, i: int):
        if torch.utils.data.get_worker_info() is not None and (
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
                or signal.getsignal(signal.SIGTERM) is not loading._end_worker):
            raise RuntimeError("a loader worker would stop on its own at Ctrl-C")
        return super().__getitem__(i)


def test_loader_workers_leave_a_stop_to_the_main_process(tmp_path):
    """A terminal's Ctrl-C reaches the loader workers too: they ignore it, so the main process finishes its step and
    saves it instead of failing on "worker exited unexpectedly"; the evaluation loaders' workers do the same."""
    from aprkit.data.loading import iter_batches

    fit(train_config(optim={"epochs": 1}, data={"num_workers": 1, "input_path": "loader"}), out=tmp_path,
        datasets=(_CheckedInWorkers(16), None))
    assert sum(len(y) for x, y in iter_batches(_CheckedInWorkers(8), batch_size=4, num_workers=1)) == 8


def test_an_ignored_signal_stays_ignored(tmp_path, monkeypatch):
    """A background job (``cmd &`` without job control) starts with SIGINT ignored: training neither saves nor
    stops on it, and the setting is left as it was."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _signal_at(monkeypatch, 2, signal.SIGINT)
        done = fit(train_config(optim={"epochs": 1}), out=tmp_path, datasets=(Images(40), None))
        assert done["global_step"] == 5 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


class _Terminated(Exception):
    pass


def _terminate(signum, frame):
    raise _Terminated


def test_sigterm_to_every_process_of_the_job_still_saves_the_step(tmp_path, monkeypatch, capsys):
    """A scheduler's SIGTERM reaches the loader workers as well as the main process: the workers end cleanly (a
    worker killed by a signal would fail the main process's step at once), the step is finished and saved."""
    real, calls, workers = loop.method_loss, [0], []

    def terminating_all(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            workers.extend(multiprocessing.active_children())
            # from another process, as a scheduler's or `kill`'s (a worker ends quietly at its own main process's)
            subprocess.run(["kill", "-TERM", *(str(w.pid) for w in workers)], check=True)
            for w in workers:
                w.join(timeout=30)
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "method_loss", terminating_all)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(_Terminated):
            fit(train_config(optim={"epochs": 1}, data={"num_workers": 1, "input_path": "loader"}), out=tmp_path,
                datasets=(Images(40), None))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert workers and [w.exitcode for w in workers] == [0] * len(workers)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["global_step"] == 2
    assert "stopping at step 2 (epoch 1, batch 2 of 5)" in capsys.readouterr().err


def test_a_process_left_with_loader_workers_still_exits():
    """Python's exit ends the workers of a loader still open with SIGTERM and waits for them: a worker that ignored
    SIGTERM hung the process (and a test session) after its last line."""
    script = textwrap.dedent("""
        from torch.utils.data import DataLoader
        from aprkit.data.loading import worker_stop_signals
        batches = iter(DataLoader(list(range(64)), batch_size=2, num_workers=1, worker_init_fn=worker_stop_signals))
        next(batches)
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_stop_that_ends_the_loader_still_saves_the_finished_steps(tmp_path, monkeypatch, capsys):
    """The batch after the second never comes: a SIGTERM came while the main process waited for it and ended the
    worker that was loading it. The two finished steps are saved, and the signal acts."""
    from aprkit.train.data import EpochBatches

    real = EpochBatches.iterate

    def ended_by_a_signal(self, start=0):
        for n, batch in enumerate(real(self, start)):
            if n == 2:
                signal.raise_signal(signal.SIGTERM)
                raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")
            yield batch

    monkeypatch.setattr(EpochBatches, "iterate", ended_by_a_signal)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(_Terminated) as stop:
            fit(train_config(optim={"epochs": 1}), out=tmp_path, datasets=(Images(40), None))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "exited unexpectedly" in str(stop.value.__context__)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["global_step"] == 2
    assert "stopping at step 2 (epoch 1, batch 2 of 5)" in capsys.readouterr().err


def test_a_loader_failure_without_a_stop_is_raised_as_it_is(tmp_path, monkeypatch):
    from aprkit.train.data import EpochBatches

    def failing(self, start=0):
        raise OSError("disk gone")
        yield

    monkeypatch.setattr(EpochBatches, "iterate", failing)
    with pytest.raises(OSError, match="disk gone"):
        fit(train_config(optim={"epochs": 1}), out=tmp_path, datasets=(Images(40), None))
