"""Calibration on clean and corrupted data: ECE, RMS calibration error, NLL, Brier, reliability diagrams.

Shares its forward passes with the corruption suite (the same cached cells). Corrupted numbers are the
mean over the evaluated (corruption, severity) cells, each computed on its own images, as corruption error is
averaged (the extra corruptions held out beside benchmark ones, as there: ``corrupted.held_out``);
``pooled_ece`` is the ECE of all corrupted predictions pooled into one set of bins. Neither the APR
nor the AugMix repository publishes its corrupted-calibration code, so a paper's figure may pool differently (e.g.
per corruption over its five severities, then the mean of the 15); calibration error is not linear, so such
figures are comparable in direction, not to the decimal. Set the option
``calibration_corrupted=False`` to measure clean data only.

Conventions (from ``aprkit.eval.metrics``): ECE uses 15 equal-width bins weighted by bin mass; RMS
uses adaptive bins of 100 samples sorted by confidence with the remainder joined to the last bin
(unlike Hendrycks' reference code, which skips the last bin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..engine.datasets import as_dataset
from ..report.blocks import Figure, Table, num, pct
from ..report.plotting import new_figure, plot_text, save_figure, series_color
from .base import EvalContext, Measure, ReportSection, Suite, register_suite
from .corruption import CELL_VERSION, CorruptionOptions, evaluate_cells, summary_corruptions
from .corruption_generated import Caveats, geometry_caveat, warn_geometry
from .corruption_report import held_out_note

__all__ = ["CalibrationSuite", "CalibrationOptions", "CalibrationResult", "pool_reliability"]

_METRICS = ("accuracy", "ece", "rms", "nll", "brier")


def pool_reliability(diagrams: list[dict]) -> dict:
    """Merge reliability-diagram data (same bins) of several cells into one, weighting by bin counts."""
    import torch

    from ..metrics import reliability_from_bins

    if not diagrams:
        raise ValueError("pool_reliability needs at least one reliability diagram")
    n_bins = len(diagrams[0]["count"])
    stats = torch.zeros(3, n_bins, dtype=torch.float64)  # the bin sums of metrics.bin_statistics
    for d in diagrams:
        if len(d["count"]) != n_bins:
            raise ValueError("reliability diagrams to pool must use the same number of bins")
        count = torch.tensor(d["count"], dtype=torch.float64)
        stats += torch.stack([count, count * torch.tensor(d["confidence"], dtype=torch.float64),
                              count * torch.tensor(d["accuracy"], dtype=torch.float64)])
    return reliability_from_bins(stats)


class CalibrationOptions(CorruptionOptions):
    """The corruption suite's options (the same cells) and whether to measure corrupted data at all."""

    calibration_corrupted: bool = True
    """also measure calibration under the corruptions (else clean data only)"""

    def preflight(self, data: Any, download: bool = False) -> None:
        if self.calibration_corrupted:  # else it reads no corrupted cell
            super().preflight(data, download)


class CalibrationResult(Caveats):
    """What the calibration suite returns (fractions in [0, 1])."""

    clean: dict[str, Any]  # accuracy, ece, rms, nll, brier, reliability (diagram data), n
    corrupted: dict[str, Any] | None  # the clean keys' means over the cells, pooled_ece, pooled reliability, cells
    per_severity: dict[str, dict[str, float]]  # severity -> mean accuracy, ece, rms, nll, brier over corruptions


