"""The demo's report: the evaluation report (:func:`aprkit.eval.report.write_report`) with the demo's verdict
table as its one summary and a setup section (what ran, training curves, timings) above the suites' sections.

The suites' tables and plots are the same as ``aprkit eval`` produces; writes ``report.md``, a self-contained
``report.html``, ``results.json`` and ``figures/`` under the output folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..eval.report.blocks import Figure, Heading, Paragraph, ReportSection, Table, code, pct, strong
from ..train.report import training_figure
from .config import lr_milestones

__all__ = ["demo_summary", "demo_setup", "training_figure", "write_demo_report"]

TITLE = "aprkit demo: standard vs APR-SP training"


def demo_summary(demo: Mapping[str, Any]) -> ReportSection:
    """The report's summary: the verdict per measure, the overall sentence and how the verdicts are decided."""
    from .summary import verdict_table

    s = demo["settings"]
    from ..corruptions import BENCHMARK, expand_groups

    names = sorted(set(expand_groups(list(s.get("corruptions") or BENCHMARK))))  # ("benchmark" was 1 corruption)
    severities = sorted(set(s["severities"]))
    full_grid = severities == [1, 2, 3, 4, 5] and set(BENCHMARK) <= set(names)
    blocks: list = [
        verdict_table(demo["verdicts"]),
        Paragraph(demo["overall"]),
        Paragraph(["Verdicts are computed from these numbers: ", strong("helped"), " / ", strong("hurt"),
                   " = better / worse by more than two approximate standard errors of the difference (binomial for "
                   "rates, DeLong for AUROC; training-seed variation is not included, so one run is indicative "
                   "only). Shape bias, phase-follow rate and phase bias describe what a model relies on, and neither "
                   "direction is better in general (the evaluation report marks them \"neither\"); for them, "
                   "helped / hurt mean moved towards / away from what the APR paper claims APR training does (more "
                   "reliance on shape and phase). Mean corruption error: "
                   f"{len(names)} corruptions x {len(severities)} severities "
                   f"({'the CIFAR convention' if full_grid else 'not the full CIFAR grid'}), generated once with ",
                   code("aprkit.corruptions"), " and shared by both models. Phase-follow rate: the fraction of "
                   "phase/amplitude-swapped test pairs classified as the phase donor."]),
    ]
    if not demo["synthetic"]:
        blocks.append(Paragraph(["Shape bias: ", strong("not measured"), " (cue-conflict stimuli exist only for the "
                                 "synthetic dataset); the phase-bias section (phase of one image with the amplitude of "
                                 "another) is the analogue for this data."]))
    return ReportSection("Summary", blocks)


def _schedule(settings: Mapping[str, Any]) -> str:
    """The learning-rate steps the run had: ``"x0.2 after epoch 5 of 6"``, or that it had none."""
    e = int(settings["epochs"])
    steps = lr_milestones(e, settings.get("lr_steps", (0.5, 0.75)))
    if not steps:
        return f"constant: no step within {e} epoch{'s' if e != 1 else ''}"
    return f"x0.2 after epoch{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))} of {e}"


def demo_setup(demo: Mapping[str, Any], fig_dir: Path) -> ReportSection:
    """What ran: data, model and training settings, final accuracies, training curves, timings and the machine."""
    s = demo["settings"]
    blocks: list = [Paragraph([
        f"Data: {demo['data_description']}. Model: ", code("small_cnn"), " (4 conv blocks), trained twice with the "
        "same seed: ", strong("standard"), " (crop + flip, CE) and ", strong("APR-SP"), " (APR-S in the input "
        f"pipeline, then CE(x) + CE(APR-P(x)), APR-P with p = {s.get('pair_p', 0.6)}). "
        f"{s['epochs']} epoch{'' if s['epochs'] == 1 else 's'}, batch "
        f"{s['batch_size']}, SGD Nesterov lr {s['lr']} ({_schedule(s)}), device ", code(str(demo["device"])),
        f", seed {demo['seed']}",
        *((", ", strong("quick mode")) if demo["quick"] else ()), ".",
    ])]
    rows = [[name, t["method"], t["epochs"], pct(t.get("final_train_acc")), pct(t.get("final_test_acc")),
             f"{t.get('train_seconds', 0):.1f}"] for name, t in demo["training"].items()]
    blocks.append(Table(["model", "aug.method", "epochs", "final train acc %", "test acc %", "training s"], rows))
    fig = training_figure(demo["training"], Path(fig_dir) / "training_curves.png")
    if fig is not None:
        blocks.append(Figure(fig, "Train (dashed) and test accuracy per epoch"))
    t = demo["timings"]
    la = demo["load_average_start"]
    blocks += [
        Heading("Timings"),
        Table(["stage", "wall s", "CPU s"],
              [["total before this report" if k == "total" and "report" not in t else k, f"{v['wall_s']:.1f}",
                f"{v['cpu_s']:.1f}"] for k, v in t.items()]),  # the run's own report is written before its report
        # stage ends (results.json has the full total, and a report written again from it has the report row)
        Paragraph(f"Machine: {demo['cpu_count']} CPU cores, {demo['torch_threads']} torch threads; load average at "
                  f"the start {la[0]:.1f} (a load far above the core count means a shared machine and inflated wall "
                  "times)."),
    ]
    return ReportSection("Demo setup", blocks)


def write_demo_report(results: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``results.json`` and ``figures/`` for a demo ``Results``."""
    from ..eval.report import write_report

    demo = results.meta["demo"]
    setup = demo_setup(demo, Path(out_dir) / "figures" / "demo")
    return write_report(results, out_dir, title=TITLE, summary=demo_summary(demo), intro=[setup],
                        header={"Data": _data_line(demo)})


def _data_line(demo: Mapping[str, Any]) -> str:
    """The demo's data in words, with its spec when the description does not already name it."""
    desc, spec = str(demo["data_description"]), str(demo["data"])
    return desc if spec.lower() in desc.lower() else f"{desc} ({spec})"
