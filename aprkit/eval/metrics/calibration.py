"""Calibration metrics: ECE, RMS calibration error, NLL, Brier score and reliability-diagram data.

All functions but :func:`nll_from_logits` take ``probs`` of shape ``(N, K)`` (rows sum to 1; pass
``softmax(logits)``) and integer ``labels`` of shape ``(N,)`` as tensors or arrays, compute on the device of
``probs`` and return Python floats. Confidence is the top-label probability ``probs.max(1)``; a sample is
correct when its arg-max equals its label.

Binning conventions
- ECE uses ``n_bins`` equal-width bins ``[i/n, (i+1)/n)``, the last one closed at 1, weighted by the fraction of
  samples in each bin; confidences meet the edges ``k / n`` rounded to their own precision (float32, float16 or
  bfloat16: a float32 0.7 starts the bin [0.7, 0.8), and so does a float16 0.7). torchmetrics' ``CalibrationError`` bins
  the same way except at a confidence of exactly 1, which it gives a bin of its own, and exactly on a few float32
  edges (its ``linspace`` 3/15, 6/15, 7/15 lie one unit above k / n: such a confidence goes to the bin below); the
  two differ only when such samples exist (float64 softmax rarely gives them, and on real float32 outputs the
  values agreed to 1e-6).
- RMS calibration error (Hendrycks et al.) sorts samples by confidence (stable sort) and cuts them into
  consecutive bins of ``bin_size`` samples; the remainder (``N % bin_size`` samples) joins the last bin, and
  with fewer than ``bin_size`` samples there is one bin. Hendrycks' reference ``calib_err`` leaves the last
  bin out of the sum (its loop stops one bin early); we include every bin, so for N = 10,000 our value
  counts all samples where the reference drops the most confident 100. Samples of equal confidence count with
  their tie group's mean correctness, so the value does not depend on the input order (the reference's sort
  splits ties arbitrarily at a bin edge).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

import torch

from ..._checks import describe_value
from ._validate import as_tensor, check_labels_for, check_probs, off_mps

__all__ = [
    "expected_calibration_error",
    "rms_calibration_error",
    "nll",
    "brier",
    "reliability_diagram_data",
    "reliability_from_bins",
    "confidences_and_correct",
    "bin_statistics",
    "ece_from_bins",
    "rms_from_confidences",
    "nll_from_picked",
    "nll_from_logits",
    "brier_from_picked",
]


def confidences_and_correct(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate inputs and return top-label confidences ``(N,)`` and correctness ``(N,)`` (bool)."""
    p = check_probs(probs)
    y = check_labels_for(labels, p.shape[0], p.shape[1], device=p.device)
    conf, pred = p.max(dim=1)
    return conf, pred == y


def _check_n_bins(n_bins: int, name: str = "n_bins") -> int:
    """``n_bins`` as an int: any integral type (NumPy's too), not a bool or a float."""
    if isinstance(n_bins, bool):
        raise TypeError(f"{name} must be a positive int, got {n_bins!r}")
    try:
        n_bins = operator.index(n_bins)
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {n_bins!r}") from None
    if n_bins < 1:
        raise ValueError(f"{name} must be >= 1, got {n_bins}")
    return n_bins


_HALVES = (torch.float16, torch.bfloat16)

#: samples per adaptive bin of the RMS calibration error (Hendrycks et al.'s 100)
RMS_BIN_SIZE = 100


def bin_edges(n_bins: int) -> torch.Tensor:
    """The ``n_bins + 1`` edges ``k / n_bins`` of the equal-width confidence bins, float64, each correctly rounded."""
    return torch.arange(n_bins + 1, dtype=torch.float64) / n_bins


