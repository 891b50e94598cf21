"""OOD-detection metrics: AUROC, AUPR-In, AUPR-Out and FPR at a fixed TPR.

Convention: a **higher score means "more in-distribution"** (Hendrycks & Gimpel 2017, ODIN, OpenOOD's ``conf``).
In-distribution samples are the **positive class** for AUROC, AUPR-In and FPR@TPR (ODIN's ``calMetric``); AUPR-Out
treats OOD samples as positive and uses the negated scores.

- ``auroc`` is the probability that a random ID sample scores above a random OOD sample, ties counting
  1/2 (Mann-Whitney U; equals ``sklearn.metrics.roc_auc_score``).
- ``auroc_se`` is its standard error by DeLong et al. (1988): from each sample's placement among the other set
  (the fraction of the other set it beats, ties 1/2), ``sqrt(var_in / n_in + var_out / n_out)`` with the
  unbiased variances of the two sets' placements; NaN when a set has fewer than two samples. It needs no
  resampling, so it is the same on every run; with few OOD images (tens) it is the number that says whether two
  AUROCs differ beyond the sampling noise.
- ``aupr_in`` / ``aupr_out`` are average precision without interpolation, a step sum over the distinct
  thresholds (equals ``sklearn.metrics.average_precision_score``).
- ``fpr_at_tpr(tpr=0.95)`` thresholds at the largest score ``t`` that accepts (``score >= t``) at least
  95% of the ID samples and returns the fraction of OOD samples with ``score >= t``: OOD samples tied with
  the threshold count as accepted. This is the first ROC point with TPR >= 0.95 (sklearn's ``roc_curve``
  with ``drop_intermediate=False``), not the nearest-point rule of some reference scripts. It is ODIN's FPR at 95 %
  TPR, not the "FPR95" of Outlier Exposure's scripts (``display_results``) or OpenOOD v1.5 (``auc_and_fpr_recall``),
  which take the OOD images as positive: the fraction of ID images flagged at 95 % OOD recall, another number (for a
  CIFAR ResNet-20 against Gaussian noise 0.24 there against 0.75 here). For the same scores AUROC equals both
  scripts' AUROC and AUPR-Out Outlier Exposure's AUPR (``average_precision_score``); OpenOOD v1.5's AUPR is the
  trapezoid area under the precision-recall curve, which reads higher where scores tie (by 1-4 points on a
  max-softmax score saturated at 1). The suite's defaults differ from Outlier Exposure's protocol, which scores one
  OOD image per five ID ones (AUPR depends on that ratio, AUROC and FPR do not: ``ood_limit`` sets it).

Inputs: 1-D score tensors/arrays (any lengths >= 1); computed on the device of ``scores_in``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._validate import check_scores

__all__ = ["auroc", "auroc_se", "aupr_in", "aupr_out", "fpr_at_tpr", "ood_metrics"]


def _pair(scores_in: Any, scores_out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s_in = check_scores(scores_in, "scores_in").to(torch.float64)
    s_out = check_scores(scores_out, "scores_out").to(device=s_in.device, dtype=torch.float64)
    return s_in, s_out


def _midranks(s: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``s`` with ties given their average rank."""
    sorted_s, order = torch.sort(s)
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    ranks = torch.empty_like(s)
    ranks[order] = (ends - (counts.to(torch.float64) - 1) / 2)[inverse]
    return ranks


def _joint_ranks(s_in: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
    """Midranks of the ID then the OOD scores among both sets (what AUROC and its standard error share)."""
    return _midranks(torch.cat([s_in, s_out]))


def _auroc(s_in: torch.Tensor, s_out: torch.Tensor, ranks: torch.Tensor | None = None) -> float:
    ranks = _joint_ranks(s_in, s_out) if ranks is None else ranks
    n_in, n_out = s_in.numel(), s_out.numel()
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))


