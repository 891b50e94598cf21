"""Classification accuracy / error from scores or predicted labels."""

from __future__ import annotations

from typing import Any

import torch

from ..._checks import check_positive_int
from ._validate import as_tensor, check_labels_for

__all__ = ["accuracy", "error_rate", "topk_correct"]


def _check_k(top_k: int, num_classes: int) -> int:
    top_k = check_positive_int(top_k, "top_k")  # NumPy integers too, as n_bins takes them
    if top_k > num_classes:
        raise ValueError(f"top_k={top_k} exceeds the number of classes ({num_classes})")
    return top_k


def topk_correct(outputs: Any, labels: Any, ks: tuple[int, ...] = (1,)) -> torch.Tensor:
    """Number of correct samples for each ``k`` in ``ks`` (int64 tensor ``(len(ks),)`` on the outputs' device).

    ``outputs`` are scores ``(N, K)`` (logits or probabilities; arg-max order is all that matters) or
    predicted labels ``(N,)`` (then only ``k = 1`` is allowed). Tied scores rank by class index, the lower first
    (``argmax``'s rule). Raises on NaN scores or label mismatch.
    """
    out = as_tensor(outputs, "outputs")
    if out.ndim in (1, 2) and out.shape[0] == 0:
        raise ValueError("outputs is empty; expected at least one sample")
    if out.ndim == 1:
        if any(k != 1 for k in ks):
            raise ValueError("outputs of shape (N,) are predicted labels; only top-1 accuracy is defined for them")
        if out.is_floating_point():
            raise TypeError("outputs of shape (N,) must be integer predicted labels; pass scores as (N, K)")
        y = check_labels_for(labels, out.shape[0], None, device=out.device)
        check_labels_for(out, out.shape[0], None, "predicted labels (outputs of shape (N,))")
        return (out.long() == y).sum().reshape(1).repeat(len(ks))
    if out.ndim != 2:
        raise ValueError(f"outputs must be scores (N, K) or predicted labels (N,), got shape {tuple(out.shape)}")
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise ValueError("outputs contain NaN or infinite values (check the model's logits)")
    y = check_labels_for(labels, out.shape[0], out.shape[1], device=out.device)
    for k in ks:
        _check_k(k, out.shape[1])
    # the label's rank with tied scores ordered by class index (argmax's rule, as torchmetrics and the suites decide;
    # topk orders ties arbitrarily, CPU kernels returned the last): higher scores, plus equal ones of lower classes
    own = out.gather(1, y[:, None])
    lower = torch.arange(out.shape[1], device=out.device)[None, :] < y[:, None]
    rank = (out > own).sum(1) + ((out == own) & lower).sum(1)
    return torch.stack([(rank < k).sum() for k in ks])


def accuracy(outputs: Any, labels: Any, top_k: int = 1) -> float:
    """Top-``k`` accuracy in [0, 1] from scores ``(N, K)`` or predicted labels ``(N,)``."""
    out = as_tensor(outputs, "outputs")
    return float(topk_correct(out, labels, (top_k,))[0]) / out.shape[0]


def error_rate(outputs: Any, labels: Any, top_k: int = 1) -> float:
    """Top-``k`` error ``1 - accuracy`` in [0, 1]."""
    return 1.0 - accuracy(outputs, labels, top_k)
