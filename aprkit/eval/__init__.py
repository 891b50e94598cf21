"""Evaluation: functional metrics, suites, the ``evaluate`` runner and reports.

Public names are imported lazily from their modules on first access (nothing heavy at import).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

#: public name -> module that defines it (each area adds its own lines)
_EXPORTS: dict[str, str] = {
    "evaluate": "aprkit.eval.runner",
    "Results": "aprkit.eval.report.results",
    "shape_bias": "aprkit.eval.texture_shape",
    "phase_bias": "aprkit.eval.phase_amplitude",
    "ShapeBiasResult": "aprkit.eval.texture_shape",
    "measure_shape_bias": "aprkit.eval.texture_shape",
    "imagenet_to_16": "aprkit.eval.texture_shape",
    "cue_conflict_decisions": "aprkit.eval.texture_shape",
    "PhaseBiasResult": "aprkit.eval.phase_amplitude",
    "measure_phase_bias": "aprkit.eval.phase_amplitude",
    "phase_amplitude_conflict": "aprkit.eval.phase_amplitude",
    "patch_shuffle": "aprkit.eval.phase_amplitude",
    "sample_pairs": "aprkit.eval.phase_amplitude",
    "transplant_test": "aprkit.eval.transplant",
    "layer_sweep": "aprkit.eval.transplant",
    "write_report": "aprkit.eval.report.results",
    "ResultCache": "aprkit.eval.cache",
    "predict": "aprkit.eval.inference",
}

_SUBMODULES = ("metrics", "suites", "runner", "report", "scores")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


__getattr__ = lazy_getattr(__name__, _EXPORTS, _SUBMODULES)
