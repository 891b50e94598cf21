"""Checks of a model's outputs as inference reads them: a logits tensor of the expected shape and class count
(:func:`check_logits`, per batch), finite (:func:`check_finite_logits`, per dataset) and no probabilities
(:func:`warn_if_probabilities`); each error names the batch or the images."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

__all__ = ["OutputWidthError", "check_logits", "batch_where", "check_finite_logits", "warn_if_probabilities",
           "naming_model"]

_MODEL: ContextVar[str | None] = ContextVar("aprkit_eval_model", default=None)


@contextmanager
def naming_model(name: str) -> Iterator[None]:
    """Within the block, the output warnings name the model ``name`` (``evaluate`` runs each model's suites in one):
    Python shows a warning's text once per place, so a text without the name warned of the first such model only."""
    token = _MODEL.set(name)
    try:
        yield
    finally:
        _MODEL.reset(token)


class OutputWidthError(ValueError):
    """The model's logits have another width than the data's classes need."""


def check_logits(logits: Any, n: int, num_classes: int | tuple[int, ...] | None,
                 where: Callable[[], str]) -> torch.Tensor:
    """``logits`` when they are a tensor ``(n, num_classes)``; an error names the batch that ``where()`` describes
    (called only then: the description reads the batch's first and last dataset index)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"the model must return a logits tensor (B, num_classes), got {type(logits).__name__} "
                        f"{where()}")
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits of shape (B, num_classes), "
                         f"got shape {tuple(logits.shape)} {where()}")
    if logits.shape[0] != n:
        raise ValueError(
            f"label/prediction count mismatch {where()}: the model returned {logits.shape[0]} rows of logits "
            f"for {n} images/labels"
        )
    if isinstance(num_classes, tuple):
        if logits.shape[1] not in num_classes:
            raise OutputWidthError(f"the model outputs {logits.shape[1]} class{'es' if logits.shape[1] != 1 else ''} "
                                   f"{where()}; this data needs {' or '.join(map(str, num_classes))} outputs")
    elif num_classes is not None and logits.shape[1] != num_classes:
        raise OutputWidthError(
            f"the model outputs {logits.shape[1]} class{'es' if logits.shape[1] != 1 else ''} but the data has "
            f"{num_classes} {where()}; "
            "load the checkpoint trained on this label set, or give the data the model's label set (one folder per "
            "model class, in the model's order; empty folders count); a model whose first outputs are the data's "
            "classes (trained with more outputs than classes) runs with --set check_classes=false"
        )
    return logits


def batch_where(desc: str, b: int, idx: torch.Tensor) -> str:
    return f"({desc}, batch {b}, images {int(idx[0])}..{int(idx[-1])})"


def check_finite_logits(logits: torch.Tensor, idx: torch.Tensor, desc: str) -> None:
    """Raise when rows of ``logits`` ``(N, K)`` (dataset indices ``idx``) hold NaN or infinite values (one sync)."""
    finite = torch.isfinite(logits).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().cpu()
        first = idx[bad[:5]].tolist()
        raise ValueError(
            f"the model returned NaN or infinite logits for {bad.numel()} of {logits.shape[0]} images ({desc}; "
            f"dataset indices {first}{' ...' if bad.numel() > 5 else ''}); check the checkpoint and the input range "
            "(float [0, 1])"
        )


def warn_if_probabilities(logits: torch.Tensor) -> None:
    """Warn when every row of the model's outputs ``(N, K)`` lies in [0, 1] and sums to 1: probabilities (a model
    ending in a softmax), where logits are expected. The accuracy comes out right, but every measure read from
    ``softmax(logits)`` (ECE, NLL, Brier, the OOD scores) is computed on ``softmax(probabilities)``: ECE 75 % instead
    of 1.5 % for a CIFAR-10 ResNet-20. Log-probabilities are logits (their softmax is the probabilities)."""
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        return
    lo, hi = (float(v) for v in torch.aminmax(logits))
    # rows summing to 1 to bfloat16's rounding (a softmax under CPU autocast): real logits never all do
    if lo >= -1e-6 and hi <= 1 + 1e-6 and bool(((logits.double().sum(1) - 1).abs() < 2e-2).all()):
        name = _MODEL.get()
        who = f"the model {name!r}" if name else "the model"
        warnings.warn(f"{who} returns probabilities (every row of its outputs lies in [0, 1] and sums to 1), but "
                      "logits are expected: calibration (ECE, NLL, Brier) and the OOD scores are computed on their "
                      "softmax, so they come out wrong (the accuracy does not); drop the final softmax, or return "
                      "its log (torch.log_softmax)", RuntimeWarning, stacklevel=3)
