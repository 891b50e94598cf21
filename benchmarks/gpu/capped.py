"""A child process with a hard time cap: its own process session (killed with its children at the cap), output
to a log file. Used by ``gpu_check.py`` (one section per child) and ``repro/gpu_driver.py`` (one job of
``repro/gpu_studies.py`` per child). Needs no torch, so planning and ``--dry-run`` stay light.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CappedProcess", "tail"]


def tail(path: Path, n: int = 2000) -> str:
    """The last ``n`` characters of a text file ('' when unreadable)."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the gpu-check process dies, so a section killed with it (the
    device call's time limit) does not live on and skew a rerun's timings."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class CappedProcess:
    """Start ``cmd`` (stdout and stderr to ``log``) in a new process session; :meth:`poll` kills the whole
    session once ``cap`` seconds have passed. ``timed_out`` says whether it was killed that way (or by :meth:`kill`)."""

    def __init__(self, cmd: Sequence[str], log: Path, cap: float, cwd: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.cap, self.log, self.timed_out = cap, log, False
        self.ended: float | None = None
        log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=dict(env) if env is not None else None,
                                         preexec_fn=_die_with_parent)

    @property
    def wall(self) -> float:
        """Seconds from the start to the end (to now while it runs)."""
        return (self.ended or time.perf_counter()) - self.started

    @property
    def done(self) -> bool:
        return self.ended is not None

    def _end(self) -> None:
        if self.ended is None:
            self.ended = time.perf_counter()

    def kill(self) -> None:
        """Kill the child and everything it started (its process session); mark it as timed out."""
        self.timed_out = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:  # a process stuck in driver teardown must not hold up the next section
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        self._end()

    def poll(self) -> int | None:
        """The exit code once the child has ended (killed at the cap: None and ``timed_out``), else None."""
        rc = self.proc.poll()
        if rc is not None:
            self._end()
        elif self.wall >= self.cap:
            self.kill()
        return None if self.timed_out else rc

    def wait(self) -> int | None:
        """Block until the child ends or is killed at the cap; the exit code (None when killed)."""
        try:
            rc = self.proc.wait(timeout=max(0.0, self.cap - self.wall))
            self._end()
            return rc
        except subprocess.TimeoutExpired:
            self.kill()
            return None
