"""Headline numbers of the demo, an honest verdict per measure, and the demo's report section.

Every verdict is computed from the measured numbers: APR-SP "helped" on a measure when it is better than the
standard model by more than two (approximate) standard errors of the difference, "hurt" when it is worse by that
much, otherwise "no clear difference". Standard errors: binomial ``sqrt(p (1 - p) / n)`` for rates (accuracy,
corruption error, shape bias, phase-follow rate; phase bias is a rate over the ``n`` pairs on which the model
followed either donor); for the AUROC averaged over the noise sets, the mean of the sets' DeLong standard errors
(a bound: the sets share the test images). For a calibration error (ECE, RMS) the binned first-order error
``sqrt(sum_b w_b a_b (1 - a_b) / n)`` (``w_b``, ``a_b``: mass and accuracy of confidence bin ``b``), the noise
of the bins' accuracies; the corrupted numbers are means over (corruption, severity) cells of the same ``n``
test images, so their error counts ``n`` images, not ``n`` x cells (cells fully correlated, a conservative
choice). They ignore the seed-to-seed variation of training, so a single run's verdict is indicative, not a
significance test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..eval.engine.cache import nested_get
from ..eval.report.blocks import Table, strong
from ..eval.suites.corruption import MEAN_CELL_ERROR

__all__ = ["Headline", "MEASURES", "headline_numbers", "verdicts", "verdict_table", "summary_text", "overall_sentence",
           "se_rate"]


@dataclass(frozen=True)
class Headline:
    """One summary measure: key, label, whether higher is better, and how to print it. ``claim``: no direction is
    better in general (a descriptive measure: shape or phase bias, which ``aprkit eval`` marks "neither"); the
    direction is the one the APR paper claims for APR training, and "helped" means moved that way."""

    key: str
    label: str
    higher_is_better: bool
    percent: bool = True
    claim: bool = False


MEASURES: tuple[Headline, ...] = (
    Headline("clean_accuracy", "clean accuracy", True),
    Headline("mean_corruption_error", "mean corruption error", False),
    Headline("ece", "ECE (clean)", False),
    Headline("corrupted_ece", "ECE (corrupted, mean over cells)", False),
    Headline("corrupted_rms", "RMS calibration error (corrupted)", False),
    Headline("ood_auroc", "OOD AUROC (MSP, mean over noise sets)", True),
    Headline("shape_bias", "shape bias (cue-conflict)", True, percent=False, claim=True),
    Headline("phase_follow", "phase-follow rate (full swap)", True, claim=True),
    Headline("phase_bias", "phase bias (full swap)", True, percent=False, claim=True),
)


def headline_numbers(suites: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{measure key: {"value": x, "n": sample size, ...}}`` of one model's suite results."""
    cor, cal, ood = suites.get("corruption") or {}, suites.get("calibration") or {}, suites.get("ood") or {}
    cue, ph = suites.get("cue-conflict") or {}, suites.get("phase-bias") or {}
    n_test = nested_get(cor, "clean", "n") or nested_get(cal, "clean", "n")
    acc = nested_get(cor, "clean", "accuracy")
    mce = cor.get("mean_corruption_error")
    corrupted = cal.get("corrupted") or {}
    bins_clean = _bin_variance(nested_get(cal, "clean", "reliability"))
    bins_corrupted = _bin_variance(corrupted.get("reliability"))
    full = ph.get("full") or {}
    distinct = (ph.get("settings") or {}).get("n_distinct_pairs")  # repeated pairs add no information
    pairs = distinct or full.get("n_pairs")
    n_decided = round((full["phase"] + full["amplitude"]) * pairs) if pairs else None
    out: dict[str, dict[str, Any]] = {
        "clean_accuracy": {"value": acc, "n": n_test},
        "mean_corruption_error": {"value": mce if mce is not None else cor.get("mean_error"), "n": n_test,
                                  "complete": bool(cor.get("complete")),
                                  # not the full grid: the corruption section's label of the mean it then reports
                                  **({} if mce is not None else {"label": MEAN_CELL_ERROR})},
        "ece": {"value": nested_get(cal, "clean", "ece"), "n": n_test, "accuracy": nested_get(cal, "clean", "accuracy"),
                "bin_variance": bins_clean},
        "corrupted_ece": {"value": corrupted.get("ece"), "n": n_test, "accuracy": corrupted.get("accuracy"),
                          "bin_variance": bins_corrupted, "cells": corrupted.get("cells")},
        "corrupted_rms": {"value": corrupted.get("rms"), "n": n_test, "accuracy": corrupted.get("accuracy"),
                          "bin_variance": bins_corrupted, "cells": corrupted.get("cells")},
        "ood_auroc": {"value": nested_get(ood, "mean", "msp", "auroc"), "n": ood.get("n_in"),
                      "n_out": min((s.get("n", 0) for s in (ood.get("sets") or {}).values()), default=None),
                      "se": _mean_set_se(ood.get("sets") or {})},
        "shape_bias": {"value": cue.get("shape_bias") if cue else None,
                       "n": ((nested_get(cue, "counts", "n_shape_decisions") or 0)
                             + (nested_get(cue, "counts", "n_texture_decisions") or 0)) if cue else None},
        "phase_follow": {"value": full.get("phase"), "n": distinct or full.get("n_pairs"),
                         "amplitude_follow": full.get("amplitude"), "phase_bias": full.get("phase_bias")},
        "phase_bias": {"value": full.get("phase_bias"), "n": n_decided, "n_pairs": full.get("n_pairs")},
    }
    return out


