"""Evaluation suites; see ``base`` for the interface. Suite modules register on import."""

from __future__ import annotations

from ..._lazy import import_plugins
from .base import SUITES, EvalContext, Measure, ReportSection, Suite, SuiteOptions, register_suite

__all__ = ["SUITES", "EvalContext", "Measure", "ReportSection", "Suite", "SuiteOptions", "register_suite",
           "load_suites", "SUITE_MODULES"]

#: modules that define suites, imported on demand by ``load_suites``
SUITE_MODULES = ("corruption", "calibration", "ood", "shape_bias", "phase_bias", "transplant", "cue_conflict")


def load_suites() -> dict[str, type[Suite]]:
    """Import every suite module and return the registry; a broken one raises ``ImportError`` naming it
    (only a suite needing a missing optional package is left out, see :func:`aprkit._lazy.import_plugins`)."""
    import_plugins((f"{__name__}.{mod}" for mod in SUITE_MODULES), "suite")
    return SUITES
