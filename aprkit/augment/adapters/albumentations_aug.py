"""APR-S and APR-P as albumentations transforms (optional extra: ``pip install aprkit[albumentations]``).

Importing this module sets ``NO_ALBUMENTATIONS_UPDATE=1`` unless already set (no update check over
the network). Randomness comes from albumentations' own per-transform generator, so ``A.Compose(..., seed=s)``
reproduces the output. Images are numpy ``(H, W, C)`` uint8 or float32 in [0, 1].
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import torch

# albumentations 2.x contacts the network at import to check for updates unless told not to
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from albumentations.core.transforms_interface import ImageOnlyTransform  # noqa: E402

from ...fourier import Dims, swap_amplitude
from ..single import APRSingle

__all__ = ["AlbuAPRSingle", "AlbuAPRPair"]


def _to_chw(img: np.ndarray, name: str) -> torch.Tensor:
    if img.ndim not in (2, 3) or img.dtype not in (np.uint8, np.float32, np.float64):
        raise TypeError(f"{name} must be a numpy array (H, W[, C]) of uint8 or float32, got {img.dtype} {img.shape}")
    t = torch.from_numpy(np.array(img, copy=True))  # inputs may be read-only views (e.g. of PIL images)
    return t.unsqueeze(0) if img.ndim == 2 else t.permute(2, 0, 1)


class AlbuAPRSingle(ImageOnlyTransform):
    """APR-S per image: ``A.Compose([A.HorizontalFlip(), AlbuAPRSingle(), A.ToTensorV2()])``.

    ``p`` is albumentations' probability of applying the transform at all; ``recombine_p`` is the
    APR-S recombination probability (``APRSingle(p=...)``).
    """

    def __init__(self, recombine_p: float = 0.5, severity: float = 3, ops: Optional[Sequence[str]] = None,
                 dims: Dims = "chw", p: float = 1.0) -> None:
        super().__init__(p=p)
        self.recombine_p = recombine_p
        self.severity = severity
        self.ops = ops
        self.dims = dims
        self._aprs = APRSingle(recombine_p, severity, ops, dims, seed=0)

    def get_params(self) -> dict[str, Any]:
        seed = int(self.random_generator.integers(0, 2**62))
        self._aprs.batch.generator.manual_seed(seed)
        return {"apr_params": self._aprs.generate_parameters()}

    def apply(self, img: np.ndarray, apr_params: dict[str, torch.Tensor], **params: Any) -> np.ndarray:
        return self._aprs.apply(img, apr_params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("recombine_p", "severity", "ops", "dims")


class AlbuAPRPair(ImageOnlyTransform):
    """APR-P per image with partners passed per call, like albumentations' ``FDA``.

    ``out = t(image=img, apr_metadata=[partner, ...])["image"]``: the image keeps its phase and
    takes the amplitude of one partner drawn at random (resized to the image size if needed).
    """

    def __init__(self, metadata_key: str = "apr_metadata", dims: Dims = "chw", p: float = 0.5) -> None:
        super().__init__(p=p)
        self.metadata_key = metadata_key
        self.dims = dims

    @property
    def targets_as_params(self) -> list[str]:
        return [self.metadata_key]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        refs = data.get(self.metadata_key)
        if refs is None:
            raise ValueError(f"AlbuAPRPair needs partner images: call the pipeline with {self.metadata_key}=[image, ...]")
        if isinstance(refs, np.ndarray):
            refs = [refs]
        if len(refs) == 0:
            raise ValueError(f"{self.metadata_key} must hold at least one partner image")
        partner = refs[self.py_random.randrange(len(refs))]
        h, w = params["shape"][:2]
        if partner.shape[:2] != (h, w):
            import cv2

            partner = cv2.resize(partner, dsize=(w, h), interpolation=cv2.INTER_LINEAR)
        return {"partner": partner}

    def apply(self, img: np.ndarray, partner: np.ndarray, **params: Any) -> np.ndarray:
        x, y = _to_chw(img, "image"), _to_chw(partner, self.metadata_key)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"partner image has {y.shape[0]} channels, image has {x.shape[0]}")
        if x.dtype == torch.uint8 and y.dtype != torch.uint8:
            y = (y.float() * 255).round().clamp(0, 255).to(torch.uint8)
        elif x.dtype != torch.uint8:
            y = y.to(x.dtype) / 255 if y.dtype == torch.uint8 else y.to(x.dtype)
        out = swap_amplitude(x, y, self.dims)
        if out.dtype != torch.uint8:
            out = out.clamp(0, 1)
        return (out[0] if img.ndim == 2 else out.permute(1, 2, 0)).contiguous().numpy()

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("metadata_key", "dims")
