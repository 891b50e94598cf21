"""The common corruptions as a kornia augmentation: :class:`KorniaRandomCorruption`.

:class:`aprkit.corruptions.RandomCorruption` corrupts batches itself, but inside kornia's containers
(``AugmentationSequential``, ``ImageSequential``) a plain module sees the images only: masks stay behind and the
container's ``params=`` replay does not reach it. This adapter is a kornia intensity augmentation with kornia's
conventions: ``p`` (per image), ``p_batch``, ``same_on_batch``, ``keepdim``, ``module(x, params=module._params)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from kornia.augmentation import IntensityAugmentationBase2D

from ..._checks import check_probability, check_value_range
from ...corruptions.names import moves_pixels
from ...corruptions.transforms import RandomCorruption
from .kornia_aug import _Gate, _ours, _same_on_batch

__all__ = ["KorniaRandomCorruption"]

_KEYS = ("apply", "name_index", "severity", "seed")


class KorniaRandomCorruption(_Gate, IntensityAugmentationBase2D):
    """Kornia augmentation applying a corruption drawn uniformly from ``names`` at a severity drawn uniformly from
    ``severities`` to each image of a float ``(B, C, H, W)`` batch in [0, 1] (see
    :class:`aprkit.corruptions.RandomCorruption`, whose draws it makes: with ``p = p_batch = 1`` the same
    ``generator``/``seed`` gives the same images as ``RandomCorruption``).

    ``p`` is kornia's probability of corrupting an image (default 1), ``p_batch`` gates the batch and
    ``same_on_batch=True`` gives every image the same corruption, severity and noise. The other arguments are
    ``RandomCorruption``'s, in its order (without its ``p``: kornia's ``p`` decides per image). Each image's own draws
    key its corruption, so a replay (``module(x, params=module._params)``, or a container's) repeats it in any batch.

    Float images a little outside [0, 1] (an earlier step's overshoot in the same container: kornia's
    ``RandomGaussianNoise``, an unclamped ``RandomAPRPair``) are clamped to [0, 1] first, as the other aprkit kornia
    augmentations take them; 0..255 floats and normalised batches are refused.

    Masks, boxes and keypoints pass through (``data_keys`` of ``AugmentationSequential``) when no corruption of
    ``names`` moves pixels; with glass, motion or zoom blur or elastic among them (``MOVES_PIXELS``) they are refused,
    as they would no longer line up with the image.

    Unlike kornia's own augmentations it is not differentiable: corrupted images carry no gradient back to the input
    (the corruptions run as the published code's, with its 8-bit steps); images that ``p`` leaves alone pass theirs.
    An empty batch comes back as it is.
    """

    def __init__(self, names: Sequence[str] | str | None = None, severities: Sequence[int] | int = (1, 2, 3, 4, 5),
                 preset: str | None = None, generator: torch.Generator | None = None,
                 frost_dir: str | os.PathLike | None = None, seed: int | None = None, *, p: float = 1.0,
                 p_batch: float = 1.0, same_on_batch: bool = False, keepdim: bool = False) -> None:
        super().__init__(p=check_probability(p, "p"), p_batch=check_probability(p_batch, "p_batch"),
                         same_on_batch=same_on_batch, keepdim=keepdim)
        self.core = RandomCorruption(names, severities, p=1.0, preset=preset, generator=generator,
                                     frost_dir=frost_dir, seed=seed)
        self.moving = moves_pixels(self.core.names)  # the refusal of annotations, or None

    def __repr__(self) -> str:
        name, _, rest = super().__repr__().partition("(")
        ours = f"names={list(self.core.names)}, severities={list(self.core.severities)}, preset={self.core.preset!r}"
        return f"{name}({ours}, {rest}"

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        if not self.same_on_batch:
            return self.core.generate_parameters(batch_shape)
        return _same_on_batch(self.core.generate_parameters((1, *batch_shape[1:])), int(batch_shape[0]))

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        ours = _ours(params, _KEYS)
        gate = params.get("batch_prob")
        if gate is not None and (self.p < 1 or self.p_batch < 1):  # images kornia discards are not corrupted
            ours["apply"] = ours["apply"] & (torch.atleast_1d(gate).cpu() > 0.5)
        if input.is_floating_point() and input.numel():  # an earlier step's overshoot: clamped (compiled too, the
            # check eager only; an empty batch has no extremes)
            if torch.compiler.is_compiling():
                input = input.clamp(0, 1)
            else:  # (no copy of a batch already in [0, 1])
                lo, hi = (float(v) for v in torch.aminmax(input.detach()))
                if lo < 0 or hi > 1:
                    check_value_range(input, lo, hi, "images", "KorniaRandomCorruption clamps them to [0, 1]")
                    input = input.clamp(0, 1)
        return self.core.apply(input, ours)

    def _refuse(self, what: str) -> None:
        if self.moving:
            raise TypeError(f"KorniaRandomCorruption got {what}, but {self.moving} and would leave them behind; drop "
                            "those corruptions from names= for samples with annotations")

    def transform_masks(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._refuse("masks")
        return super().transform_masks(input, *args, **kwargs)

    def transform_boxes(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        self._refuse("boxes")
        return super().transform_boxes(input, *args, **kwargs)

    def transform_keypoints(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        self._refuse("keypoints")
        return super().transform_keypoints(input, *args, **kwargs)
