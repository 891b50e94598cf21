"""Corruption-robustness metrics: CE / mCE (ImageNet-C), relative mCE, CIFAR mean corruption error.

Errors are **fractions in [0, 1]** (not percent). ``errors`` maps a corruption name to either one error
(taken as the mean over the five severities), a sequence of five per-severity errors or a mapping of the
severities 1..5 to their errors (int or string keys, as ``results.json`` holds them). Names are
matched case-insensitively with spaces/hyphens read as underscores (``"Gaussian Noise"`` ->
``"gaussian_noise"``). The 15 benchmark corruptions must all be present; the four extra ImageNet-C
corruptions (speckle noise, gaussian blur, spatter, saturate) are ignored by mCE.

Definitions (Hendrycks & Dietterich, ICLR 2019):
- ``CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}``; ``mCE = mean_c CE_c``.
- ``relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^AlexNet_{s,c} - E^AlexNet_clean)``;
  ``relative mCE = mean_c relative CE_c``.
- CIFAR convention: ``mean_corruption_error`` is the plain mean of the 15 x 5 errors (no baseline).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from aprkit.corruptions.names import BENCHMARK, EXTRA, FAMILIES, canonical_name

__all__ = [
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "CORRUPTION_FAMILIES",
    "ALEXNET_ERRORS",
    "ALEXNET_MEAN_ERRORS",
    "ALEXNET_CLEAN_ERROR",
    "canonical_corruption",
    "ce_per_corruption",
    "mce",
    "relative_mce",
    "mean_corruption_error",
    "corruption_robustness",
    "corruption_summary",
]

#: the 15 benchmark corruptions, in the order of the ImageNet-C paper (``aprkit.corruptions.names``)
CORRUPTIONS: tuple[str, ...] = BENCHMARK
#: the four held-out ("extra") corruptions shipped with ImageNet-C / CIFAR-10-C
EXTRA_CORRUPTIONS: tuple[str, ...] = EXTRA
CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {k: v for k, v in FAMILIES.items() if k != "extra"}

# AlexNet top-1 errors on ImageNet-C per corruption and severity 1..5 (fractions). Source: Hendrycks &
# Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019,
# Appendix C; the per-severity values as distributed with google-research/robustness_metrics. Their severity
# means are the per-corruption AlexNet errors of hendrycks/robustness (gaussian_noise 0.886428, ...), the
# numbers the AugMix and mmpretrain mCE code divide by.
ALEXNET_ERRORS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
#: per-corruption AlexNet error averaged over severities (gaussian_noise -> 0.886428, ...)
ALEXNET_MEAN_ERRORS: dict[str, float] = {c: sum(v) / 5 for c, v in ALEXNET_ERRORS.items()}
#: AlexNet clean ImageNet top-1 error (paper Appendix C: 43.5%; 0.4348 as used for relative mCE in
#: google-research/robustness_metrics ``ALEXNET_AVERAGE_ERR_CLEAN``; torchvision's AlexNet: 1 - 0.56522)
ALEXNET_CLEAN_ERROR: float = 0.4348

_BASELINES = {"alexnet": (ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR)}


#: ``"Gaussian Noise"`` / ``"gaussian-noise"`` -> ``"gaussian_noise"`` (raises on unknown names)
canonical_corruption = canonical_name


def _error_value(value: Any, what: str) -> torch.Tensor:
    given = value
    if isinstance(value, Mapping):  # severity -> error, as results.json holds them (its keys are strings)
        by_level = {str(k).strip(): v for k, v in value.items()}
        if len(by_level) != len(value):  # 5 and "5": one severity twice, the last one silently kept
            raise ValueError(f"{what} names a severity twice (as a number and as a string?): {list(value)}; expected "
                             "each of the severities 1..5 once")
        if sorted(by_level) != ["1", "2", "3", "4", "5"]:
            raise ValueError(f"{what} must be one error, 5 per-severity errors or a mapping of the severities 1..5 to "
                             f"their errors, got a mapping of {sorted(value, key=str)}")
        value = [by_level[str(k)] for k in range(1, 6)]
    try:
        return _error_tensor(value, what)
    except (TypeError, RuntimeError) as err:  # e.g. a nested mapping or text: one line naming what is taken
        raise TypeError(f"{what} must be one error, 5 per-severity errors or a mapping of the severities 1..5 to their "
                        f"errors (fractions in [0, 1]), got {type(given).__name__}") from err


def _error_tensor(value: Any, what: str) -> torch.Tensor:
    # Python floats straight to float64 (as_tensor's default float32 moved them by ~1e-9)
    t = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    t = t.to(torch.float64).reshape(-1)
    if t.numel() not in (1, 5):
        raise ValueError(f"{what} must be one error or a sequence of 5 per-severity errors, got {t.numel()} values")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError(f"{what} must be fractions in [0, 1] (not percent), got {t.tolist()}")
    return t


def _errors_table(
    errors: Mapping[str, Any], name: str = "errors", required: tuple[str, ...] | None = CORRUPTIONS
) -> dict[str, torch.Tensor]:
    if not isinstance(errors, Mapping):
        raise TypeError(f"{name} must be a mapping corruption -> error (or 5 per-severity errors), "
                        f"got {type(errors).__name__}")
    table = {}
    for key, value in errors.items():
        c = canonical_corruption(key)
        if c in table:
            raise ValueError(f"{name} names corruption {c!r} twice")
        table[c] = _error_value(value, f"{name}[{key!r}]")
    if required is not None:
        missing = [c for c in (canonical_corruption(r) for r in required) if c not in table]
        if missing:
            raise ValueError(f"{name} lacks {len(missing)} of the {len(required)} benchmark corruptions: "
                             f"{', '.join(missing)}")
    return table


def _baseline(baseline: str | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if isinstance(baseline, str):
        if baseline.lower() not in _BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; built in: {', '.join(_BASELINES)} (or pass a mapping)")
        return _errors_table(_BASELINES[baseline.lower()][0], "baseline")
    return _errors_table(baseline, "baseline")


def ce_per_corruption(errors: Mapping[str, Any], baseline: str | Mapping[str, Any] = "alexnet") -> dict[str, float]:
    """Corruption error ``CE_c = mean_s E_{s,c} / mean_s E^base_{s,c}`` for each of the 15 corruptions."""
    table, base = _errors_table(errors), _baseline(baseline)
    out = {}
    for c in CORRUPTIONS:
        denom = float(base[c].mean())
        if denom <= 0:
            raise ValueError(f"baseline error for {c!r} is 0; CE is undefined")
        out[c] = float(table[c].mean()) / denom
    return out


def mce(errors: Mapping[str, Any], baseline: str | Mapping[str, Any] = "alexnet") -> float:
    """ImageNet-C mean corruption error: mean over the 15 corruptions of ``CE_c`` (1.0 = AlexNet).

    The default baseline is AlexNet's errors on ImageNet-C (all 1000 classes, 50,000 validation images): errors of
    another dataset (CIFAR-10-C, a class subset, a ``limit``) need their own ``baseline`` mapping, or are better
    reported as the plain mean (:func:`mean_corruption_error`), as the evaluation suite does."""
    ce = ce_per_corruption(errors, baseline)
    return sum(ce.values()) / len(ce)


def relative_mce(
    errors: Mapping[str, Any],
    clean_error: float,
    baseline: str | Mapping[str, Any] = "alexnet",
    baseline_clean_error: float | None = None,
) -> float:
    """Relative mCE: mean over corruptions of ``(mean_s E_{s,c} - E_clean) / (mean_s E^base_{s,c} - E^base_clean)``.

    ``baseline_clean_error`` defaults to :data:`ALEXNET_CLEAN_ERROR` for ``baseline="alexnet"`` and must
    be given with a custom baseline mapping.
    """
    clean = float(_error_value(clean_error, "clean_error"))
    if baseline_clean_error is None:
        if not isinstance(baseline, str):
            raise ValueError("baseline_clean_error is required with a custom baseline mapping")
        baseline_clean_error = _BASELINES[baseline.lower()][1] if baseline.lower() in _BASELINES else 0.0
    base_clean = float(_error_value(baseline_clean_error, "baseline_clean_error"))
    table, base = _errors_table(errors), _baseline(baseline)
    rel = []
    for c in CORRUPTIONS:
        denom = float(base[c].mean()) - base_clean
        if denom <= 0:
            raise ValueError(f"baseline error for {c!r} does not exceed its clean error; relative CE is undefined")
        rel.append((float(table[c].mean()) - clean) / denom)
    return sum(rel) / len(rel)


def mean_corruption_error(errors: Mapping[str, Any], corruptions: tuple[str, ...] | None = CORRUPTIONS) -> float:
    """CIFAR convention: plain mean of the errors over corruptions x severities (no baseline).

    By default the 15 benchmark corruptions are required and others ignored; ``corruptions=None``
    averages whatever is given. A single error per corruption counts as its severity mean; per-severity errors are
    5 values in severity order or a mapping of the severities 1..5 (ints or strings, as in ``results.json``).
    """
    table = _errors_table(errors, required=corruptions)
    keys = tuple(canonical_corruption(c) for c in corruptions) if corruptions is not None else tuple(table)
    if not keys:
        raise ValueError("errors is empty")
    return sum(float(table[c].mean()) for c in keys) / len(keys)


def corruption_robustness(accuracies: Mapping[str, Any] | float, clean_accuracy: float) -> float:
    """Corrupted accuracy relative to clean accuracy: ``mean corrupted accuracy / clean accuracy``.

    ``accuracies`` is a mean corrupted accuracy or a mapping corruption -> accuracy (or 5 per-severity
    accuracies), averaged over everything given. 1.0 means no loss under corruption.
    """
    clean = float(_error_value(clean_accuracy, "clean_accuracy"))
    if clean <= 0:
        raise ValueError("clean_accuracy must be > 0")
    if isinstance(accuracies, Mapping):
        table = _errors_table(accuracies, "accuracies", required=None)
        if not table:
            raise ValueError("accuracies is empty")
        mean_acc = sum(float(v.mean()) for v in table.values()) / len(table)
    else:
        mean_acc = float(_error_value(accuracies, "accuracies").mean())
    return mean_acc / clean


def corruption_summary(
    errors: Mapping[str, Any], clean_error: float | None = None, imagenet: bool = False
) -> dict[str, Any]:
    """All corruption numbers a report needs, JSON-serialisable.

    Always: ``mean_corruption_error``, ``mean_corrupted_accuracy``, per-corruption mean errors and per-family
    means; with ``clean_error``: ``clean_error`` and ``relative_robustness``; with ``imagenet=True``:
    ``mce``, ``ce`` per corruption and (with ``clean_error``) ``relative_mce``, all against AlexNet.
    """
    table = _errors_table(errors)
    per = {c: float(table[c].mean()) for c in CORRUPTIONS}
    out: dict[str, Any] = {
        "mean_corruption_error": sum(per.values()) / len(per),
        "per_corruption_error": per,
        "per_family_error": {f: sum(per[c] for c in cs) / len(cs) for f, cs in CORRUPTION_FAMILIES.items()},
    }
    out["mean_corrupted_accuracy"] = 1.0 - out["mean_corruption_error"]
    if clean_error is not None:
        out["clean_error"] = float(_error_value(clean_error, "clean_error"))
        if out["clean_error"] < 1:
            out["relative_robustness"] = out["mean_corrupted_accuracy"] / (1.0 - out["clean_error"])
    if imagenet:
        out["ce"] = ce_per_corruption(errors)
        out["mce"] = sum(out["ce"].values()) / len(out["ce"])
        if clean_error is not None:
            out["relative_mce"] = relative_mce(errors, clean_error)
    return out
