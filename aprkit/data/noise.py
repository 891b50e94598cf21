"""Synthetic OOD sets generated on the fly (no files): Gaussian, uniform, Rademacher noise and blobs.

The synthetic outliers of Hendrycks et al. (Outlier Exposure, 2019, ``CIFAR/test.py``), which draw them in the
network's [-1, 1] input range, mapped to [0, 1] pixels by ``(v + 1) / 2``:
- ``gaussian``: i.i.d. ``N(0.5, std^2)`` per pixel and channel, ``std=0.25`` by default (their ``N(0, 0.5^2)``),
  clipped to [0, 1];
- ``uniform``: i.i.d. ``U(0, 1)``;
- ``rademacher``: i.i.d. values 0 or 1 with probability 1/2;
- ``blobs``: Bernoulli(0.7) values of an ``(H, W, C)`` image, blurred by a Gaussian of sigma 1.5 along all three
  axes (their scikit-image ``gaussian(..., multichannel=False)``: the channel axis too, edge values repeated),
  values below 0.75 set to 0.

Images are quantised to uint8. Generation is blockwise (``BLOCK`` images per seeded block), so image ``i``
is the same whatever batch it is requested in, and the same ``seed`` always gives the same set. ``NOISE_VERSION``
names the definitions in result-cache keys.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from .._checks import check_positive_int
from .arrays import NO_LABEL, _as_index_array

__all__ = ["NOISE_KINDS", "NOISE_VERSION", "NoiseDataset", "noise_images"]

NOISE_KINDS = ("gaussian", "uniform", "rademacher", "blobs")
BLOCK = 256


#: 2: Outlier Exposure's definitions: gaussian std 0.25 (was 1, mostly clipped to 0 or 1), blobs blurred across
#: channels too with edge values repeated (were blurred per channel with reflected borders)
NOISE_VERSION = 2


def _blob_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(N, C, H, W)`` along H, W and C (scipy ``mode="nearest"``, ``truncate=4``), per image."""
    from scipy.ndimage import gaussian_filter

    hwc = x.permute(0, 2, 3, 1).double().numpy()
    out = gaussian_filter(hwc, sigma=(0.0, sigma, sigma, sigma), mode="nearest", truncate=4.0)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float()


def noise_images(kind: str, n: int, size: tuple[int, int] = (32, 32), channels: int = 3, *,
                 generator: torch.Generator | None = None, std: float = 0.25) -> torch.Tensor:
    """``n`` noise images of ``kind`` as uint8 ``(n, channels, H, W)`` (see the module docstring)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
    shape = (n, channels, *size)
    if kind == "gaussian":
        x = (torch.randn(shape, generator=generator) * std + 0.5).clamp_(0, 1)
    elif kind == "uniform":
        x = torch.rand(shape, generator=generator)
    elif kind == "rademacher":
        x = torch.bernoulli(torch.full(shape, 0.5), generator=generator)
    else:
        x = torch.bernoulli(torch.full(shape, 0.7), generator=generator)
        x = _blob_blur(x, 1.5)
        x[x < 0.75] = 0.0
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


class NoiseDataset(Dataset):
    """``n`` synthetic OOD images of ``kind``; yields ``(uint8 (C, H, W), NO_LABEL)``.

    ``size`` is an int or ``(H, W)``; ``seed`` fixes the set. Supports ``get_batch`` (fast batch path).
    """

    def __init__(self, kind: str = "gaussian", n: int = 10000, *, size: int | tuple[int, int] = 32, channels: int = 3,
                 seed: int = 0, std: float = 0.25):
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
        n = check_positive_int(n, "n")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or min(hw) < 2:
            raise ValueError(f"size must be an int or (H, W) with H, W >= 2, got {size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.kind, self.n, self.size, self.channels, self.seed, self.std = kind, n, hw, channels, int(seed), float(std)
        self.image_shape = (channels, *hw)
        self.classes = None

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> torch.Tensor:
        cache = self.__dict__.setdefault("_cache", {})
        if b not in cache:
            if len(cache) >= 2:  # consecutive batches share a block: keep the last two
                cache.pop(next(iter(cache)))
            cache[b] = self._generate(b)
        return cache[b]

    def _generate(self, b: int) -> torch.Tensor:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + b * 7919 + NOISE_KINDS.index(self.kind)) % (1 << 64))
        count = min(BLOCK, self.n - b * BLOCK)
        return noise_images(self.kind, count, self.size, self.channels, generator=g, std=self.std)

    def get_batch(self, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``uint8 (B, C, H, W)`` and labels (all ``NO_LABEL``) for ``indices``."""
        idx = _as_index_array(indices, self.n)
        idx_t = torch.arange(idx.start, idx.stop, idx.step or 1) if isinstance(idx, slice) else torch.as_tensor(idx)
        out = torch.empty((idx_t.numel(), *self.image_shape), dtype=torch.uint8)
        for b in torch.unique(idx_t // BLOCK).tolist():
            sel = (idx_t // BLOCK) == b
            out[sel] = self._block(b)[idx_t[sel] - b * BLOCK]
        return out, torch.full((idx_t.numel(),), NO_LABEL, dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        x, _ = self.get_batch([index % self.n])
        return x[0], NO_LABEL

    def __repr__(self) -> str:
        return f"NoiseDataset({self.kind!r}, n={self.n}, size={self.size}, seed={self.seed})"
