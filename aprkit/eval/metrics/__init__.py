"""Functional evaluation metrics (stateless; tensors or arrays in, Python floats out).

Calibration (``probs (N, K)``, ``labels (N,)``), OOD detection (``scores_in (N,)``, ``scores_out (M,)``,
higher = more in-distribution, ID positive), corruption robustness (errors as fractions per corruption)
and accuracy. See each submodule's docstring for conventions.
"""

from __future__ import annotations

from .calibration import (
    bin_statistics,
    brier,
    brier_from_picked,
    confidences_and_correct,
    ece_from_bins,
    expected_calibration_error,
    nll,
    nll_from_logits,
    nll_from_picked,
    reliability_diagram_data,
    reliability_from_bins,
    rms_calibration_error,
    rms_from_confidences,
)
from .classification import accuracy, error_rate, topk_correct
from .corruption import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    ALEXNET_MEAN_ERRORS,
    CORRUPTION_FAMILIES,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    canonical_corruption,
    ce_per_corruption,
    corruption_robustness,
    corruption_summary,
    mce,
    mean_corruption_error,
    relative_mce,
)
from .ood import aupr_in, aupr_out, auroc, auroc_se, fpr_at_tpr, ood_metrics

__all__ = [
    "ALEXNET_CLEAN_ERROR",
    "ALEXNET_ERRORS",
    "ALEXNET_MEAN_ERRORS",
    "CORRUPTIONS",
    "CORRUPTION_FAMILIES",
    "EXTRA_CORRUPTIONS",
    "accuracy",
    "aupr_in",
    "aupr_out",
    "auroc",
    "auroc_se",
    "bin_statistics",
    "brier",
    "brier_from_picked",
    "canonical_corruption",
    "ce_per_corruption",
    "confidences_and_correct",
    "corruption_robustness",
    "corruption_summary",
    "ece_from_bins",
    "error_rate",
    "expected_calibration_error",
    "fpr_at_tpr",
    "mce",
    "mean_corruption_error",
    "nll",
    "nll_from_logits",
    "nll_from_picked",
    "ood_metrics",
    "relative_mce",
    "reliability_diagram_data",
    "reliability_from_bins",
    "rms_calibration_error",
    "rms_from_confidences",
    "topk_correct",
]
