"""The corruption suite's report section: summary and per-cell error tables, error bars per corruption and error
against severity."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..report.blocks import Figure, Paragraph, ReportSection, Table, num, pct
from ..report.plotting import bar_height, grouped_bars, new_figure, plot_text, save_figure, series_color

__all__ = ["corruption_section", "bar_chart", "severity_curves", "held_out_note"]


def held_out_note(lists: Iterable[list[str] | None]) -> str:
    """``"the extra corruptions ... are held out of the means over corruptions"`` naming the extra corruptions some
    model's means left out, or ``""``."""
    names = sorted({c for names in lists for c in names or ()})
    return (f"the extra corruptions {', '.join(names)} (validation corruptions of CIFAR-10-C / ImageNet-C) are "
            "held out of the means over corruptions" if names else "")


def corruption_section(results: Mapping[str, dict], fig_dir: Path, order: Callable[[str], int]) -> ReportSection:
    """The corruption section comparing ``results`` (model -> the suite's result): summary and per-cell tables, error
    bars per corruption and severity curves; ``order``: a corruption's display rank (the benchmark's order)."""
    models = list(results)
    rows = []
    for m, r in results.items():
        rows.append([m, pct(r["clean"]["accuracy"]), pct(r["mean_error"]), pct(r["mean_corruption_error"]),
                     num(r["relative_robustness"]),
                     pct(r.get("mce"), 1), pct(r.get("relative_mce"), 1),
                     f"{r['origin']} ({r['preset']} preset)" if r.get("preset") and r["origin"] == "generated"
                     else r["origin"], r["clean"]["n"]])
    blocks: list = [Table(["model", "clean acc %", "mean error %", "mean corruption error %",
                           "corr. acc / clean acc", "mCE %", "rel. mCE %", "corrupted data", "images"], rows)]
    notes = sorted({r["mce_note"] for r in results.values() if r.get("mce_note")})
    if any(r.get("mce") is None and not r.get("mce_note") for r in results.values()):
        notes.append("mCE and relative mCE normalise each corruption's errors by AlexNet's ImageNet-C errors "
                     "(Hendrycks & Dietterich 2019), so they are given for ImageNet models (the imagenet preset, 1000 "
                     "classes) on the full grid only; elsewhere compare the mean corruption error")
    if any(r.get("mean_corruption_error") is None for r in results.values()):
        notes.append("Mean corruption error: the mean over the 15 benchmark corruptions x severities 1-5, given on "
                     "that full grid only; mean error: the mean over the cells evaluated")
    held = held_out_note(r.get("held_out") for r in results.values())
    notes += [held[0].upper() + held[1:]] if held else []
    blocks += [Paragraph(n + ".") for n in notes]
    corruptions = sorted({c for r in results.values() for c in r["cells"]}, key=lambda c: (order(c), c))
    severities = sorted({int(s) for r in results.values() for row in r["cells"].values() for s in row})
    if not corruptions:
        blocks.append(Paragraph("Clean accuracy only (no corruptions were evaluated)."))
        return ReportSection("Corruption robustness", blocks)
    blocks.append(Table(["corruption"] + models,
                        [[c] + [pct(results[m]["per_corruption"].get(c)) for m in models] for c in corruptions],
                        caption="Error (%) per corruption, mean over severities"))
    for m in models:
        blocks.append(Table(["corruption"] + [f"s{s}" for s in severities],
                            [[c] + [pct(results[m]["cells"].get(c, {}).get(str(s), {}).get("error"))
                                    for s in severities] for c in corruptions],
                            caption=f"{m}: error (%) per corruption x severity"))
    blocks.append(Figure(bar_chart(results, corruptions, fig_dir),
                         "Error per corruption (dashed: clean error)"))
    blocks.append(Figure(severity_curves(results, corruptions, severities, fig_dir),
                         "Error against severity, per corruption and mean"))
    return ReportSection("Corruption robustness", blocks)

def bar_chart(results: Mapping[str, dict], corruptions: list[str], fig_dir: Path) -> Path:
    fig = new_figure(max(6, 0.6 * len(corruptions) + 2), 3.8)
    ax = fig.subplots()
    errors = {m: [100 * bar_height(r["per_corruption"].get(c)) for c in corruptions] for m, r in results.items()}
    grouped_bars(ax, errors, len(corruptions))
    for i, r in enumerate(results.values()):
        ax.axhline(100 * r["clean"]["error"], ls="--", lw=1, color=series_color(i))
    ax.set_xticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions], rotation=45, ha="right")
    ax.set_ylabel("error (%), mean over severities")
    ax.legend(fontsize=8)
    return save_figure(fig, Path(fig_dir) / "corruption_errors.png", dpi=110)

def severity_curves(
    results: Mapping[str, dict], corruptions: list[str], severities: list[int], fig_dir: Path
) -> Path:
    panels = ["mean"] + corruptions
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = new_figure(3 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for k, name in enumerate(panels):
        ax = axes[k // cols][k % cols]
        for i, (m, r) in enumerate(results.items()):
            ys = [r["clean"]["error"]]
            for s in severities:
                ys.append(r["per_severity"].get(str(s)) if name == "mean"
                          else r["cells"].get(name, {}).get(str(s), {}).get("error"))
            ax.plot([0] + severities, [None if y is None else 100 * y for y in ys], marker="o", ms=3,
                    color=series_color(i), label=plot_text(m))
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xticks([0] + severities)
        ax.grid(alpha=0.3)
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("severity (0 = clean)", fontsize=9)
    return save_figure(fig, Path(fig_dir) / "severity_curves.png")
