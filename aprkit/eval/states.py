"""Stateful metrics (torchmetrics style) built on the functional code in :mod:`aprkit.eval.metrics`.

Each class has ``update(...)`` per batch, ``compute() -> dict`` (JSON-serialisable), ``reset()``, and
``state_dict()`` / ``load_state_dict()`` / ``merge_state(other)`` so that shards evaluated in different
processes (or resumed runs) combine exactly; ``sync()`` does the merge across ``torch.distributed``
ranks. Fixed-size states (counts, per-bin sums, summed NLL/Brier) add; the RMS calibration error and OOD
metrics need every sample's confidence/score, kept in a growing buffer (one float per sample).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .metrics._validate import check_labels_for, check_probs, check_scores
from .metrics.calibration import bin_statistics, ece_from_bins, reliability_from_bins, rms_from_confidences
from .metrics.classification import topk_correct
from .metrics.ood import ood_metrics

__all__ = ["MetricState", "AccuracyState", "CalibrationState", "OODState"]


class MetricState:
    """Base class: subclasses list their summed tensors in ``_sums`` and their buffers in ``_buffers``."""

    _sums: tuple[str, ...] = ()
    _buffers: tuple[str, ...] = ()

    def reset(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """CPU tensors: the sums, plus each buffer concatenated."""
        out = {k: getattr(self, k).detach().cpu().clone() for k in self._sums}
        for k in self._buffers:
            parts = getattr(self, k)
            out[k] = torch.cat([p.detach().cpu() for p in parts]) if parts else torch.zeros(0, dtype=torch.float64)
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.reset()
        self.merge_state(state)

    def merge_state(self, other: MetricState | Mapping[str, torch.Tensor]) -> None:
        """Add another state (same configuration) into this one."""
        state = other.state_dict() if isinstance(other, MetricState) else other
        if isinstance(other, MetricState) and type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k in self._sums:
            mine = getattr(self, k)
            theirs = torch.as_tensor(state[k]).to(device=mine.device, dtype=mine.dtype)
            if theirs.shape != mine.shape:
                raise ValueError(f"cannot merge state {k!r} of shape {tuple(theirs.shape)} into {tuple(mine.shape)} (different configuration)")
            mine += theirs
        for k in self._buffers:
            if state[k].numel():
                getattr(self, k).append(torch.as_tensor(state[k]))

    def sync(self, group: Any = None) -> None:
        """Merge the states of all ``torch.distributed`` ranks into every rank (no-op when not initialised)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, self.state_dict(), group=group)
        self.reset()
        for s in gathered:
            self.merge_state(s)

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError


