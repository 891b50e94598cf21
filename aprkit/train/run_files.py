"""The names of what a training run writes into ``train.out`` (no torch: ``aprkit train --help`` lists them)."""

from __future__ import annotations

__all__ = ["RUN_FILES", "REPORT_FILES"]

#: what ``fit`` writes into ``train.out``: a folder holding any of these is an existing run
RUN_FILES = ("last.pt", "model.pt", "metrics.csv", "metrics.json", "config.yaml", "tb")
#: the run's report (train.report): cleared with a run, but no sign of one
REPORT_FILES = ("train_report.md", "train_report.html", "figures/training_curves.png", "figures/loss_lr.png")
