"""APR-S as a ``torchvision.transforms.v2`` transform (works inside ``v2.Compose``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2._utils import check_type, is_pure_tensor

from ..._checks import check_chw_layout, check_image_tensor
from ..._tv import draw_groups, like_input
from ...fourier import Dims
from ..ops import GEOMETRIC_OPS
from ..single import Cast
from ..single_image import APRSingle

__all__ = ["APRSingleV2", "ANNOTATION_TYPES", "IMAGE_TYPES", "reject_annotations", "require_image"]

#: the tv_tensors whose geometry APR-S's rotate / shear / translate ops would silently desynchronise
#: (the same set ``v2.AugMix`` rejects)
ANNOTATION_TYPES: tuple[type, ...] = (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.KeyPoints)


def reject_annotations(flat_inputs: Sequence[Any], who: str, why: str) -> None:
    """Refuse a sample holding boxes, masks or keypoints (:data:`ANNOTATION_TYPES`): ``why`` the transform ``who``
    would leave them behind the image."""
    for inpt in flat_inputs:
        if isinstance(inpt, ANNOTATION_TYPES):
            raise TypeError(
                f"{who} got {type(inpt).__name__}: {why} but not the annotations; like v2.AugMix it rejects "
                f"{', '.join(t.__name__ for t in ANNOTATION_TYPES)} then. Drop those from its ops/names (colour and "
                "noise ones leave annotations in place, which then pass through), or use it for image "
                "classification samples only")


#: what the transforms here change in a sample: images, videos, plain tensors (torchvision's rule: the first one when
#: the sample holds no image) and PIL images; annotations and everything else pass through
IMAGE_TYPES = (tv_tensors.Image, tv_tensors.Video, is_pure_tensor, PIL.Image.Image)


def require_image(flat_inputs: Sequence[Any], who: str, hint: str) -> None:
    """Refuse a sample holding no image (:data:`IMAGE_TYPES`), e.g. a NumPy array or a path, which would pass
    through unchanged: no augmentation and no error, as ``v2.AugMix`` refuses it. A plain tensor of fewer than 2
    dimensions is a label, not an image (torchvision's rule took ``tensor(3)`` for the image of ``(array, tensor(3))``,
    and the error spoke of the label's dtype)."""
    if not any(check_type(i, IMAGE_TYPES) and not (is_pure_tensor(i) and i.ndim < 2) for i in flat_inputs):
        got = ", ".join(dict.fromkeys(type(i).__name__ for i in flat_inputs)) or "nothing"
        raise TypeError(f"{who} found no image in the sample (got {got}); expected a PIL image, a tv_tensors.Image / "
                        f"Video or a tensor (..., C, H, W), as v2.AugMix does. {hint}")


class APRSingleV2(v2.Transform):
    """APR-S for classification pipelines: ``v2.Compose([APRSingleV2(), v2.RandomCrop(32, 4, fill=128), ...])``.

    Transforms PIL images, ``tv_tensors.Image``, plain tensors ``(..., C, H, W)`` (leading dims are
    independent images) and ``tv_tensors.Video`` ``(..., T, C, H, W)`` (the frames of one video share
    their draws, as ``v2.AugMix`` shares its ops and weights across frames); uint8 or float in [0, 1] (a
    channels-last tensor raises ``ValueError``). One uint8 image (PIL, or a CPU tensor ``(C, H, W)`` of 1 or 3
    channels) takes :class:`~aprkit.augment.APRSingle`'s PIL path, a batch the torch path: with the same draws the
    two agree to about half a grey level per image on average (float images: exactly).
    Samples holding boxes, masks or keypoints (:data:`ANNOTATION_TYPES`) are rejected with a
    ``TypeError`` when ``ops`` holds a geometric op (rotate, shear, translate), as ``v2.AugMix`` rejects them: those
    ops would move the image but not them; with colour ops only they pass through, as through ``v2.ColorJitter``.
    Other inputs (labels, strings, ...) pass through untouched; a sample without an image (e.g. a NumPy array: convert
    it with ``v2.ToImage()``) raises ``TypeError``, as ``v2.AugMix`` does. ``seed=``: see
    :func:`aprkit._generators.worker_generator` (per-worker streams in a ``DataLoader``).

    ``p`` is APR-S's recombination probability (as in :class:`~aprkit.augment.APRSingle` and the reference), not
    an apply probability like ``v2.RandomErasing``'s: with ``p=0`` the augmentation ops still run. To apply the whole
    transform with probability ``q``, wrap it: ``v2.RandomApply([APRSingleV2()], p=q)``.
    """

    _transformed_types = IMAGE_TYPES

    def __init__(self, p: float = 0.5, severity: float = 3, ops: Sequence[str] | None = None, dims: Dims = "chw",
                 generator: torch.Generator | None = None, seed: int | None = None, cast: Cast = "round") -> None:
        super().__init__()
        self.aprs = APRSingle(p, severity, ops, dims, generator=generator, seed=seed, cast=cast)

    @property
    def p(self) -> float:
        """The recombination probability (settable, checked), as ``APRSingle.p``."""
        return self.aprs.p

    @p.setter
    def p(self, value: float) -> None:
        self.aprs.p = value

    @property
    def severity(self) -> float:
        return self.aprs.batch.severity

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.aprs.batch.ops)

    @property
    def dims(self) -> Dims:
        return self.aprs.batch.dims

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        moving = [op for op in self.ops if op in GEOMETRIC_OPS]
        if moving:
            reject_annotations(flat_inputs, "APRSingleV2", f"its {'/'.join(moving)} ops would move the image")
        require_image(flat_inputs, "APRSingleV2", "Convert a NumPy (H, W, C) array with v2.ToImage() first, or use "
                      "aprkit.augment.APRSingle, which takes it")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        n = 1
        for inpt in flat_inputs:
            if isinstance(inpt, torch.Tensor) and self._needs(inpt):
                n = max(n, draw_groups(inpt)[0])
        return {"apr": self.aprs.batch.generate_parameters((n,))}

    @staticmethod
    def _needs(inpt: Any) -> bool:
        return isinstance(inpt, (tv_tensors.Image, tv_tensors.Video)) or is_pure_tensor(inpt)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        p = params["apr"]
        if not isinstance(inpt, torch.Tensor):
            return self.aprs.apply(inpt, {k: v[:1] for k, v in p.items()})
        plain = inpt.as_subclass(torch.Tensor)
        if plain.ndim < 3:
            check_image_tensor(plain, "image", min_ndim=3, check_finite=False)  # names (C, H, W): raises
        if plain.ndim >= 4 and plain.shape[0] == 0 and plain.shape[-2] >= 2 and plain.shape[-1] >= 2:
            return inpt  # an empty batch comes back as it is, as from torchvision's own transforms
        if plain.ndim == 3:
            out = self.aprs.apply(plain, {k: v[:1] for k, v in p.items()})
        else:  # the layout check of APRSingle.apply, which the batched path does not pass through
            check_chw_layout(check_image_tensor(plain, "image", min_ndim=4, check_finite=False))
            flat = plain.reshape(-1, *plain.shape[-3:])
            n, per = draw_groups(inpt)  # per: frames per video (1 for images)
            draws = {k: v[:n].repeat_interleave(per) for k, v in p.items()}
            out = self.aprs.batch.apply(flat, draws).reshape(plain.shape)
        return like_input(out, inpt)

    def extra_repr(self) -> str:
        return self.aprs.batch.extra_repr()