def _auroc_se(s_in: torch.Tensor, s_out: torch.Tensor, ranks: torch.Tensor | None = None) -> float:
    n_in, n_out = s_in.numel(), s_out.numel()
    if min(n_in, n_out) < 2:
        return math.nan
    ranks = _joint_ranks(s_in, s_out) if ranks is None else ranks
    # placements: the share of the other set each sample beats (ties 1/2), from its rank among both sets minus
    # its rank within its own set
    v_in = (ranks[:n_in] - _midranks(s_in)) / n_out
    v_out = 1 - (ranks[n_in:] - _midranks(s_out)) / n_in
    return math.sqrt(float(v_in.var() / n_in + v_out.var() / n_out))


def _average_precision(pos: torch.Tensor, neg: torch.Tensor) -> float:
    s = torch.cat([pos, neg])
    is_pos = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    sorted_s, order = torch.sort(s, descending=True, stable=True)
    is_pos = is_pos[order]
    tp = is_pos.cumsum(0)
    fp = (1 - is_pos).cumsum(0)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)
    last = counts.cumsum(0) - 1  # last index of each tie group = one threshold per distinct score
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / pos.numel()
    d_recall = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((d_recall * precision).sum())


def auroc(scores_in: Any, scores_out: Any) -> float:
    """Area under the ROC curve with ID as the positive class (higher score = more ID); in [0, 1]."""
    return _auroc(*_pair(scores_in, scores_out))


def auroc_se(scores_in: Any, scores_out: Any) -> float:
    """DeLong's standard error of :func:`auroc` (see module doc); NaN when a set has fewer than two scores."""
    return _auroc_se(*_pair(scores_in, scores_out))


def aupr_in(scores_in: Any, scores_out: Any) -> float:
    """Average precision with ID samples positive and scores as given."""
    s_in, s_out = _pair(scores_in, scores_out)
    return _average_precision(s_in, s_out)


def aupr_out(scores_in: Any, scores_out: Any) -> float:
    """Average precision with OOD samples positive and negated scores."""
    s_in, s_out = _pair(scores_in, scores_out)
    return _average_precision(-s_out, -s_in)


def fpr_at_tpr(scores_in: Any, scores_out: Any, tpr: float = 0.95) -> float:
    """Fraction of OOD samples accepted at the threshold accepting ``tpr`` of the ID samples (see module doc)."""
    try:
        tpr = float(tpr)
    except (TypeError, ValueError):
        raise TypeError(f"tpr must be a number in (0, 1], got {tpr!r}") from None
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    s_in, s_out = _pair(scores_in, scores_out)
    n = s_in.numel()
    k = min(max(math.ceil(tpr * n - 1e-9), 1), n)  # accept at least k ID samples
    threshold = torch.sort(s_in, descending=True).values[k - 1]
    return float((s_out >= threshold).to(torch.float64).mean())


def ood_metrics(scores_in: Any, scores_out: Any, tpr: float = 0.95) -> dict[str, float]:
    """All four metrics and AUROC's standard error at once: ``{"auroc", "auroc_se", "aupr_in", "aupr_out",
    "fpr@95"}`` (the key follows ``tpr``: ``fpr@99.9`` for 0.999)."""
    s_in, s_out = _pair(scores_in, scores_out)
    ranks = _joint_ranks(s_in, s_out)  # one sort for both
    return {
        "auroc": _auroc(s_in, s_out, ranks),
        "auroc_se": _auroc_se(s_in, s_out, ranks),
        "aupr_in": _average_precision(s_in, s_out),
        "aupr_out": _average_precision(-s_out, -s_in),
        f"fpr@{_percent(tpr)}": fpr_at_tpr(s_in, s_out, tpr),
    }


def _percent(tpr: float) -> str:
    """``tpr`` as the percent in the FPR key: ``95``, ``99.9``, ``92.5`` (rounding merged 0.999 into ``fpr@100``)."""
    return f"{float(tpr) * 100:.6g}"
