"""A stop asked for by a signal waits for the end of the training step.

Ctrl-C (``SIGINT``) or ``SIGTERM`` (a scheduler's preemption, ``kill``, a stopped container) used to stop training
wherever it landed, losing the epoch's steps since the last checkpoint. Inside :func:`deferred_stop` the first such
signal is only recorded: the loop finishes its step, saves ``last.pt`` at that step (a resume goes on from it, bit
for bit), then delivers the signal again to whatever handled it before (Python's ``KeyboardInterrupt``, the CLI's
``SIGTERM`` handler, or the default action, which ends the process). A second Ctrl-C while the first waits is
delivered at once; a repeated ``SIGTERM`` is not (a scheduler signals every process of a job and ``torchrun``'s agent
forwards the signal to its workers again: one stop arrives twice; the sender's ``SIGKILL`` is its hard stop).

Under ``torchrun`` every rank defers and the ranks agree on the stop (:class:`RankAgreement`): all of them stop after
the same step, one step after the first rank was sent the signal, and save it together. Handlers can only be set in
the main thread; elsewhere nothing is deferred.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, TypeVar

import torch

T = TypeVar("T")

__all__ = ["DeferredStop", "LocalAgreement", "RankAgreement", "deferred_stop", "stop_agreement"]

#: the signals whose stop waits for the end of a step
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class DeferredStop:
    """The signal that asked for a stop (``pending``), and :meth:`deliver` to act on it at a safe point."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum
        elif signum == signal.SIGINT:  # Ctrl-C twice: stop now (a repeated SIGTERM is one stop sent twice)
            self.pending = signum
            self.deliver()

    def install(self) -> None:
        for sig in SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal stays ignored (nohup'd, `cmd &`)
                self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Give the signals back to their earlier handlers (the default where one was set outside Python)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def deliver(self, agreed: int | None = None) -> None:
        """Restore the earlier handlers and raise the pending signal again, so that it does what it would have done
        (raise ``KeyboardInterrupt``, run the caller's handler, or end the process); with none pending, the ``agreed``
        one (another rank's, :class:`RankAgreement`), else nothing."""
        signum, self.pending = self.pending if self.pending is not None else agreed, None
        self.restore()
        if signum is not None:
            signal.raise_signal(signum)

    def until_stop(self, items: Iterable[T], stop_here: Callable[[], None]) -> Iterator[T]:
        """Yield ``items`` (an epoch's batches). Failing to fetch the next one while a stop is pending calls
        ``stop_here`` (which saves the steps so far and :meth:`deliver` s the signal) instead of losing them: a
        scheduler's ``SIGTERM`` to every process of the job also ends the loader's workers, and the batch the main
        process was waiting for never comes ("worker exited unexpectedly")."""
        batches = iter(items)
        while True:
            try:
                item = next(batches)
            except StopIteration:
                return
            except Exception:
                if self.pending is None:
                    raise
                stop_here()
                raise  # stop_here delivered the signal; a caller's handler that returns leaves the failure
            yield item


class LocalAgreement:
    """One process's stop: the signal pending now. The training loop asks an agreement, never the
    :class:`DeferredStop` itself, so that one process and the ranks of a distributed run take the same path."""

    def __init__(self, stop: DeferredStop) -> None:
        self.stop = stop

    def step(self) -> int | None:
        """The signal to stop at after this training step (None: train on)."""
        return self.stop.pending

    def now(self) -> int | None:
        """The signal to stop at now (an epoch's end)."""
        return self.stop.pending

    def batches(self, items: Iterable[T], stop_here: Callable[[], None]) -> Iterator[T]:
        """An epoch's batches; a loader that fails while a stop is pending saves the steps so far
        (:meth:`DeferredStop.until_stop`)."""
        return self.stop.until_stop(items, stop_here)

    def deliver(self, agreed: int | None) -> None:
        """Act on the ``agreed`` stop (:meth:`DeferredStop.deliver`); returns when a handler returned: training goes
        on."""
        self.stop.deliver(agreed)
        self.acted()

    def acted(self) -> None:
        """The stop was acted on and training goes on."""

    def close(self) -> None:
        """The training is over."""


class RankAgreement(LocalAgreement):
    """The stop the ranks of a distributed run agree on: every rank calls :meth:`step` after each training step.

    :meth:`step` sends this rank's pending signal (0: none) in an all-reduce (max) on a Gloo group of its own (CPU
    tensors whatever the training's backend: no device sync), which runs in the background while the next step
    trains, and returns the signal agreed by the one sent a step earlier, so that every rank learns it after the same
    step. :meth:`now` waits for an agreement on the signals pending now (an epoch's end); :meth:`close` waits for the
    all-reduce in flight and releases the group. Once agreed, a signal stays agreed (:attr:`agreed`).
    """

    def __init__(self, stop: DeferredStop) -> None:
        import torch.distributed as dist

        super().__init__(stop)
        self._dist = dist
        group = dist.new_group(backend="gloo")  # every rank, in the same order: where the loop starts
        assert isinstance(group, dist.ProcessGroup)  # every rank is a member
        self._group = group
        self._flag = torch.zeros(1, dtype=torch.int64)
        self._work: Any = None
        self.agreed: int | None = None

    def _send(self) -> None:
        self._flag = torch.tensor([self.stop.pending or 0], dtype=torch.int64)
        self._work = self._dist.all_reduce(self._flag, op=self._dist.ReduceOp.MAX, group=self._group, async_op=True)

    def _receive(self) -> None:
        if self._work is not None:
            self._work_done()
            if self.agreed is None and int(self._flag[0]):
                self.agreed = int(self._flag[0])

    def step(self) -> int | None:
        """The signal agreed one step ago (None: no rank had one), after sending this rank's for the next step."""
        self._receive()
        self._send()
        return self.agreed

    def now(self) -> int | None:
        """The signal any rank has pending now or had before (None: none); waits for every rank."""
        self._receive()
        self._send()
        self._receive()
        return self.agreed

    def batches(self, items: Iterable[T], stop_here: Callable[[], None]) -> Iterator[T]:
        """An epoch's batches as they come: ranks whose loaders fail at different steps cannot save together."""
        return iter(items)

    def acted(self) -> None:
        """The agreed stop was delivered and training goes on (a handler that returned): forget it, and the all-reduce
        in flight, which may carry it again (every rank acts after the same step, so every rank drops the same one)."""
        self._work_done()
        self.agreed = None

    def _work_done(self) -> None:
        if self._work is not None:
            self._work.wait()
            self._work = None

    def close(self) -> None:
        self._receive()
        self._dist.destroy_process_group(self._group)


def stop_agreement(stop: DeferredStop, world: int) -> LocalAgreement:
    """How the ``world`` processes of a training decide when ``stop`` acts: :class:`RankAgreement` with more than
    one (every rank must call it, where the loop starts), else :class:`LocalAgreement`."""
    return RankAgreement(stop) if world > 1 else LocalAgreement(stop)


@contextlib.contextmanager
def deferred_stop(enabled: bool = True) -> Iterator[DeferredStop]:
    """Defer ``SIGINT`` / ``SIGTERM`` while the block runs (see the module docstring); a signal still pending when
    it ends is delivered then. ``enabled=False``, or outside the main thread, yields a :class:`DeferredStop` that
    never has a signal pending."""
    stop = DeferredStop()
    if enabled and threading.current_thread() is threading.main_thread():
        stop.install()
    try:
        yield stop
    finally:  # a signal that came after the last safe point still stops
        stop.deliver()
