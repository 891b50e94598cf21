"""Per-epoch training metrics to ``metrics.csv`` and ``metrics.json`` (and TensorBoard when installed).

Both files are rewritten atomically from the full history after every row, so a resumed run that drops
rows past its checkpoint leaves consistent files. Only the main process (rank 0) writes.

``train_loss`` is the training objective per batch: for ``apr_p`` and ``apr_sp`` CE(clean) + CE(APR batch), about
twice a single cross-entropy and so not comparable with ``test_loss``; for ``augmix_jsd`` CE(clean) plus the weighted
Jensen-Shannon term. ``train_acc`` is measured on the clean images (``apr_p_only``: on its APR batch).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write_text, to_jsonable

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Collect rows (dicts of scalars) and mirror them to CSV/JSON/TensorBoard under ``out``.

    ``out=None`` or ``enabled=False`` keeps the history in memory only.
    """

    def __init__(self, out: str | os.PathLike[str] | None, *, enabled: bool = True, tensorboard: bool = True,
                 history: Sequence[dict[str, Any]] = (), report: Callable[[list[dict[str, Any]]], Any] | None = None):
        self.out = Path(out) if out is not None and enabled else None
        self.history: list[dict[str, Any]] = [dict(r) for r in history]
        self._report = report  # called with the history after the files are rewritten (the run's report)
        self._tb = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(log_dir=str(self.out / "tb"))
                except ImportError:  # tensorboard not installed
                    self._tb = None
            if self.history:
                self._flush()

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row`` and rewrite the files; TensorBoard gets every numeric field at ``row['step']``. The first
        epoch whose training loss is not finite is reported on stderr (the run diverged)."""
        loss = row.get("train_loss")
        first = isinstance(loss, float) and not math.isfinite(loss) and all(
            isinstance(r.get("train_loss"), float) and math.isfinite(r["train_loss"]) for r in self.history)
        self.history.append(dict(row))
        if self.out is None:  # every rank but the writing one, or no folder
            return
        if first:  # once, by the process that writes the files
            print(f"aprkit train: warning: the training loss is {loss} at epoch {row.get('epoch')}: the run diverged "
                  "(lower optim.lr, or check the data); metrics.json writes null for it", file=sys.stderr)
        self._flush()
        if self._tb is not None:
            step = int(row.get("step", len(self.history)))
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def _flush(self) -> None:
        assert self.out is not None
        keys: list[str] = []
        for row in self.history:
            keys.extend(k for k in row if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.out / "metrics.csv", buf.getvalue())
        atomic_write_text(self.out / "metrics.json", json.dumps(to_jsonable(self.history), indent=1))  # NaN: null
        if self._report is not None:
            self._report(self.history)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
