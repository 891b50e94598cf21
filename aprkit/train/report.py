"""The report of a training run: ``train_report.md`` / ``.html`` beside ``metrics.json``, with the training curves
(named apart from an evaluation's ``report.md``, which may share the folder).

Rewritten as the run trains (``train.report``; at most every 30 s, and for its last row), so a long run shows where
it stands; the numbers are the ones ``metrics.json`` holds. :func:`training_figure` draws the accuracy curves of one
or several runs (the demo's report uses it for its two models).
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._checks import dataset_len
from .._io import atomic_write_text
from ..eval.report.blocks import Figure, Paragraph, ReportSection, Table, code, pct

__all__ = ["training_figure", "loss_figure", "data_text", "write_train_report", "ReportWriter"]


def training_figure(training: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Train (dashed) and test accuracy per epoch of the runs ``training`` (name -> ``{"history": rows}``)."""
    from matplotlib.ticker import MaxNLocator

    from ..eval.report.plotting import new_figure, save_figure

    if not any(t.get("history") for t in training.values()):
        return None
    fig = new_figure(5.2, 3.3)
    ax = fig.subplots()
    for i, (name, t) in enumerate(training.items()):
        h = t.get("history") or []
        ep = [r["epoch"] for r in h]
        train, test = ([100 * r.get(k, float("nan")) for r in h] for k in ("train_acc", "test_acc"))
        ax.plot(ep, train, "--s", ms=3, color=f"C{i}", label=f"{name} train")
        ax.plot(ep, test, "-o", ms=3, color=f"C{i}", label=f"{name} test")
    ax.set_xlabel("epoch")
    epochs = sorted({r["epoch"] for t in training.values() for r in t.get("history") or []})
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def loss_figure(history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Train and test loss per epoch (log scale when positive), with the learning rate on a second axis."""
    from matplotlib.ticker import MaxNLocator

    from ..eval.report.plotting import new_figure, save_figure

    if not history:
        return None
    fig = new_figure(5.2, 3.3)
    ax = fig.subplots()
    ep = [r["epoch"] for r in history]
    for key, style in (("train_loss", "--s"), ("test_loss", "-o")):
        values = [r.get(key, float("nan")) for r in history]
        ax.plot(ep, values, style, ms=3, label=key.replace("_", " "))
    finite = [v for r in history for k, v in r.items() if k.endswith("_loss") and isinstance(v, float)
              and math.isfinite(v)]
    if finite and min(finite) > 0:  # a diverged epoch (NaN) does not flatten the others on a linear scale
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr = ax.twinx()
    lr.plot(ep, [r.get("lr", float("nan")) for r in history], ".-", color="0.5", lw=1, label="lr")
    lr.set_ylabel("learning rate", color="0.4")
    lines = ax.get_legend_handles_labels()
    extra = lr.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7)
    return save_figure(fig, path)


def data_text(d: Any, train: Any, test: Any, given: bool, per_epoch: int | None = None) -> str:
    """The run's data for its report: the specs of ``d`` (the config's ``data`` section; the datasets' types when they
    were given as ``datasets=``) and image counts; a ``data.limit`` / ``data.test_limit`` subset says that it is a
    seeded random one (``aprkit eval --limit`` takes the first N images: another set). ``per_epoch``: the training
    images an epoch's full batches take, said where the dropped last partial batch leaves some out."""
    def one(ds: Any, spec: str | None) -> str:
        if getattr(ds, "drawn_by_limit", False):  # a data.limit / data.test_limit subset
            name = spec if spec and not given else type(ds.dataset).__name__
            return (f"{name}, a random subset of {dataset_len(ds)} of its {dataset_len(ds.dataset)} images (seeded "
                    "by train.seed)")
        return f"{spec if spec and not given else type(ds).__name__}, {dataset_len(ds)} images"

    test_text = one(test, d.test_dataset or d.dataset) if test is not None else "none"
    n = dataset_len(train)
    left = (f" ({n - per_epoch} per epoch left out, other ones each epoch: the last partial batch is dropped)"
            if per_epoch is not None and per_epoch < n else "")
    return f"training: {one(train, d.dataset)}{left}; test: {test_text}"


