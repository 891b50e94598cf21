"""Input conversion and validation shared by the functional metrics (private).

Every metric accepts torch tensors, NumPy arrays or (nested) sequences; tensors keep their device (except
Apple's MPS, which has no float64: its tensors are counted on the CPU), everything else becomes a CPU tensor.
Checks raise ``TypeError``/``ValueError`` naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor", "check_probs", "check_labels_for", "check_scores", "check_same_length", "off_mps", "PROB_ATOL"]

#: rows of ``probs`` must sum to 1 within this absolute tolerance
PROB_ATOL = 1e-3


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """Return ``x`` as a tensor (tensors unchanged, arrays/sequences converted on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (np.ndarray, Sequence, np.generic, int, float)) and not isinstance(x, (str, bytes)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a tensor, NumPy array or numeric sequence: {exc}") from None
    raise TypeError(f"{name} must be a torch.Tensor, NumPy array or numeric sequence, got {type(x).__name__}")


def off_mps(x: torch.Tensor) -> torch.Tensor:
    """``x``, brought to the CPU when it is on Apple's MPS, which has no float64 (what the metrics count in)."""
    return x.cpu() if x.device.type == "mps" else x


def _float(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as float32, float64 if it is float64 or integer (so that distinct integers up to 2**53 stay distinct:
    float32 would tie them from 2**24 on). MPS tensors come to the CPU: it has no float64, which the metrics use."""
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must be a real numeric tensor (integer or floating), got dtype {x.dtype}")
    x = off_mps(x)
    if not x.is_floating_point():  # signed or unsigned integers
        return x.to(torch.float64)
    return x.double() if x.dtype == torch.float64 else x.float()


def check_probs(probs: Any, name: str = "probs", *, atol: float = PROB_ATOL) -> torch.Tensor:
    """Validate class probabilities ``(N, K)``: finite, in [0, 1], rows summing to 1 (within ``atol``, or the
    dtype's machine epsilon where that is larger: bfloat16); return float32/64."""
    p = as_tensor(probs, name)
    if p.ndim != 2:
        raise ValueError(f"{name} must have shape (N, K) (one probability vector per sample), "
                         f"got shape {tuple(p.shape)}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(p.shape)}); expected at least one sample and one class")
    if not p.is_floating_point():
        raise TypeError(f"{name} must be floating point probabilities, got dtype {p.dtype}")
    atol = max(atol, float(torch.finfo(p.dtype).eps))  # a bfloat16 softmax's rows sum to 1 within its 2**-7 only
    p = _float(p, name)
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if bool((p < -atol).any()) or bool((p > 1 + atol).any()):
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{p.min().item():.4g}, {p.max().item():.4g}] "
                         "(pass softmax(logits), not logits)")
    sums = p.sum(dim=1)
    bad = (sums - 1).abs() > atol
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"rows of {name} must sum to 1 (within {atol}); row {i} sums to {sums[i].item():.6g} "
                         "(pass softmax(logits), not logits)")
    return p


def check_labels_for(
    labels: Any, n: int, num_classes: int | None, name: str = "labels", device: torch.device | None = None
) -> torch.Tensor:
    """Validate integer labels ``(N,)`` in ``[0, num_classes)`` and move them to ``device``."""
    y = as_tensor(labels, name)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but there are {n} predictions; "
                         "expected one label per sample")
    if device is not None and y.device != device:
        y = y.to(device)
    y = y.long()
    if not n:
        return y
    lo, hi = (int(v) for v in torch.aminmax(y))  # one pass over the labels
    if num_classes is not None and (lo < 0 or hi >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes}) for {num_classes} classes; got values in [{lo}, {hi}]")
    if num_classes is None and lo < 0:  # e.g. NO_LABEL (-1) of unlabelled data
        raise ValueError(f"{name} must be class indices >= 0; got {int((y < 0).sum())} negative values (-1 marks "
                         "unlabelled images, which have no accuracy)")
    return y


def check_scores(scores: Any, name: str) -> torch.Tensor:
    """Validate 1-D finite scores ``(N,)`` with N >= 1; return a float tensor."""
    s = as_tensor(scores, name)
    if s.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) (one score per sample), got shape {tuple(s.shape)}")
    if s.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected at least one score")
    s = _float(s, name)
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def check_same_length(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same first dimension."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {a.shape[0]} and {b.shape[0]}")
