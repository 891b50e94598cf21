"""OOD scores from logits, inputs or penultimate features. **Higher score = more in-distribution.**

- :func:`msp`: maximum softmax probability (Hendrycks & Gimpel, 2017);
- :func:`max_logit`: maximum logit (Hendrycks et al., 2022);
- :func:`energy`: negative free energy ``T * logsumexp(logits / T)`` (Liu et al., 2020);
- :func:`odin`: temperature-scaled MSP of an input nudged to raise it (Liang et al., 2018);
- :class:`MahalanobisScorer`: minus the smallest squared Mahalanobis distance to a class mean under one shared
  covariance, fitted on in-distribution penultimate features (Lee et al., 2018; no input perturbation or
  layer ensemble);
- :class:`KNNScorer`: minus the distance to the ``k``-th nearest in-distribution training feature after
  L2 normalisation (Sun et al., 2022).

Each returns a float tensor ``(N,)`` on the input's device (MSP and ODIN in float64, see :func:`msp`; on MPS,
which has no float64, on the CPU); feed ``(scores_in, scores_out)`` to :mod:`aprkit.eval.metrics` (``auroc``,
``fpr_at_tpr``, ...).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..._checks import check_integer_labels, check_positive_int
from ...models.normalize import recording_classifier
from ._validate import off_mps

__all__ = [
    "DegenerateFit", "LOGIT_SCORES", "msp", "max_logit", "energy", "odin", "features_and_logits", "MahalanobisScorer",
    "KNNScorer",
]


def _check_logits(logits: Any, name: str = "logits") -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, K), got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, K) with N >= 1 and K >= 2, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} contain NaN or infinite values (check the model's output)")
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _check_temperature(t: float) -> float:
    t = float(t)
    if not 0 < t < math.inf:
        raise ValueError(f"temperature must be a finite number > 0, got {t}")
    return t


def msp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Maximum softmax probability ``max_k softmax(logits / T)_k``, ``(N,)`` in (0, 1], float64.

    Computed in float64: in float32 it rounds to exactly 1.0 once the top logit leads the others by about 17, so a
    confident in-distribution set becomes a block of ties (AUROC counts them 1/2, FPR@95 thresholds at 1.0) and the
    ranking that the maximum logit still has is lost; float64 keeps it up to a lead of about 37. The reference scripts
    (Outlier Exposure, ODIN, energy-OOD) take the float32 softmax: for a confident model their MSP AUROC is lower
    (a review's synthetic case: 0.698 in float32 against 0.734 here), so compare MSP numbers computed alike."""
    z = _check_logits(logits)
    z = _float64(z)
    return torch.softmax(z / _check_temperature(temperature), dim=1).amax(dim=1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Maximum logit ``max_k logits_k``, ``(N,)``."""
    return _check_logits(logits).amax(dim=1)


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative energy ``T * logsumexp(logits / T)``, ``(N,)``, float64 (higher = more in-distribution).

    Float64 as :func:`msp`: at a high temperature the value grows as ``T log K`` (about 2,300 at ``T = 1000``), where
    float32 steps of 2e-4 made most scores ties."""
    t = _check_temperature(temperature)
    z = _check_logits(logits)
    z = _float64(z)
    return t * torch.logsumexp(z / t, dim=1)


def odin(model: nn.Module, x: torch.Tensor, temperature: float = 1000.0, epsilon: float = 0.0014) -> torch.Tensor:
    """ODIN score ``(N,)``: MSP at temperature ``T`` of ``x - epsilon * sign(grad_x CE(f(x)/T, argmax))``.

    ``sign`` is the original code's, +1 at a gradient of exactly 0.
    ``x`` is the model's float input ``(N, C, H, W)`` in [0, 1] (aprkit models normalise inside), so
    ``epsilon`` is in pixel units of [0, 1]; that equals the original code's step, which it took on
    normalised inputs divided by the channel std. The perturbed input is not clipped (as in the original).
    Needs gradients w.r.t. the input (runs under ``torch.enable_grad``, also when called in ``torch.no_grad`` or
    ``torch.inference_mode``); the model's parameters are untouched and should be in eval mode.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor (N, C, H, W) of model inputs")
    t = _check_temperature(temperature)
    eps = float(epsilon)
    if eps < 0:
        raise ValueError(f"epsilon must be >= 0, got {eps}")
    with torch.inference_mode(False), torch.enable_grad():  # also called under inference_mode (its grad is local)
        x_in = x.detach().clone().requires_grad_(True)
        logits = _check_logits(model(x_in), "model output")
        loss = F.cross_entropy(logits / t, logits.argmax(dim=1), reduction="sum")  # -log S_yhat(x; T)
        (grad,) = torch.autograd.grad(loss, x_in)
    if bool(grad.isnan().any()):  # the sign below would turn NaN into a step and a finite, meaningless score
        raise ValueError("ODIN: the input gradient of the model's loss holds NaN (for finite logits): no "
                         "perturbation direction; check the model's backward (e.g. a sqrt or norm at zero)")
    # the original code's sign: +1 where the gradient is >= 0, so a pixel whose gradient is exactly 0 (behind a ReLU
    # or a max-pool) moves too (grad.sign() left it; OpenOOD does the same as the original)
    x_pert = x.detach() - eps * torch.where(grad >= 0, 1.0, -1.0).to(grad.dtype)
    with torch.no_grad():
        return msp(model(x_pert).float(), t)


def features_and_logits(
    model: nn.Module, x: torch.Tensor, layer: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` and penultimate features ``(N, D)``: the (flattened) input of ``layer``.

    ``layer`` defaults to the last ``nn.Linear`` the forward pass calls (the classifier head of ResNets, timm and
    torchvision models; :func:`aprkit.models.normalize.recording_classifier`). Neither is detached.
    """
    if layer is None:
        try:
            with recording_classifier(model, detach=False) as seen:
                logits = model(x)
        except ValueError as err:  # no nn.Linear classifier
            raise ValueError(f"{err}; pass layer= (the module whose input is the feature)") from None
        return seen[-1].flatten(1), logits
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the feature layer was not called during the forward pass")
    return captured[-1].flatten(1), logits


def _check_features(f: Any, name: str = "features", dim: int | None = None) -> torch.Tensor:
    if not isinstance(f, torch.Tensor) or not f.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (N, D)")
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1, got {tuple(f.shape)}")
    if dim is not None and f.shape[1] != dim:
        raise ValueError(f"{name} must have D = {dim} features (as fitted), got {f.shape[1]}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{name} contain NaN or infinite values")
    return f


def _float64(f: torch.Tensor) -> torch.Tensor:
    """``f`` in float64, on the CPU when it is on MPS (which has no float64)."""
    return off_mps(f).to(torch.float64)


class DegenerateFit(ValueError):
    """Features that give a scorer nothing to fit (Mahalanobis: no spread around the class means)."""


class MahalanobisScorer:
    """Class-conditional Gaussians with a shared covariance; score = ``-min_c (f - mu_c)^T Sigma^-1 (f - mu_c)``.

    ``fit(features (N, D), labels (N,))`` estimates the class means and the maximum-likelihood shared
    covariance of the centred features (pseudo-inverse for the precision); ``score(features) -> (M,)``.
    Computed in float64 (on the CPU for MPS features), chunked over samples, on features less the mean of the fitted
    ones (``center``): the expanded distance ``f'Pf - 2f'Pm + m'Pm`` cancelled digits on features with a large
    common offset. Like Lee et al.'s ``pinvh``, a direction constant over the fitted features adds nothing to a
    distance (a test feature active only there scores as if it were zero there).
    """

    def __init__(self, chunk_size: int = 4096):
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None
        self.center: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> MahalanobisScorer:
        f = _float64(_check_features(features))
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != f.shape[0]:
            raise ValueError(f"labels must be a tensor (N,) with N = {f.shape[0]} (one per feature row)")
        check_integer_labels(labels)  # a cast truncates 1.7 to 1 and -0.5 to 0
        y = labels.to(f.device).long()
        if bool((y < 0).any()):
            raise ValueError("labels must be class indices >= 0 (unlabelled data cannot fit Mahalanobis)")
        classes = torch.unique(y)
        center = f.mean(dim=0)
        f = f - center
        means = torch.stack([f[y == c].mean(dim=0) for c in classes.tolist()])
        centred = f - means[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / f.shape[0]
        if not bool(cov.abs().amax() > 0):  # its pseudo-inverse is zero: every input would score a perfect 0
            raise DegenerateFit("the features do not vary around their class means (one sample per class, or "
                             "identical features): Mahalanobis needs a covariance to measure distances with")
        self.means, self.precision, self.classes = means, torch.linalg.pinv(cov, hermitian=True), classes
        self.center = center
        return self

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.means is None or self.precision is None:
            raise RuntimeError("MahalanobisScorer.score called before fit")
        f = _float64(_check_features(features, dim=self.means.shape[1]))
        means, prec = self.means.to(f.device), self.precision.to(f.device)
        center = torch.zeros_like(f[0]) if self.center is None else self.center.to(f.device)
        mp = means @ prec  # (C, D)
        m_term = (mp * means).sum(dim=1)  # (C,)
        out = []
        for chunk in (f - center).split(self.chunk_size):
            fp = chunk @ prec
            d = (fp * chunk).sum(dim=1, keepdim=True) - 2 * chunk @ mp.T + m_term  # (n, C)
            out.append(-d.amin(dim=1))
        return torch.cat(out).to(torch.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.means is None:
            raise RuntimeError("MahalanobisScorer is not fitted")
        return {"means": self.means, "precision": self.precision, "classes": self.classes, "center": self.center}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> MahalanobisScorer:
        self.means, self.precision, self.classes = state["means"], state["precision"], state["classes"]
        self.center = state.get("center")  # (a state saved before centring: means of uncentred features)
        return self


class KNNScorer:
    """Deep nearest neighbours: score = ``-||z - z_(k)||`` for L2-normalised features ``z``.

    ``fit(features (N, D))`` stores the normalised training bank; ``score(features) -> (M,)`` returns minus
    the Euclidean distance to the ``k``-th nearest bank entry (chunked matrix products). Do not score the
    bank itself: each point would find itself at distance 0.
    """

    def __init__(self, k: int = 50, chunk_size: int = 1024):
        self.k, self.chunk_size = check_positive_int(k, "k"), check_positive_int(chunk_size, "chunk_size")
        self.bank: torch.Tensor | None = None

    def fit(self, features: torch.Tensor) -> KNNScorer:
        f = _check_features(features).float()
        if f.shape[0] < self.k:
            raise ValueError(f"KNNScorer needs at least k = {self.k} training features, got {f.shape[0]}")
        self.bank = F.normalize(f, dim=1)
        return self

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("KNNScorer.score called before fit")
        f = F.normalize(_check_features(features, dim=self.bank.shape[1]).float(), dim=1)
        bank = self.bank.to(f.device)
        out = []
        for chunk in f.split(self.chunk_size):
            sim = chunk @ bank.T
            kth = sim.topk(self.k, dim=1).values[:, -1]  # k-th largest cosine similarity
            # |q - b|^2 = |q|^2 + 1 - 2 q.b: |q| is 1, or 0 for an all-zero feature (normalize leaves it at zero,
            # 1 from every unit-norm bank entry; 2 - 2 q.b said sqrt(2))
            norm2 = chunk.ne(0).any(dim=1).to(kth.dtype)  # exactly 1 or 0: other features' scores as before
            out.append(-(norm2 + 1 - 2 * kth).clamp_min(0).sqrt())
        return torch.cat(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.bank is None:
            raise RuntimeError("KNNScorer is not fitted")
        return {"bank": self.bank, "k": torch.tensor(self.k)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> KNNScorer:
        self.bank, self.k = state["bank"], int(state["k"])
        return self


#: scores computed from logits alone: name -> function(logits) -> (N,)
LOGIT_SCORES = {"msp": msp, "max_logit": max_logit, "energy": energy}
#: scores of a model's features, fitted on training images first: name -> scorer class (``fit`` then ``score``)
FEATURE_SCORERS = {"mahalanobis": MahalanobisScorer, "knn": KNNScorer}
