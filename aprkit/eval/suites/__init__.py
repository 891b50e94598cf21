"""Evaluation suites; see ``base`` for the interface. Suite modules register on import."""

from __future__ import annotations

import importlib

from .base import SUITES, EvalContext, ReportSection, Suite, register_suite

__all__ = ["SUITES", "EvalContext", "ReportSection", "Suite", "register_suite", "load_suites", "SUITE_MODULES"]

#: modules that define suites, imported on demand by ``load_suites``
SUITE_MODULES = ("corruption", "calibration", "ood", "shape_bias", "phase_bias", "transplant", "cue_conflict")


def load_suites() -> dict[str, type[Suite]]:
    """Import every suite module that exists and return the registry."""
    for mod in SUITE_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{mod}":
                raise
    return SUITES