class AccuracyState(MetricState):
    """Top-k accuracy; ``update(outputs (N, K) or predicted labels (N,), labels (N,))``.

    ``compute()`` -> ``{"n", "accuracy", "error"}`` plus ``"top{k}_accuracy"`` for each other ``k``.
    """

    _sums = ("correct", "total")

    def __init__(self, top_k: Sequence[int] = (1,)):
        self.top_k = tuple(int(k) for k in top_k)
        if not self.top_k or 1 not in self.top_k:
            raise ValueError(f"top_k must include 1, got {top_k!r}")
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(len(self.top_k), dtype=torch.int64)
        self.total = torch.zeros((), dtype=torch.int64)

    def update(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        hits = topk_correct(outputs, labels, self.top_k)
        self.correct += hits.cpu()
        self.total += int(outputs.shape[0])

    def compute(self) -> dict[str, Any]:
        n = int(self.total)
        if n == 0:
            raise ValueError("AccuracyState.compute called before any update")
        acc = {k: int(c) / n for k, c in zip(self.top_k, self.correct.tolist(), strict=True)}
        out: dict[str, Any] = {"n": n, "accuracy": acc[1], "error": 1.0 - acc[1]}
        out.update({f"top{k}_accuracy": v for k, v in acc.items() if k != 1})
        return out


class CalibrationState(MetricState):
    """Accuracy, ECE, RMS calibration error, NLL, Brier and reliability bins, accumulated over batches.

    ``update(outputs (N, K), labels (N,))`` with ``outputs`` logits (``inputs="logits"``, softmax in
    float64) or probabilities (``inputs="probs"``). Fixed-size state: ``(3, n_bins)`` bin sums, summed
    NLL and Brier, counts. With ``keep_confidences=True`` (default) the per-sample top-label confidence
    and correctness (two floats per sample) are kept for the RMS error, which needs sorting all samples.
    """

    _sums = ("bins", "nll_sum", "brier_sum", "total", "correct")

    def __init__(self, n_bins: int = 15, *, inputs: str = "logits", bin_size: int = 100, keep_confidences: bool = True, eps: float = 1e-12):
        if inputs not in ("logits", "probs"):
            raise ValueError(f"inputs must be 'logits' or 'probs', got {inputs!r}")
        self.n_bins, self.inputs, self.bin_size, self.keep_confidences, self.eps = int(n_bins), inputs, int(bin_size), keep_confidences, eps
        self._buffers = ("conf_correct",) if keep_confidences else ()
        self.reset()

    def reset(self) -> None:
        self.bins = torch.zeros(3, self.n_bins, dtype=torch.float64)
        self.nll_sum = torch.zeros((), dtype=torch.float64)
        self.brier_sum = torch.zeros((), dtype=torch.float64)
        self.total = torch.zeros((), dtype=torch.int64)
        self.correct = torch.zeros((), dtype=torch.int64)
        self.conf_correct: list[torch.Tensor] = []  # each (2, n): confidence, correctness

    def _probs(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.inputs == "probs":
            return check_probs(outputs, "outputs")
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or not outputs.is_floating_point():
            raise ValueError("outputs must be float logits of shape (N, K)")
        if not bool(torch.isfinite(outputs).all()):
            raise ValueError("logits contain NaN or infinite values (check the model's output)")
        return torch.softmax(outputs.detach().double(), dim=1)

    def update(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        p = self._probs(outputs).detach().to(torch.float64)
        y = check_labels_for(labels, p.shape[0], p.shape[1], device=p.device)
        conf, pred = p.max(dim=1)
        hit = pred == y
        self.bins += bin_statistics(conf, hit, self.n_bins).cpu()
        picked = p.gather(1, y[:, None]).squeeze(1)
        self.nll_sum += -picked.clamp_min(self.eps).log().sum().cpu()
        sq = (p**2).sum(dim=1) - 2 * picked + 1  # sum_k (p_k - onehot_k)^2
        self.brier_sum += sq.sum().cpu()
        self.total += p.shape[0]
        self.correct += int(hit.sum())
        if self.keep_confidences:
            self.conf_correct.append(torch.stack([conf, hit.to(torch.float64)]).cpu())

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {k: getattr(self, k).detach().cpu().clone() for k in self._sums}
        if self.keep_confidences:
            out["conf_correct"] = torch.cat(self.conf_correct, dim=1) if self.conf_correct else torch.zeros(2, 0, dtype=torch.float64)
        return out

    def compute(self) -> dict[str, Any]:
        n = int(self.total)
        if n == 0:
            raise ValueError("CalibrationState.compute called before any update")
        out: dict[str, Any] = {
            "n": n,
            "accuracy": int(self.correct) / n,
            "ece": ece_from_bins(self.bins),
            "nll": float(self.nll_sum) / n,
            "brier": float(self.brier_sum) / n,
            "reliability": reliability_from_bins(self.bins),
        }
        if self.keep_confidences:
            cc = torch.cat(self.conf_correct, dim=1)
            out["rms"] = rms_from_confidences(cc[0], cc[1], self.bin_size)
        return out


class OODState(MetricState):
    """Collects in- and out-of-distribution scores (higher = more ID); ``compute()`` -> AUROC, AUPR-In/Out, FPR@TPR.

    ``update(scores (N,), is_in)`` with ``is_in`` a bool or a bool tensor ``(N,)``; scores are kept (one
    float each) because the metrics rank all samples.
    """

    _buffers = ("scores_in", "scores_out")

    def __init__(self, tpr: float = 0.95):
        self.tpr = float(tpr)
        self.reset()

    def reset(self) -> None:
        self.scores_in: list[torch.Tensor] = []
        self.scores_out: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, is_in: bool | torch.Tensor) -> None:
        s = check_scores(scores, "scores").detach().to(torch.float64).cpu()
        if isinstance(is_in, torch.Tensor):
            mask = is_in.detach().cpu().bool().reshape(-1)
            if mask.shape[0] != s.shape[0]:
                raise ValueError(f"is_in must have one entry per score ({s.shape[0]}), got {mask.shape[0]}")
            self.scores_in.append(s[mask])
            self.scores_out.append(s[~mask])
        else:
            (self.scores_in if is_in else self.scores_out).append(s)

    def compute(self) -> dict[str, Any]:
        s_in = torch.cat(self.scores_in) if self.scores_in else torch.zeros(0)
        s_out = torch.cat(self.scores_out) if self.scores_out else torch.zeros(0)
        if s_in.numel() == 0 or s_out.numel() == 0:
            raise ValueError(f"OODState needs both ID and OOD scores, got {s_in.numel()} ID and {s_out.numel()} OOD")
        out: dict[str, Any] = {"n_in": int(s_in.numel()), "n_out": int(s_out.numel())}
        out.update(ood_metrics(s_in, s_out, self.tpr))
        return out
