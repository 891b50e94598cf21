"""Evaluation: models and data in, ``results.json`` and a report out.

The sub-packages, in the order the data flows through them:

- :mod:`.engine`: running models on data (batches, devices, ``torchrun`` shards: :mod:`.engine.inference`), the
  result cache (:mod:`.engine.cache`), the output folder (:mod:`.engine.outdir`), the settings of
  ``aprkit eval`` (:mod:`.engine.config`) and :func:`evaluate` (:mod:`.engine.runner`), which runs the suites;
- :mod:`.metrics`: functional metrics from predictions to numbers (accuracy, calibration, corruption error, OOD
  metrics) and the OOD scores (:mod:`.metrics.ood_scores`);
- :mod:`.analyses`: measurement procedures that build their own stimuli and run a model on them: phase bias,
  shape bias, the transplant layer sweep (each named after its suite);
- :mod:`.suites`: the registered suites (``aprkit eval --suite NAME``): each one computes its result through the
  engine, the metrics and the analyses, and describes it as report blocks;
- :mod:`.report`: the report blocks, figures, :class:`Results` and :func:`write_report` (Markdown and HTML).

Public names are imported lazily from their modules on first access (nothing heavy at import).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

#: public name -> module that defines it (each area adds its own lines)
_EXPORTS: dict[str, str] = {
    "evaluate": "aprkit.eval.engine.runner",
    "Results": "aprkit.eval.report.results",
    "shape_bias": "aprkit.eval.analyses.shape_bias",
    "phase_bias": "aprkit.eval.analyses.phase_bias",
    "ShapeBiasResult": "aprkit.eval.analyses.shape_bias",
    "measure_shape_bias": "aprkit.eval.analyses.shape_bias",
    "imagenet_to_16": "aprkit.eval.analyses.shape_bias",
    "cue_conflict_decisions": "aprkit.eval.analyses.shape_bias",
    "PhaseBiasResult": "aprkit.eval.analyses.phase_bias",
    "measure_phase_bias": "aprkit.eval.analyses.phase_bias",
    "phase_amplitude_conflict": "aprkit.eval.analyses.phase_bias",
    "patch_shuffle": "aprkit.eval.analyses.phase_bias",
    "sample_pairs": "aprkit.eval.analyses.phase_bias",
    "transplant_test": "aprkit.eval.analyses.transplant",
    "layer_sweep": "aprkit.eval.analyses.transplant",
    "write_report": "aprkit.eval.report.results",
    "ResultCache": "aprkit.eval.engine.cache",
    "predict": "aprkit.eval.engine.inference",
}

_SUBMODULES = ("engine", "metrics", "analyses", "suites", "report")

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


__getattr__ = lazy_getattr(__name__, _EXPORTS, _SUBMODULES)