def _bin_variance(reliability: Mapping[str, Any] | None) -> float | None:
    """``sum_b w_b a_b (1 - a_b)`` of a reliability diagram (bin masses ``w_b``, bin accuracies ``a_b``): ``n``
    times the squared first-order standard error of a binned calibration error on ``n`` images; ``None`` without
    bins."""
    if not reliability or not reliability.get("count"):
        return None
    total = sum(reliability["count"])
    if total <= 0:
        return None
    return sum(c / total * a * (1 - a) for c, a in zip(reliability["count"], reliability["accuracy"], strict=True))


def se_rate(p: float, n: float) -> float:
    """The binomial standard error of a rate ``p`` measured on ``n`` items (floored: never zero)."""
    p = min(max(p, 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 0.25 / max(n, 1)) / max(n, 1))


def _mean_set_se(sets: Mapping[str, Any]) -> float | None:
    """The mean over OOD sets of the MSP AUROC's DeLong standard errors: a bound on the standard error of the mean
    AUROC (the sets share the in-distribution scores, so their errors are correlated; the standard deviation of a
    sum is at most the sum of the standard deviations); None when a set has none."""
    ses = [nested_get(r, "msp", "auroc_se") for r in sets.values()]
    if not ses or any(v is None or not math.isfinite(v) for v in ses):
        return None
    return sum(ses) / len(ses)


_CALIBRATION = ("ece", "corrupted_ece", "corrupted_rms")


def _se(key: str, h: Mapping[str, Any]) -> float | None:
    v, n = h.get("value"), h.get("n")
    if v is None or not n:
        return None
    if key == "ood_auroc":  # floored like se_rate, so that a perfect separation is never an exact number
        return max(h.get("se") or 0.0, math.sqrt(0.25 / max(n * (h.get("n_out") or n), 1)))
    if key in _CALIBRATION:
        if h.get("bin_variance") is not None:
            return math.sqrt(max(h["bin_variance"], 0.25 / n) / n)  # floor as se_rate: never a zero error
        return se_rate(h.get("accuracy") or 0.5, n)
    return se_rate(v, n)