def _status(history: Sequence[Mapping[str, Any]], epochs: int, stopped: bool = False, interrupted: bool = False) -> str:
    if not history:
        return "no epoch finished yet"
    last = history[-1]
    at = f"epoch {last['epoch']} of {epochs}"
    again = "--resume with a larger train.max_steps (or none) goes on"
    if last.get("partial"):
        return f"stopped inside {at} (train.max_steps); {again}"
    loss = last.get("train_loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        return f"diverged (training loss {loss} at {at}): lower optim.lr or check the data"
    if last["epoch"] >= epochs:
        return f"finished ({epochs} epoch{'s' if epochs != 1 else ''})"
    if interrupted:
        return f"interrupted after {at} (the last epoch logged); --resume goes on from last.pt"
    return f"stopped after {at} (train.max_steps); {again}" if stopped else f"{at} done (the run was training when " \
        "this was written; metrics.json may be further)"


def _lr_steps(optim: Mapping[str, Any]) -> str:
    """The schedule in words: "x0.2 after epochs [2, 5]" (the rate drops from epoch 3 of the table, counted from
    1), "cosine to 1e-06", "constant" without milestones, and the warm-up."""
    milestones, warmup = list(optim.get("milestones") or []), optim.get("warmup_epochs") or 0
    steps = (f"cosine to {optim.get('min_lr') or 0:g} over every step" if optim.get("schedule") == "cosine" else
             f"x{optim.get('gamma')} after epoch{'s' if len(milestones) > 1 else ''} {milestones}" if milestones else
             "constant")
    return f"{steps}, linear warm-up over {warmup} epochs" if warmup else steps


def _fmt(value: Any, percent: bool = False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return pct(float(value)) if percent else f"{float(value):.4g}"


def write_train_report(out: Path, history: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
                       config_changes: Sequence[Mapping[str, Any]] = (), data: str | None = None,
                       stopped: bool = False, interrupted: bool = False) -> Path:
    """Write ``out/train_report.md``, ``out/train_report.html`` and ``out/figures/`` for a run's ``history``
    (metrics.json's rows) and its ``config`` (``Config.to_dict()``); ``data`` describes the data (default: the config's
    specs). Returns the Markdown path. ``stopped``: the run returned before its last epoch (``train.max_steps`` at an
    epoch's end)."""
    import torch

    from .. import __version__
    from ..eval.report.render import HeaderItem, ReportDocument, render_html, render_markdown

    model, spec, aug, optim, run = (config.get(k) or {} for k in ("model", "data", "aug", "optim", "train"))
    epochs = int(optim.get("epochs") or 0)
    kwargs = ", ".join(f"{k}={v}" for k, v in (model.get("kwargs") or {}).items())
    arch = f"{model.get('name')}({kwargs})" if kwargs else str(model.get("name"))
    feature = config.get("feature_apr") or {}
    hidden = (f", FeatureAPR at {', '.join(feature['layers'])} (p {feature.get('p')}, {feature.get('mode')}, dims "
              f"{feature.get('dims')})" if feature.get("layers") else "")
    header = [
        HeaderItem("Model", f"{arch}, {model.get('num_classes')} classes"),
        HeaderItem("Data", data or f"{spec.get('dataset')} (test: {spec.get('test_dataset') or 'its test split'})"),
        HeaderItem("Recipe", f"aug.method={aug.get('method')}{hidden}, {epochs} epoch{'s' if epochs != 1 else ''}, "
                             f"batch {optim.get('batch_size')}, lr {optim.get('lr')} ({_lr_steps(optim)}), seed "
                             f"{run.get('seed')}"),
        HeaderItem("Status", _status(history, epochs, stopped, interrupted)),
        HeaderItem("Versions", f"aprkit {__version__}, torch {torch.__version__}, Python {platform.python_version()}"),
    ]
    sections = []
    if history:
        tested = [r for r in history if isinstance(r.get("test_acc"), float) and math.isfinite(r["test_acc"])]
        best = max(tested, key=lambda r: r["test_acc"]) if tested else None
        last = history[-1]
        seconds = sum(float(r.get("time_s") or 0) for r in history if not r.get("partial")) + (
            float(last.get("time_s") or 0) if last.get("partial") else 0.0)
        which = f"epoch {last['epoch']}, partial: its steps so far" if last.get("partial") else "last epoch"
        summary = Table(["measure", "value"], [
            ["test accuracy % (last evaluation)", _fmt(tested[-1]["test_acc"], True) if tested else "-"],
            ["best test accuracy % (epoch)", f"{_fmt(best['test_acc'], True)} ({best['epoch']})" if best else "-"],
            [f"train accuracy % ({which})", _fmt(last.get("train_acc"), True)],
            [f"train loss ({which})", _fmt(last.get("train_loss"))],
            ["training time s (sum of the epochs)", f"{seconds:.1f}"],
        ], notes="From metrics.json; the model saved as model.pt is the last epoch's, not the best one's.")
        sections.append(ReportSection("Summary", [summary]))
        fig_dir = out / "figures"
        blocks: list = []
        acc = training_figure({"": {"history": list(history)}}, fig_dir / "training_curves.png")
        loss = loss_figure(history, fig_dir / "loss_lr.png")
        blocks += [Figure(acc, "Train (dashed) and test accuracy per epoch")] if acc else []
        two = aug.get("method") in ("apr_p", "apr_sp", "augmix_jsd")  # the objective, not one cross-entropy
        note = "; the train loss is the training objective (CE(clean) + CE(APR batch), or + the JSD term), not " \
               "comparable with the test loss" if two else ""
        blocks += [Figure(loss, f"Train and test loss per epoch, learning rate in grey{note}")] if loss else []
        keys = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "time_s", "images_per_s"]
        rows = [[_fmt(r.get(k), percent=k.endswith("_acc")) if k != "epoch" else str(r["epoch"])
                 + (" (partial)" if r.get("partial") else "") for k in keys] for r in history]
        blocks.append(Table([k.replace("_acc", " acc %").replace("_", " ") for k in keys], rows))
        sections.append(ReportSection("Per epoch", blocks))
    if config_changes:
        rows = [[str(c.get("global_step")), ", ".join(map(str, c.get("keys") or []))] for c in config_changes]
        sections.append(ReportSection("Settings changed at a resume", [
            Table(["at step", "keys"], rows),
            Paragraph(["The run went on with the new values; ", code("model.pt"), " records the settings before each "
                       "change (", code("config_changes"), ")."])]))
    title = f"aprkit train: {config.get('name') or model.get('name')}"
    doc = ReportDocument(title, header, sections)
    md = out / "train_report.md"
    atomic_write_text(md, render_markdown(doc, out), durable=False)  # rewritten every epoch; remade from metrics.json
    atomic_write_text(out / "train_report.html", render_html(doc), durable=False)
    return md


class ReportWriter:
    """The run's report as its logger's history grows: rewritten at most every ``every_s`` seconds, and always for the
    run's last row (its last epoch, or a stop inside an epoch). A failure (plotting, the disk) warns once and turns the
    report off: a convenience file never stops a training run. Arguments after ``out`` as :func:`write_train_report`."""

    def __init__(self, out: Path, config: Mapping[str, Any], config_changes: Sequence[Mapping[str, Any]],
                 data: str | None, every_s: float = 30.0):
        self.out, self.config, self.changes, self.data, self.every_s = out, config, config_changes, data, every_s
        self.epochs = int((config.get("optim") or {}).get("epochs") or 0)
        self.last: float | None = None
        self.written: tuple[int, bool] | None = None  # (rows, stopped) of the last report written
        self.off = self.done = False

    def __call__(self, history: Sequence[Mapping[str, Any]], *, end: bool = False) -> None:
        """Write the report for ``history`` unless one was written less than ``every_s`` ago; the run's last row
        and ``end`` (the run returns: its last epoch, a stop at ``train.max_steps``) write it in any case."""
        self.done = self.done or end
        if self.off or not history:
            return
        final = end or bool(history[-1].get("partial")) or history[-1].get("epoch", 0) >= self.epochs
        if not final and self.last is not None and time.monotonic() - self.last < self.every_s:
            return
        stopped = final and history[-1].get("epoch", 0) < self.epochs
        if self.written == (len(history), stopped):  # the same report again (the run's end after its last row)
            return
        self.written = (len(history), stopped)
        try:
            write_train_report(self.out, history, self.config, self.changes, self.data, stopped=stopped)
        except Exception as e:  # noqa: BLE001 - the run goes on; metrics.json holds the numbers
            self.off = True
            warnings.warn(f"the training report in {self.out} could not be written ({type(e).__name__}: {e}); the run "
                          "goes on without it (metrics.json has every number)", RuntimeWarning, stacklevel=2)
        self.last = time.monotonic()

    def interrupted(self, history: Sequence[Mapping[str, Any]]) -> None:
        """When the run leaves without returning (an interrupt, an error): its report once more, saying so."""
        if self.done or self.off or not history:
            return
        try:
            write_train_report(self.out, history, self.config, self.changes, self.data, interrupted=True)
        except Exception:  # noqa: BLE001 - the interrupt or error on its way out matters, not this file
            pass
