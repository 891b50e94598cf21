"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise.

Each function takes a float batch ``(B, C, H, W)`` in [0, 1], the published parameter of one
severity (see ``severity.PARAMS``) and a generator, and returns an unclipped float batch of the same
shape (the dispatcher clamps to [0, 1]). Noise is drawn independently per pixel and channel, as in
the creation scripts.
"""

from __future__ import annotations

import torch

from ._common import level_images, mask
from ._itemkeys import ItemKeys
from ._random import RandomSource, normal, poisson, poisson_levels, uniform

__all__ = ["gaussian_noise", "shot_noise", "impulse_noise", "impulse_bytes", "speckle_noise"]


def gaussian_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """``x + N(0, c^2)`` per pixel and channel."""
    return normal(x.shape, 0.0, c, generator, x.device, x.dtype).add_(x)  # the noise buffer takes the sum


def shot_noise(x: torch.Tensor, c: float, generator: RandomSource = None, *,
               levels: bool = False, source_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``Poisson(c * x) / c``: photon noise with ``c`` photons per unit intensity.

    ``levels=True`` (8-bit input, ``x`` float ``k / 255`` or the uint8 levels ``k`` themselves): the 256 possible
    rates get exact inverse-CDF tables, and a table lookup per value draws its count (much faster than a general
    Poisson sampler). Float32/float64 images whose values are all ``k / 255`` (``ToTensor`` of 8-bit images) take
    the same path, image by image, so they get the noise of their uint8 originals (``source_dtype``: the dtype the
    images had before the float32 conversion; float16/bfloat16 ones are read to their precision)."""
    if not levels and x.dtype in (torch.float32, torch.float64):  # float images of 8-bit levels (ToTensor's k / 255)
        # draw as their uint8 originals do: the same image, the same noise (CUDA's k / 255 differs from the CPU's in
        # some pixels, hence the slack; float16/bfloat16 images, ``source_dtype``, are computed here in float32)
        k255, per_image = level_images(x, source_dtype)
        if bool(per_image.all()):
            return poisson_levels(k255.to(torch.int32), float(c), generator).to(x.dtype).div_(c)
        if bool(per_image.any()):  # a mixed batch: each part as a batch of its own (per-image keys: the same draws)
            out = torch.empty_like(x)
            for part in (per_image, ~per_image):
                rows = part.nonzero().flatten()
                source = generator[part] if isinstance(generator, ItemKeys) else generator
                out[rows] = shot_noise(x[rows], c, source, source_dtype=source_dtype)
            return out
    if levels:
        k = x.to(torch.int32) if x.dtype == torch.uint8 else torch.mul(x, 255).round_().to(torch.int32)
        return poisson_levels(k, float(c), generator).div_(c)
    # rates in [0, c]: float input may exceed [0, 1] by the range check's slack (the output is clamped to [0, 1]
    # anyway), and every random source then draws from the same rates (per-image keys take rates up to c only)
    return poisson((x * c).clamp_(0.0, c), generator, max_rate=c) / c


def impulse_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Salt and pepper (scikit-image ``random_noise(mode="s&p", amount=c)``): a fraction ``c`` of the
    values (per channel) is replaced, half by 0 and half by 1."""
    u = uniform(x.shape, 0.0, 1.0, generator, x.device, x.dtype)  # one draw: u < c flips, u < c/2 salts
    return torch.mul(x, mask(u, ">=", c)).add_(mask(u, "<", 0.5 * c))  # 0/1 factors: cheaper than masked_fill


def impulse_bytes(u8: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """``impulse_noise`` of uint8 images -> uint8 (the same draws; pepper 0, salt 255, the rest unchanged)."""
    u = uniform(u8.shape, 0.0, 1.0, generator, u8.device, torch.float32)
    return torch.mul(u8, mask(u, ">=", c)).add_(mask(u, "<", 0.5 * c).mul_(255))


def speckle_noise(x: torch.Tensor, c: float, generator: RandomSource = None) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c^2)``."""
    return normal(x.shape, 0.0, c, generator, x.device, x.dtype).mul_(x).add_(x)  # x * z + x == x + x * z