def verdicts(standard: Mapping[str, Any], apr: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per measure: both values, the difference, its approximate standard error and the verdict."""
    rows = []
    for m in MEASURES:
        a, b = standard.get(m.key) or {}, apr.get(m.key) or {}
        va, vb = a.get("value"), b.get("value")
        label = a.get("label") or b.get("label") or m.label
        row: dict[str, Any] = {"key": m.key, "label": label, "standard": va, "apr_sp": vb,
                               "higher_is_better": m.higher_is_better}
        if va is None or vb is None or not all(map(math.isfinite, (va, vb))):
            row.update(diff=None, se=None, verdict="not measured")
        else:
            sa, sb = _se(m.key, a), _se(m.key, b)
            if sa is None or sb is None:  # no sample size: a difference without an error is no verdict
                row.update(diff=vb - va, se=None, verdict="not judged (no sample size)")
                rows.append(row)
                continue
            se = math.sqrt(sa ** 2 + sb ** 2)
            gain = (vb - va) if m.higher_is_better else (va - vb)
            verdict = "helped" if gain > 2 * se else "hurt" if gain < -2 * se else "no clear difference"
            row.update(diff=vb - va, se=se, verdict=verdict)
        rows.append(row)
    return rows


def _fmt(v: float | None, percent: bool) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if percent else f"{v:.3f}"


def _fmt_diff(r: Mapping[str, Any], percent: bool) -> str:
    if r["diff"] is None:
        return "-"
    scale, unit = (100, " pp") if percent else (1, "")
    if r["se"] is None:
        return f"{scale * r['diff']:+.2f}{unit}" if percent else f"{r['diff']:+.3f}"
    if percent:
        return f"{scale * r['diff']:+.2f}{unit} (±{2 * scale * r['se']:.2f})"
    return f"{r['diff']:+.3f} (±{2 * r['se']:.3f})"


def verdict_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The verdict table: measure, the direction that counts as helped (better, or for a descriptive measure the
    one the APR paper claims), standard, APR-SP, difference (± 2 SE), verdict."""
    by_key = {m.key: m for m in MEASURES}
    body: list[list[Any]] = []
    for r in rows:
        m = by_key[r["key"]]
        direction = ("higher" if r["higher_is_better"] else "lower") + (" (APR's claim)" if m.claim else "")
        body.append([f"{r['label']}{' %' if m.percent else ''}", direction, _fmt(r["standard"], m.percent),
                     _fmt(r["apr_sp"], m.percent), _fmt_diff(r, m.percent), strong(r["verdict"])])
    return Table(["measure", "helped if", "standard", "APR-SP", "APR-SP - standard (±2 SE)", "verdict"], body)


def overall_sentence(rows: Sequence[Mapping[str, Any]]) -> str:
    """A sentence listing where APR-SP helped, hurt, or made no clear difference (from the verdicts)."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r["verdict"], []).append(r["label"])
    measured = [r for r in rows if r["verdict"] != "not measured"]
    parts = []
    phrases = (("helped", "APR-SP helped on"), ("hurt", "APR-SP was worse on"),
               ("no clear difference", "no clear difference on"),
               ("not judged (no sample size)", "no verdict without a sample size on"))
    for verdict, text in phrases:
        if groups.get(verdict):
            parts.append(f"{text} {len(groups[verdict])} of {len(measured)} measures ({', '.join(groups[verdict])})")
    if groups.get("not measured"):
        parts.append(f"not measured: {', '.join(groups['not measured'])}")
    return ("In this run, " + "; ".join(parts) + ".") if parts else "No measure could be compared."


def summary_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text table for the terminal."""
    pct = {m.key: m.percent for m in MEASURES}
    w = max(len(r["label"]) for r in rows) + 4
    out = [f"{'measure':<{w}} {'standard':>9} {'APR-SP':>9}  {'diff (±2 SE)':<22} verdict"]
    for r in rows:
        p = pct[r["key"]]
        label = r["label"] + (" %" if p else "")
        out.append(f"{label:<{w}} {_fmt(r['standard'], p):>9} {_fmt(r['apr_sp'], p):>9}  {_fmt_diff(r, p):<22} "
                   f"{r['verdict']}")
    return "\n".join(out)
