"""AugMix (Hendrycks et al., ICLR 2020) as its reference code mixes a view (google-research/augmix ``cifar.py``,
``aug``).

``width`` chains of ``depth`` ops each (``depth <= 0``: 1 to 3 per chain, drawn), every op drawn uniformly from
``ops`` (default: the 9 ops of AugMix's ``augmentations`` list, which APR-S uses too, so no op overlaps the
corruptions) at a level drawn uniformly from [0.1, ``severity``] with a random sign; the chains are mixed with
Dirichlet(``alpha``) weights and the mixture with the image by a Beta(``alpha``, ``alpha``) factor, in float. The ops
are :func:`~aprkit.augment.ops_pil.apply_pil_op` (the reference's PIL ops), so the view is the reference's up to its
random stream. torchvision's ``v2.AugMix`` differs: its levels are one of three steps of a 10-step grid (at most 2/9
of an op's range at severity 3, where AugMix's code reaches 3/10), and it truncates each mixed view to uint8.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._checks import check_pil_mode, check_positive_int
from .ops import resolve_ops
from .ops_pil import apply_pil_op

__all__ = ["augmix", "check_augmix_settings"]


def check_augmix_settings(severity: float, width: int, depth: int, alpha: float) -> tuple[float, int, int, float]:
    """The settings of :func:`augmix`, checked (``ValueError`` naming the one that is out of range)."""
    if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not 0.1 <= float(severity) <= 10:
        raise ValueError(f"severity must be a number in [0.1, 10] (AugMix's levels are drawn from [0.1, severity]), "
                         f"got {severity!r}")
    width = check_positive_int(width, "width")
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise ValueError(f"depth must be an int (<= 0: 1 to 3 ops per chain, drawn), got {depth!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not float(alpha) > 0 or alpha == float("inf"):
        raise ValueError(f"alpha must be a finite number > 0 (the Dirichlet and Beta parameter), got {alpha!r}")
    return float(severity), width, int(depth), float(alpha)


def augmix(image: Any, severity: float = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
           ops: Sequence[str] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One AugMix view of ``image`` (a uint8 tensor ``(C, H, W)`` with 1 or 3 channels, or a PIL image of mode RGB or
    L) as a float32 tensor ``(C, H, W)`` in [0, 1] (a convex mixture of uint8 images, kept in float as the reference
    keeps it). ``generator`` (default: torch's global RNG) seeds the view's draws: one 63-bit draw per call."""
    from PIL import Image

    severity, width, depth, alpha = check_augmix_settings(severity, width, depth, alpha)
    names = resolve_ops(ops)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image must be a uint8 tensor (C, H, W) with 1 or 3 channels, got {image.dtype} "
                             f"{tuple(image.shape)}")
        arr = image.permute(1, 2, 0).cpu().numpy()
        pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    elif isinstance(image, Image.Image):
        check_pil_mode(image, "augmix")
        pil = image
    else:
        raise TypeError(f"image must be a uint8 tensor (C, H, W) or a PIL image, got {type(image).__name__}")
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    rng = np.random.default_rng(seed)
    ws = rng.dirichlet([alpha] * width)
    m = rng.beta(alpha, alpha)
    base = np.asarray(pil, np.float64)
    mix = np.zeros_like(base)
    for w in ws:
        view = pil
        for _ in range(depth if depth > 0 else int(rng.integers(1, 4))):
            name = names[int(rng.integers(len(names)))]
            level = rng.uniform(0.1, severity)  # the level, then its sign, as the reference's ops draw them
            view = apply_pil_op(view, name, level, bool(rng.uniform() > 0.5))
        mix += w * np.asarray(view, np.float64)
    out = ((1 - m) * base + m * mix) / 255.0
    t = torch.from_numpy(out.astype(np.float32))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
