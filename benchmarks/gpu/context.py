"""Per-section state of the GPU check and the registry of its sections.

Every section runs in its own process (``gpu_check.py --section NAME``): a CUDA error or a hang in
one cannot take the others down, and the parent kills it at its time cap. A section receives a
:class:`Context`, stores its numbers in ``ctx.results`` and calls ``ctx.save()`` after each
measurement, so whatever was measured before a crash or a kill is kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Context", "Section", "SECTIONS", "STRIDED_SCALE", "section", "to_jsonable"]

#: the compile section's row of ``apr_pair`` compiled with the amplitude scaling as aprkit had it (two strided in-place
#: multiplies, which Inductor turned into two copies of the spectrum), beside the ``apr_pair`` row in the same mode:
#: what the fused scaling gains, measured in the same run; not an APR-P goal figure (the report leaves it out)
STRIDED_SCALE = "apr_pair strided scale"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types for nested dicts/lists of numbers, tensors, dtypes, devices and paths."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None  # NaN/inf are not JSON
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


@dataclass
class Context:
    """What a section needs: the device, quick mode, its soft deadline and where its results go."""

    device: torch.device
    quick: bool
    deadline: float  # time.perf_counter() value after which no new measurement should start
    result_path: Path | None = None
    out_dir: Path | None = None
    compile_backend: str = "inductor"
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        """Seconds before the soft deadline (negative once past it)."""
        return self.deadline - time.perf_counter()

    def expired(self) -> bool:
        return self.left() <= 0

    def log(self, msg: str) -> None:
        """A progress line in the section's log (its tail is reported when the section is killed)."""
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def skip(self, what: str) -> None:
        """Record that ``what`` was not measured because the section's time cap was reached."""
        self.results.setdefault("skipped_for_time", []).append(what)
        self.save()

    def problem(self, what: str) -> None:
        """Record work of the section that failed or was cut short although the section itself ran to its end (a
        test run killed at the cap, a compile error): the parent then marks the section an error."""
        self.results.setdefault("section_problems", []).append(what)
        self.save()

    def save(self, done: bool = False, error: str | None = None) -> None:
        """Write the results so far (atomically) for the parent process."""
        if self.result_path is None:
            return
        from aprkit._io import atomic_write_text

        payload = {"results": to_jsonable(self.results), "done": done, "error": error}
        atomic_write_text(self.result_path, json.dumps(payload, indent=1))

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class Section:
    name: str
    fn: Callable[[Context], None]
    cap_s: float  # hard time cap (whole subprocess) on a GPU
    quick_cap_s: float  # the same in --quick mode
    title: str
    takes_unused: bool = False  # its cap grows by what the sections before it left of theirs (the run's sum stays)


SECTIONS: dict[str, Section] = {}


def section(name: str, cap_s: float, quick_cap_s: float, title: str,
            takes_unused: bool = False) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register a section function under ``name`` with its time caps (run order = registration order);
    ``takes_unused``: the section may also use the time the sections before it left of their caps."""

    def deco(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        if name in SECTIONS:
            raise ValueError(f"section {name!r} is registered twice")
        SECTIONS[name] = Section(name, fn, cap_s, quick_cap_s, title, takes_unused)
        return fn

    return deco
