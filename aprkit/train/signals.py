"""A stop asked for by a signal waits for the end of the training step.

Ctrl-C (``SIGINT``) or ``SIGTERM`` (a scheduler's preemption, ``kill``, a stopped container) used to stop training
wherever it landed, losing the epoch's steps since the last checkpoint. Inside :func:`deferred_stop` the first such
signal is only recorded: the loop finishes its step, saves ``last.pt`` at that step (a resume goes on from it, bit
for bit), then delivers the signal again to whatever handled it before (Python's ``KeyboardInterrupt``, the CLI's
``SIGTERM`` handler, or the default action, which ends the process). A second signal while the first waits is
delivered at once.

Only the main thread of a single-process run defers: signal handlers can only be set there, and under ``torchrun``
the ranks would reach the step at different times (they keep the default behaviour; ``train.checkpoint_every_steps``
bounds what a stop loses there).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["DeferredStop", "deferred_stop"]

#: the signals whose stop waits for the end of a step
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class DeferredStop:
    """The signal that asked for a stop (``pending``), and :meth:`deliver` to act on it at a safe point."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.pending, again = signum, self.pending is not None
        if again:  # asked twice: stop now
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

    def deliver(self) -> None:
        """Restore the earlier handlers and raise the pending signal again, so that it does what it would have done
        (raise ``KeyboardInterrupt``, run the caller's handler, or end the process); nothing when none is pending."""
        signum, self.pending = self.pending, None
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
