"""The OOD suite's report section: tables of the mean and per-set metrics, AUROC bars and score histograms."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..report.blocks import Figure, Paragraph, ReportSection, Table, pct
from ..report.plotting import bar_height, grouped_bars, new_figure, plot_text, save_figure

__all__ = ["ood_section"]


def _set_cell(m: Mapping[str, float], metrics: Sequence[str]) -> str:
    """``AUROC ± SE / AUPR-In / AUPR-Out / FPR@95`` in % (results cached before the SE existed show no ±)."""
    se = m.get("auroc_se")
    auroc = pct(m["auroc"], 1) + (f" ± {pct(se, 1)}" if se is not None and math.isfinite(se) else "")
    return " / ".join([auroc, *(pct(m[k], 1) for k in metrics[1:])])


def _set_header(name: str, metrics: Mapping[str, Any]) -> str:
    """``"svhn (n=1000, resized from 64x64)"``, or ``"... scored at its own 224x224"`` with ``ood_resize`` off."""
    resized, own = metrics.get("resized_from"), metrics.get("own_size")

    def size(hw: Any) -> str:  # [H, W], or "mixed sizes" for a folder whose sampled images differ
        return hw if isinstance(hw, str) else f"{hw[0]}x{hw[1]}"

    note = (f", resized from {size(resized)}" if resized else f", scored at its own {size(own)}" if own else "")
    return f"{name} (n={metrics['n']}{note})"


def ood_section(results: Mapping[str, dict], fig_dir: Path, metrics: Sequence[str]) -> ReportSection:
    """The OOD section comparing ``results`` (model -> the suite's result): mean and per-set tables, AUROC bars and
    score histograms; scores in the order they were asked for (as each result lists them, the first model's first),
    ``metrics``: AUROC first, then the other set metrics."""
    models = list(results)
    blocks: list = [Paragraph("ID is the positive class (higher score = more in-distribution); "
                              "FPR@95 = fraction of OOD accepted at 95 % TPR.")]
    scores = list(dict.fromkeys(s for r in results.values() for s in r["scores"]))  # the per-set tables' order
    blocks.append(Table(["score"] + models, [[s] + [
        "-" if s not in results[m]["mean"]
        else f"{pct(results[m]['mean'][s]['auroc'], 1)} / {pct(results[m]['mean'][s]['fpr@95'], 1)}"
        for m in models] for s in scores], caption="Mean over OOD sets: AUROC % / FPR@95 %"))
    for m, r in results.items():
        sets = list(r["sets"])
        blocks.append(Table(["score"] + [_set_header(s, r["sets"][s]) for s in sets], [[s] + [
            _set_cell(r["sets"][o][s], metrics) for o in sets] for s in r["scores"]],
            caption=f"{m}: per OOD set (AUROC % ± its standard error / AUPR-In % / AUPR-Out % / FPR@95 %)",
            notes=f"Note: {r['note']}" if r.get("note") else ""))
    blocks.append(Figure(_auroc_bars(results, scores, fig_dir),
                         "AUROC per score, mean over OOD sets (dotted: chance)"))
    hist = _score_hist(results, fig_dir)
    if hist is not None:
        blocks.append(Figure(hist, "Score histograms (energy, where computed; else the first score): "
                                   "in-distribution against each OOD set"))
    return ReportSection("OOD detection", blocks)


def _auroc_bars(results: Mapping[str, dict], scores: list[str], fig_dir: Path) -> Path:
    fig = new_figure(max(5, 1.0 * len(scores) + 2), 3.4)
    ax = fig.subplots()
    aurocs = {m: [100 * bar_height((r["mean"].get(s) or {}).get("auroc")) for s in scores]
              for m, r in results.items()}  # a score not computed for a model: no bar, not 0
    grouped_bars(ax, aurocs, len(scores))
    ax.set_xticks(range(len(scores)), scores)
    ax.set_ylim(0, 100)
    ax.axhline(50, color="k", lw=0.8, ls=":")
    ax.set_ylabel("AUROC (%), mean over OOD sets")
    ax.legend(fontsize=8)
    return save_figure(fig, Path(fig_dir) / "ood_auroc.png")


def _score_hist(results: Mapping[str, dict], fig_dir: Path, score: str = "energy") -> Path | None:
    items = [(m, r) for m, r in results.items() if r["histograms"]]
    if not items:
        return None
    sets = list(dict.fromkeys(o for _, r in items for o in r["histograms"]))  # models may have other OOD sets
    fig = new_figure(2.8 * len(sets), 2.3 * len(items))
    axes = fig.subplots(len(items), len(sets), squeeze=False)
    for i, (m, r) in enumerate(items):
        sc = score if score in r["scores"] else r["scores"][0]
        for j, o in enumerate(sets):
            if o not in r["histograms"]:
                axes[i][j].axis("off")
                continue
            h = r["histograms"][o][sc]
            lo, hi = h["range"]
            step = (hi - lo) / len(h["in"])
            xs = [lo + (k + 0.5) * step for k in range(len(h["in"]))]
            ax = axes[i][j]
            ax.bar(xs, h["in"], width=step, alpha=0.55, label="in-dist.")
            ax.bar(xs, h["out"], width=step, alpha=0.55, label=plot_text(o))
            ax.set_title(f"{plot_text(m)}: {sc}, vs {plot_text(o)}", fontsize=8)
            ax.set_xlabel(f"{sc} score (higher: in-dist.)", fontsize=7)
            ax.set_ylabel("images", fontsize=7)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, Path(fig_dir) / "ood_scores.png")
