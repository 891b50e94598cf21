"""Synthetic OOD sets generated on the fly (no files): Gaussian, uniform, Rademacher noise and blobs.

The synthetic outliers of Hendrycks et al. (Outlier Exposure, 2019, ``CIFAR/test.py``) as the networks there saw
them. That script draws values ``v`` in [-1, 1] and feeds them to a network whose input is normalised with the
CIFAR mean and std (:data:`OE_MEAN`, :data:`OE_STD`, per channel), so in pixels its images are
``OE_MEAN + OE_STD * v``: low-contrast noise around mid-grey, about [0.19, 0.74], not [0, 1]. aprkit generates
those pixels (models normalise inside), with ``v``:

- ``gaussian``: i.i.d. ``N(0, sigma^2)``, ``sigma=0.5`` by default, clipped to [-1, 1];
- ``uniform``: i.i.d. ``U(-1, 1)`` (the script's validation set);
- ``rademacher``: i.i.d. -1 or 1 with probability 1/2;
- ``blobs``: Bernoulli(0.7) values of an ``(H, W, C)`` image, blurred by a Gaussian of sigma 1.5 along all three
  axes (their scikit-image ``gaussian(..., multichannel=False)``: the channel axis too, edge values repeated),
  values below 0.75 set to 0, then ``2 b - 1``.

One-channel sets use the channels' mean of ``OE_MEAN`` and ``OE_STD``. Images are quantised to uint8. Generation is
blockwise (``BLOCK`` images per seeded block), so image ``i`` is the same whatever batch it is requested in, and the
same ``seed`` always gives the same set. ``NOISE_VERSION`` names the definitions in result-cache keys and in the
``ood`` suite's version.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from .._checks import check_positive_int
from .arrays import NO_LABEL, _as_index_array

__all__ = ["NOISE_KINDS", "NOISE_VERSION", "OE_MEAN", "OE_STD", "NoiseDataset", "noise_images"]

NOISE_KINDS = ("gaussian", "uniform", "rademacher", "blobs")
BLOCK = 256


#: 2: Outlier Exposure's definitions: gaussian std 0.25 (was 1, mostly clipped to 0 or 1), blobs blurred across
#: channels too with edge values repeated (were blurred per channel with reflected borders); 3: the pixels OE's
#: networks saw, ``OE_MEAN + OE_STD * v`` (were ``(v + 1) / 2``: twice the contrast, blobs on black)
NOISE_VERSION = 3

#: the per-channel mean and std of Outlier Exposure's input normalisation (CIFAR-10 statistics, ``CIFAR/test.py``)
OE_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
OE_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def _blob_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(N, C, H, W)`` along H, W and C (scipy ``mode="nearest"``, ``truncate=4``), per image."""
    from scipy.ndimage import gaussian_filter

    hwc = x.permute(0, 2, 3, 1).double().numpy()
    out = gaussian_filter(hwc, sigma=(0.0, sigma, sigma, sigma), mode="nearest", truncate=4.0)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float()


def noise_images(kind: str, n: int, size: tuple[int, int] = (32, 32), channels: int = 3, *,
                 generator: torch.Generator | None = None, sigma: float = 0.5) -> torch.Tensor:
    """``n`` noise images of ``kind`` as uint8 ``(n, channels, H, W)`` (see the module docstring; ``sigma`` is the
    Gaussian set's standard deviation in OE's normalised units)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
    shape = (n, channels, *size)
    if kind == "gaussian":
        v = (torch.randn(shape, generator=generator) * sigma).clamp_(-1, 1)
    elif kind == "uniform":
        v = torch.rand(shape, generator=generator) * 2 - 1
    elif kind == "rademacher":
        v = torch.bernoulli(torch.full(shape, 0.5), generator=generator) * 2 - 1
    else:
        b = _blob_blur(torch.bernoulli(torch.full(shape, 0.7), generator=generator), 1.5)
        b[b < 0.75] = 0.0
        v = b * 2 - 1
    mean, std = (torch.tensor(t).view(3, 1, 1) for t in (OE_MEAN, OE_STD))
    if channels == 1:
        mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
    return (v.double() * std + mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


class NoiseDataset(Dataset):
    """``n`` synthetic OOD images of ``kind``; yields ``(uint8 (C, H, W), NO_LABEL)``.

    ``size`` is an int or ``(H, W)``; ``seed`` fixes the set; ``sigma``: the Gaussian set's standard deviation in
    OE's normalised units. Supports ``get_batch`` (fast batch path).
    """

    def __init__(self, kind: str = "gaussian", n: int = 10000, *, size: int | tuple[int, int] = 32, channels: int = 3,
                 seed: int = 0, sigma: float = 0.5):
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
        n = check_positive_int(n, "n")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or min(hw) < 2:
            raise ValueError(f"size must be an int or (H, W) with H, W >= 2, got {size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.kind, self.n, self.size, self.channels, self.seed = kind, n, hw, channels, int(seed)
        self.sigma = float(sigma)
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
        return noise_images(self.kind, count, self.size, self.channels, generator=g, sigma=self.sigma)

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