@functools.lru_cache(maxsize=32)
def _inner_edges(n_bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`bin_edges` without the first and last, in ``dtype`` on ``device``: what :func:`_bin_statistics`
    bucketizes against, made once per setting (it runs per evaluated cell; the tensor is only read)."""
    return bin_edges(n_bins)[1:-1].to(dtype).to(device)


def _check_confidences(confidences: Any, correct: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate confidences ``(N,)`` in [0, 1] and correctness ``(N,)`` (bool or 0/1) of the same length."""
    conf = as_tensor(confidences, "confidences")
    corr = as_tensor(correct, "correct")
    conf = off_mps(conf)
    if not conf.is_floating_point():
        raise TypeError(f"confidences must be floating point, got dtype {conf.dtype}")
    if conf.ndim != 1 or corr.ndim != 1:
        raise ValueError(f"confidences and correct must have shape (N,), got {tuple(conf.shape)} and "
                         f"{tuple(corr.shape)}")
    if conf.shape != corr.shape:
        raise ValueError(f"confidences and correct must have the same length, got {conf.shape[0]} and {corr.shape[0]}")
    if not bool(torch.isfinite(conf).all()):
        raise ValueError("confidences contain NaN or infinite values")
    if conf.numel() and (bool((conf < 0).any()) or bool((conf > 1).any())):
        raise ValueError(f"confidences must lie in [0, 1]; got values in [{conf.min().item():.4g}, "
                         f"{conf.max().item():.4g}] (the top-label probability, not a logit)")
    if corr.dtype != torch.bool and not bool(((corr == 0) | (corr == 1)).all()):
        raise ValueError("correct must be bool or 0/1 values")
    return conf, corr.to(conf.device)


def bin_statistics(confidences: Any, correct: Any, n_bins: int = 15) -> torch.Tensor:
    """Per-bin sums over equal-width confidence bins.

    ``confidences`` ``(N,)`` in [0, 1] (the top-label probabilities) and ``correct`` ``(N,)`` (bool or 0/1).
    Returns a float64 tensor ``(3, n_bins)`` on the input's device (the CPU for MPS input): sample counts, summed
    confidences and summed correctness. These fixed-size sums are all ECE and the reliability diagram need, and they add
    across batches and processes.
    """
    conf, corr = _check_confidences(confidences, correct)
    return _bin_statistics(conf, corr, _check_n_bins(n_bins))


def _bin_statistics(confidences: torch.Tensor, correct: torch.Tensor, n_bins: int) -> torch.Tensor:
    """:func:`bin_statistics` on inputs already validated."""
    conf = confidences.detach().reshape(-1).to(torch.float64)
    corr = correct.detach().reshape(-1).to(torch.float64)
    # the edges k / n in the confidences' precision: float32(0.7) lies below float64 0.7, so compared in float64 a
    # float32 confidence of 0.7 fell into [0.6, 0.7) (the value the user gave says [0.7, 0.8)); each edge is k / n
    # rounded, not linspace's (its float32 3/15 and float64 3/10 lie one unit above: 0.2 and 0.3 fell into the bin
    # below; torchmetrics' float32 linspace edges do the same)
    # (half ones against edges rounded to half, compared in float32: float16(k/15) lies below float32(k/15) for 11
    # of the 14 inner edges)
    given = confidences.dtype if confidences.dtype == torch.float64 else torch.float32
    edges = _inner_edges(n_bins, confidences.dtype if confidences.dtype in _HALVES else given, conf.device)
    idx = torch.bucketize(conf.to(given), edges.to(given), right=True)  # [lo, hi); 1: last
    # the three sums in one pass (each bin's in the samples' order, as three separate index_add_ would add them)
    return torch.zeros(3, n_bins, dtype=torch.float64, device=conf.device).index_add_(
        1, idx, torch.stack([torch.ones_like(conf), conf, corr]))


def ece_from_bins(stats: torch.Tensor) -> float:
    """ECE from :func:`bin_statistics`: ``sum_b |sum correct_b - sum conf_b| / N``."""
    return _ece(*_bin_lists(stats))  # a few numbers: summed exactly (fsum) on the host


def _bin_lists(stats: torch.Tensor) -> list[list[float]]:
    """The rows of :func:`bin_statistics`' tensor as lists (one transfer from the device)."""
    if not isinstance(stats, torch.Tensor) or stats.ndim != 2 or stats.shape[0] != 3 or stats.shape[1] == 0:
        raise ValueError(f"stats must be bin_statistics' tensor (3, n_bins), got {describe_value(stats)}")
    return stats.tolist()


def _ece(count: list[float], conf: list[float], corr: list[float]) -> float:
    """:func:`ece_from_bins` of the bins' counts, summed confidences and summed correctness."""
    total = math.fsum(count)
    if total == 0:
        raise ValueError("no samples were binned; ECE needs at least one sample")
    return math.fsum(abs(a - c) for a, c in zip(corr, conf, strict=True)) / total


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins, weighted by bin mass.

    ``probs`` ``(N, K)``, ``labels`` ``(N,)``. ``ECE = sum_b (n_b / N) |acc_b - conf_b|``; in [0, 1].
    """
    conf, correct = confidences_and_correct(probs, labels)
    return ece_from_bins(_bin_statistics(conf, correct, _check_n_bins(n_bins)))


def rms_from_confidences(confidences: Any, correct: Any, bin_size: int = RMS_BIN_SIZE) -> float:
    """RMS calibration error from raw confidences ``(N,)`` in [0, 1] and correctness ``(N,)`` (bool or 0/1; see
    the module docstring)."""
    conf, corr = _check_confidences(confidences, correct)
    if conf.shape[0] == 0:
        raise ValueError("RMS calibration error needs at least one sample")
    return _rms_from_confidences(conf, corr, _check_n_bins(bin_size, "bin_size"))


def _rms_from_confidences(confidences: torch.Tensor, correct: torch.Tensor, bin_size: int) -> float:
    """:func:`rms_from_confidences` on inputs already validated (at least one sample)."""
    conf = confidences.detach().reshape(-1).to(torch.float64)
    corr = correct.detach().reshape(-1).to(torch.float64)
    n = conf.shape[0]
    order = torch.sort(conf, stable=True).indices
    conf, corr = conf[order], corr[order]
    # samples of equal confidence have no order: each gets its tie group's mean correctness, so that a bin edge
    # inside a group (float32 softmax maxima of exactly 1.0, say) does not make the error depend on the input order
    _, group, size = torch.unique_consecutive(conf, return_inverse=True, return_counts=True)
    if size.numel() < n:
        corr = torch.zeros(size.numel(), dtype=torch.float64, device=conf.device).index_add_(0, group, corr)
        corr = (corr / size)[group]
    # consecutive bins of bin_size sorted samples, the remainder in the last: the bins' sizes are known, their summed
    # gaps conf - correct are a reshaped sum (bin_size each) and the last bin's sum
    n_bins = max(n // bin_size, 1)
    full = (n_bins - 1) * bin_size
    gap = conf - corr
    sums = torch.cat([gap[:full].view(n_bins - 1, bin_size).sum(dim=1), gap[full:].sum().reshape(1)]).tolist()
    counts = [bin_size] * (n_bins - 1) + [n - full]
    # sum_b (n_b / N) * (mean gap_b)^2 = sum_b gap_b^2 / (n_b N)
    return math.sqrt(math.fsum(g * g / c for g, c in zip(sums, counts, strict=True)) / n)


def rms_calibration_error(probs: Any, labels: Any, bin_size: int = RMS_BIN_SIZE) -> float:
    """RMS calibration error with adaptive bins of ``bin_size`` samples sorted by confidence.

    ``sqrt(sum_b (n_b / N) (acc_b - conf_b)^2)``; the remainder joins the last bin and every bin counts
    (unlike Hendrycks' reference code, which skips the last bin). In [0, 1].
    """
    conf, correct = confidences_and_correct(probs, labels)
    return _rms_from_confidences(conf, correct, _check_n_bins(bin_size, "bin_size"))


#: the smallest probability :func:`nll` takes the log of: float64's smallest normal number (-log: 708.4). A
#: probability of exactly 0 (a float32 softmax underflows at logit gaps above about 104) counts with that value
_NLL_FLOOR = float(torch.finfo(torch.float64).tiny)


def nll_from_picked(picked: torch.Tensor, eps: float | None = None) -> float:
    """NLL from the probabilities of the true labels ``picked`` ``(N,)`` (unchecked; see :func:`nll`)."""
    return 0.0 - float(picked.to(torch.float64).clamp_min(_NLL_FLOOR if eps is None else eps).log().mean())


def nll_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The exact mean NLL (cross-entropy) from logits ``(N, K)`` and labels ``(N,)`` (unchecked): the float64
    log-softmax, with no probability floor (what :func:`nll` of ``softmax(logits)`` approximates)."""
    logp = torch.log_softmax(logits.to(torch.float64), dim=1)
    return 0.0 - float(logp.gather(1, labels.reshape(-1, 1).to(logp.device)).mean())  # (0.0 -: never -0.0)


def brier_from_picked(probs: torch.Tensor, picked: torch.Tensor) -> float:
    """Brier score from ``probs`` ``(N, K)`` and the true labels' probabilities ``picked`` ``(N,)`` (unchecked).

    ``sum_k (p_k - onehot_k)^2 = sum_k p_k^2 - 2 p_y + 1`` per sample (no one-hot copy of ``probs``),
    clamped at 0 against rounding; see :func:`brier`.
    """
    p = probs.to(torch.float64)
    per_sample = (p * p).sum(dim=1) - 2.0 * picked.to(torch.float64) + 1.0
    return float(per_sample.clamp_min(0.0).mean())


def _picked(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p = check_probs(probs)
    y = check_labels_for(labels, p.shape[0], p.shape[1], device=p.device)
    return p, p.gather(1, y[:, None]).squeeze(1)


def nll(probs: Any, labels: Any, eps: float | None = None) -> float:
    """Mean negative log-likelihood ``-mean_i log p_i[y_i]``. Probabilities are clamped at ``eps`` (default: the
    smallest normal float64, so a probability of exactly 0 counts 708.4; a fixed 1e-12 capped every sample at
    27.6 and read low for confidently wrong models). From logits, the suites use the exact
    :func:`nll_from_logits`."""
    return nll_from_picked(_picked(probs, labels)[1], eps)


def brier(probs: Any, labels: Any) -> float:
    """Brier score: mean over samples of ``sum_k (p_k - onehot(y)_k)^2`` (in [0, 2])."""
    return brier_from_picked(*_picked(probs, labels))


def reliability_from_bins(stats: torch.Tensor) -> dict[str, Any]:
    """Reliability-diagram data from :func:`bin_statistics` (see :func:`reliability_diagram_data`)."""
    count, conf, corr = _bin_lists(stats)  # divided on the host: the same float64 quotients
    return {
        "bin_edges": _edge_list(len(count)),
        "confidence": [s / max(c, 1.0) for s, c in zip(conf, count, strict=True)],
        "accuracy": [s / max(c, 1.0) for s, c in zip(corr, count, strict=True)],
        "count": [int(c) for c in count],
        "ece": _ece(count, conf, corr),
    }


@functools.lru_cache(maxsize=32)
def _edges_tuple(n_bins: int) -> tuple[float, ...]:
    return tuple(bin_edges(n_bins).tolist())


def _edge_list(n_bins: int) -> list[float]:
    """:func:`bin_edges` as a new list of floats (the values made once per ``n_bins``)."""
    return list(_edges_tuple(n_bins))


def reliability_diagram_data(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, Any]:
    """Per-bin data for a reliability diagram (JSON-serialisable lists).

    Returns ``{"bin_edges": [n_bins + 1], "confidence": [n_bins], "accuracy": [n_bins],
    "count": [n_bins], "ece": float}``; empty bins have count 0 and confidence/accuracy 0.0.
    """
    conf, correct = confidences_and_correct(probs, labels)
    return reliability_from_bins(_bin_statistics(conf, correct, _check_n_bins(n_bins)))