@register_suite("calibration")
class CalibrationSuite(Suite[CalibrationOptions]):
    """ECE / RMS / NLL / Brier and reliability diagrams, clean and under corruptions."""

    Options = CalibrationOptions
    cell_grid = True
    version = str(CELL_VERSION)  # its numbers are the corruption cells'

    def run(self, ctx: EvalContext, data: Any) -> CalibrationResult:
        opts = self.options(ctx)
        corruptions, severities = opts.grid() if opts.calibration_corrupted else ([], [])
        # the extra corruptions are held out next to benchmark ones, as in the corruption suite's means
        summary = summary_corruptions(corruptions)
        grid = [(c, s) for c in summary for s in severities]
        caveat = geometry_caveat(ctx.model, as_dataset(data)) if grid and not opts.corrupted else None
        warn_geometry(caveat)  # before the cells are computed
        clean, *cells = evaluate_cells(ctx, data, opts, [(None, None), *grid])
        clean_summary = {k: clean[k] for k in _METRICS} | {"reliability": clean["reliability"], "n": clean["n"]}
        result: CalibrationResult = {"clean": clean_summary, "corrupted": None, "per_severity": {}}
        if opts.calibration_corrupted:
            if caveat:
                result["caveats"] = [caveat]
            if cells:
                mean = {k: sum(c[k] for c in cells) / len(cells) for k in _METRICS}
                pooled = pool_reliability([c["reliability"] for c in cells])
                result["corrupted"] = mean | {"pooled_ece": pooled["ece"], "reliability": pooled, "cells": len(cells),
                                              "held_out": [c for c in corruptions if c not in summary]}
                for s in severities:
                    sub = [c for c in cells if c["severity"] == s]
                    result["per_severity"][str(s)] = {k: sum(c[k] for c in sub) / len(sub) for k in _METRICS}
        return result

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        c, k = result["clean"], result.get("corrupted") or {}
        return [
            Measure("clean_accuracy", "clean accuracy", c.get("accuracy"), percent=True, higher_is_better=True),
            Measure("ece", "ECE (clean)", c.get("ece"), percent=True, higher_is_better=False),
            Measure("rms", "RMS calibration error (clean)", c.get("rms"), percent=True, higher_is_better=False),
            Measure("nll", "NLL (clean)", c.get("nll"), higher_is_better=False, digits=3),
            Measure("brier", "Brier score (clean)", c.get("brier"), higher_is_better=False, digits=3),
            Measure("corrupted_ece", "ECE (corrupted, mean over cells)", k.get("ece"), percent=True,
                    higher_is_better=False),
        ]

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        rows = []
        for m, r in results.items():
            c = r["clean"]
            k = r.get("corrupted") or {}
            rows.append([m, pct(c["accuracy"]), pct(c["ece"]), pct(c["rms"]), num(c["nll"]), num(c["brier"]),
                         pct(k.get("ece")), pct(k.get("rms")), num(k.get("nll")), num(k.get("brier"))])
        bins = sorted({len(r["clean"]["reliability"]["count"]) for r in results.values()})
        held = held_out_note((r.get("corrupted") or {}).get("held_out") for r in results.values())
        table = Table(["model", "clean acc %", "ECE %", "RMS %", "NLL", "Brier", "corr. ECE %", "corr. RMS %",
                       "corr. NLL", "corr. Brier"], rows,
                      notes=f"ECE: {' / '.join(map(str, bins))} equal-width bins"
                            f"{' (the models were evaluated with different bins)' if len(bins) > 1 else ''}; RMS: "
                            "adaptive bins of 100 samples (every bin counted); corrupted = mean over the evaluated "
                            "corruption x severity cells (the corrupted reliability diagram pools every cell's "
                            "predictions into one set of bins, so the ECE in its title differs from this mean)"
                            f"{'; ' + held if held else ''}.")
        blocks: list = [table, Figure(self._reliability(results, fig_dir),
                                      "Reliability diagrams (dashed: perfect calibration)")]
        if any(r.get("per_severity") for r in results.values()):
            blocks.append(Figure(self._ece_vs_severity(results, fig_dir), "ECE against corruption severity"))
        return ReportSection("Calibration", blocks)

    @staticmethod
    def _reliability(results: Mapping[str, dict], fig_dir: Path) -> Path:
        cols = 2 if any(r.get("corrupted") for r in results.values()) else 1
        fig = new_figure(3.4 * cols, 3.2 * len(results))
        axes = fig.subplots(len(results), cols, squeeze=False)
        for i, (m, r) in enumerate(results.items()):
            panels = [("clean", r["clean"]["reliability"]),
                      ("corrupted, pooled", (r.get("corrupted") or {}).get("reliability"))]
            for j, (label, d) in enumerate(panels[:cols]):
                ax = axes[i][j]
                if d is None:
                    ax.axis("off")
                    continue
                edges = d["bin_edges"]
                centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
                w = edges[1] - edges[0]
                accs = [a if n else 0 for a, n in zip(d["accuracy"], d["count"], strict=True)]
                ax.bar(centres, accs, width=w, edgecolor="k", lw=0.5, color="C0", label="accuracy")
                bins = list(zip(d["accuracy"], d["confidence"], d["count"], strict=True))
                gaps = [abs(c - a) if n else 0 for a, c, n in bins]
                lows = [min(a, c) if n else 0 for a, c, n in bins]
                ax.bar(centres, gaps, bottom=lows, width=w, color="C3", alpha=0.35, hatch="//",
                       label="gap to confidence")
                ax.plot([0, 1], [0, 1], "k--", lw=1)
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_title(f"{plot_text(m)}\n{label}: ECE {100 * d['ece']:.2f}%", fontsize=9)  # two lines: fits
                ax.set_xlabel("confidence")
                ax.set_ylabel("accuracy")
        axes[0][0].legend(fontsize=7, loc="upper left")
        return save_figure(fig, Path(fig_dir) / "reliability.png")

    @staticmethod
    def _ece_vs_severity(results: Mapping[str, dict], fig_dir: Path) -> Path:
        fig = new_figure(4.5, 3.2)
        ax = fig.subplots()
        ticks: set[int] = {0}
        for i, (m, r) in enumerate(results.items()):
            sev = sorted(int(s) for s in r.get("per_severity", {}))
            ece = [100 * r["clean"]["ece"]] + [100 * r["per_severity"][str(s)]["ece"] for s in sev]
            ax.plot([0] + sev, ece, marker="o", color=series_color(i), label=plot_text(m))
            ticks.update(sev)
        ax.set_xticks(sorted(ticks))  # every model's severities (the last model's alone hid the others')
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("ECE (%), mean over corruptions")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return save_figure(fig, Path(fig_dir) / "ece_vs_severity.png")
