"""The demo's report: a demo section (what ran, the summary with verdicts, timings) above the suites' sections.

Uses the evaluation report renderer (:mod:`aprkit.eval.report`) for the suites, so the tables and plots
are the same as ``aprkit eval`` produces; writes ``report.md``, a self-contained ``report.html``,
``results.json`` and ``figures/`` under the output folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..eval.suites.base import ReportSection

__all__ = ["demo_section", "training_figure", "write_demo_report"]

TITLE = "aprkit demo: standard vs APR-SP training"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def training_figure(training: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Training curves (train / test accuracy per epoch) of both models."""
    from ..eval.suites.corruption import pyplot

    if not any(t.get("history") for t in training.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.3))
    for i, (name, t) in enumerate(training.items()):
        h = t.get("history") or []
        ep = [r["epoch"] for r in h]
        ax.plot(ep, [100 * r.get("train_acc", float("nan")) for r in h], "--", color=f"C{i}", label=f"{name} train")
        ax.plot(ep, [100 * r.get("test_acc", float("nan")) for r in h], "-o", ms=3, color=f"C{i}", label=f"{name} test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def demo_section(demo: Mapping[str, Any], fig_dir: Path) -> ReportSection:
    """The opening section: setup, the summary table with verdicts, an overall sentence, caveats and timings."""
    from ..eval.suites.corruption import markdown_table
    from .summary import summary_markdown

    s = demo["settings"]
    md = [f"Data: {demo['data_description']}. Model: `small_cnn` (4 conv blocks), trained twice with the same seed: "
          "**standard** (crop + flip, CE) and **APR-SP** (APR-S in the input pipeline, then CE(x) + CE(APR-P(x))). "
          f"{s['epochs']} epochs, batch {s['batch_size']}, SGD Nesterov lr {s['lr']} (x0.2 at 50 % and 75 %), "
          f"device `{demo['device']}`, seed {demo['seed']}{', **quick mode**' if demo['quick'] else ''}.", ""]
    rows = [[name, t["method"], t["epochs"], _pct(t.get("final_train_acc")), _pct(t.get("final_test_acc")),
             f"{t.get('train_seconds', 0):.1f}"] for name, t in demo["training"].items()]
    md += [markdown_table(["model", "aug.method", "epochs", "final train acc %", "test acc %", "training s"], rows), ""]
    md += ["### Summary", "", summary_markdown(demo["verdicts"]), "", demo["overall"], ""]
    md += ["Verdicts are computed from these numbers: *helped* / *hurt* = better / worse by more than two approximate "
           "standard errors of the difference (binomial for rates, Hanley-McNeil for AUROC; training-seed variation is "
           "not included, so one run is indicative only). Mean corruption error: the 15 corruptions x "
           f"{len(s['severities'])} severities ({'the CIFAR convention' if len(s['severities']) == 5 else 'not the full CIFAR grid'}), "
           "generated once with `aprkit.corruptions` and shared by both models. Phase-follow rate: the fraction of "
           "phase/amplitude-swapped test pairs classified as the phase donor."]
    if not demo["synthetic"]:
        md += ["", "Shape bias: **not measured** — cue-conflict stimuli exist only for the synthetic dataset; the "
               "phase-bias section (phase of one image with the amplitude of another) is the analogue for this data."]
    t = demo["timings"]
    md += ["", "### Timings", "", markdown_table(["stage", "wall s", "CPU s"],
                                                 [[k, f"{v['wall_s']:.1f}", f"{v['cpu_s']:.1f}"] for k, v in t.items()])]
    la = demo["load_average_start"]
    md += ["", f"Machine: {demo['cpu_count']} CPU cores, {demo['torch_threads']} torch threads; load average at the start "
               f"{la[0]:.1f} (a load far above the core count means a shared machine and inflated wall times)."]
    figs = []
    fig = training_figure(demo["training"], Path(fig_dir) / "training_curves.png")
    if fig is not None:
        figs.append(fig)
    return ReportSection("Demo summary", "\n".join(md), figs)


def write_demo_report(results: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``results.json`` and ``figures/`` for a demo ``Results``."""
    from ..eval.report import raise_failed, render_html, render_markdown, render_sections

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_root = out / "figures"
    sections = [("demo", demo_section(results.meta["demo"], fig_root / "demo"))] + render_sections(results, fig_root)
    paths = {"json": results.save(out / "results.json"), "markdown": out / "report.md", "html": out / "report.html"}
    for key, text in (("markdown", render_markdown(results, sections, out, TITLE)), ("html", render_html(results, sections, TITLE))):
        atomic_write_text(paths[key], text)
    raise_failed(sections, out)
    return paths
