"""APR-S and APR-P as albumentations transforms (optional extra: ``pip install aprkit[albumentations]``).

Importing this module sets ``NO_ALBUMENTATIONS_UPDATE=1`` unless already set (no update check over
the network). Randomness comes from albumentations' own per-transform generator, so ``A.Compose(..., seed=s)``
reproduces the output. Images are numpy ``(H, W, C)`` uint8 or float32 in [0, 1]; uint8 takes the
reference's PIL path and float32 the torch path, which agree within a measured bound (see :class:`AlbuAPRSingle`).
Both declare an ``InitSchema`` as albumentations' own transforms do: their arguments are validated the same way, an
argument they do not take (e.g. the removed ``always_apply``) is ignored with albumentations' warning, or raises
with ``strict=True``.

:class:`AlbuAPRSingle` is a dual transform: APR-S's geometric ops (rotate, shear, translate) move masks
(nearest), boxes and keypoints with the image, following the view whose phase the output keeps (see
:func:`aprkit.augment.single.single_transform_matrix`). Boxes follow albumentations' ``Affine``: the four
corners are mapped and the enclosing box is kept (a rotated box grows). A keypoint's angle turns with the image (a
ray drawn in it keeps pointing along the keypoint, as ``A.RandomRotate90`` turns angles); albumentations 2.0's
``Affine`` and ``Rotate`` turn angles the opposite way for the same matrix, so a pipeline mixing them with
``AlbuAPRSingle`` turns keypoint angles in opposite directions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

# albumentations 2.x contacts the network at import to check for updates unless told not to
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
try:
    from albumentations.core.transforms_interface import (  # noqa: E402
        BaseTransformInitSchema,
        DualTransform,
        ImageOnlyTransform,
    )
except ModuleNotFoundError as _err:  # the optional extra: say which (name= kept for aprkit._lazy's plugin loader)
    if (_err.name or "").split(".")[0] != "albumentations":
        raise
    raise ModuleNotFoundError("aprkit's albumentations adapters need the optional albumentations package: pip "
                              "install 'aprkit[albumentations]'", name="albumentations") from _err
from pydantic import Field  # noqa: E402

from ..._checks import check_hwc_layout, check_image_tensor, check_probability
from ...fourier import Dims, swap_amplitude
from ..single import Cast, single_transform_matrix
from ..single_image import APRSingle
from ..warp import warp_pixels

__all__ = ["AlbuAPRSingle", "AlbuAPRPair"]


def _to_chw(img: np.ndarray, name: str) -> torch.Tensor:
    if img.ndim not in (2, 3) or img.dtype not in (np.uint8, np.float32, np.float64):
        raise TypeError(f"{name} must be a numpy array (H, W[, C]) of uint8 or float32, got {img.dtype} {img.shape}")
    check_hwc_layout(img, name)
    t = torch.from_numpy(np.array(img, copy=True))  # inputs may be read-only views (e.g. of PIL images)
    return t.unsqueeze(0) if img.ndim == 2 else t.permute(2, 0, 1)


class AlbuAPRSingle(DualTransform):
    """APR-S per image: ``A.Compose([A.HorizontalFlip(), AlbuAPRSingle(), A.ToTensorV2()])``.

    ``p`` is albumentations' probability of applying the transform at all (default 1.0, unlike most albumentations
    transforms' 0.5: ``recombine_p`` already decides per image); ``recombine_p`` is the APR-S recombination
    probability (``APRSingle(p=...)``). Targets: image(s), mask(s) (nearest), bboxes
    and keypoints (x, y moved; the angle's direction mapped; the scale is kept).

    uint8 images take PIL's ops, float32 images the torch ops; with the same draws they agree to
    0.5 grey levels mean per image on average (a few images several levels: 7.2 at most on 400 CIFAR-10
    images); the rest comes from solarize / posterize thresholds, which a float image crosses at a
    slightly different place than PIL's truncated uint8 levels, and which the amplitude swap spreads
    over the whole image. ``cast`` as in :class:`~aprkit.augment.APRSingle`.

    The draws come from albumentations' generator, as its own transforms' do. albumentations 2.0 makes that generator
    when the pipeline is built, and each DataLoader worker gets a copy: with ``A.Compose(..., seed=s)`` or without,
    every worker, and every epoch, draws the same stream (the k-th item a worker loads gets the same augmentation in
    every worker and epoch; measured with albumentations 2.0.8, whose own transforms do the same). To give each worker
    and epoch its own draws, reproducible with the loader's ``generator``, re-seed the pipeline in a
    ``worker_init_fn``: ``torch.utils.data.get_worker_info().dataset.transform.set_random_seed(torch.initial_seed()
    % 2**32)`` (the attribute holding your ``A.Compose``), or draw per item, independent of workers and batch size:
    wrap the dataset in :class:`aprkit.data.SeededTransform`, which seeds the pipeline with each item's seed. aprkit's
    ``APRSingle(seed=...)`` re-seeds per worker by itself.

    Saved pipelines (``A.save`` / ``A.to_dict``) name it ``aprkit.augment.adapters.albumentations_aug.AlbuAPRSingle``;
    as for any custom transform, albumentations can load them only once that class is defined: ``from
    aprkit.augment.adapters import AlbuAPRSingle`` before ``A.load`` (``import aprkit`` alone defines it only on first
    use; ``A.load`` otherwise fails with ``KeyError`` naming the class).
    """

    class InitSchema(BaseTransformInitSchema):
        recombine_p: float = Field(ge=0, le=1)
        severity: Any  # APRSingle checks these
        ops: Any
        dims: Any
        cast: Any

    cast: Cast = "round"  # the default of instances pickled before cast existed

    def __init__(self, recombine_p: float = 0.5, severity: float = 3, ops: Sequence[str] | None = None,
                 dims: Dims = "chw", p: float = 1.0, cast: Cast = "round") -> None:
        super().__init__(p=p)
        self.recombine_p = recombine_p
        self.severity = severity
        self.ops = ops
        self.dims = dims
        self.cast = cast
        self._generator = torch.Generator().manual_seed(0)  # re-seeded from albumentations' generator per call
        self._built: tuple[Any, APRSingle] | None = None
        core = self._core()  # checks the settings now
        # kept as plain Python values, as albumentations' schemas keep theirs: a NumPy or 0-dim tensor severity (which
        # the check takes) made A.save / A.to_dict fail
        self.severity = core.batch.severity
        self.ops = None if ops is None else [str(o) for o in ops]

    def _core(self) -> APRSingle:
        """The :class:`APRSingle` of the current settings: rebuilt when one was changed after construction (as
        albumentations' own transforms read their attributes on every call, and ``to_dict`` reports them)."""
        key = (self.recombine_p, self.severity, None if self.ops is None else tuple(self.ops), self.dims, self.cast)
        if self._built is None or self._built[0] != key:
            check_probability(self.recombine_p, "recombine_p")  # APRSingle would name it p
            self._built = (key, APRSingle(self.recombine_p, self.severity, self.ops, self.dims,
                                          generator=self._generator, cast=self.cast))
        return self._built[1]

    def get_params(self) -> dict[str, Any]:
        seed = int(self.random_generator.integers(0, 2**62))
        self._generator.manual_seed(seed)
        return {"apr_params": self._core().generate_parameters()}

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        m = single_transform_matrix(params["apr_params"], self._core().batch.ops, h, w)[0]
        return {"matrix": m.numpy()}

    def apply(self, img: np.ndarray, apr_params: dict[str, torch.Tensor], **params: Any) -> np.ndarray:
        return self._core().apply(img, apr_params)

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        if np.allclose(matrix, np.eye(3)):
            return mask
        t = torch.from_numpy(np.asarray(mask, dtype=np.float64))
        chw = t.unsqueeze(0) if mask.ndim == 2 else t.permute(2, 0, 1)
        out = warp_pixels(chw.unsqueeze(0), torch.from_numpy(matrix).unsqueeze(0), "nearest")[0]
        out = out[0] if mask.ndim == 2 else out.permute(1, 2, 0)
        return out.numpy().astype(mask.dtype)

    def apply_to_bboxes(self, bboxes: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...], **params: Any
                        ) -> np.ndarray:
        """Boxes ``(N, 4+)`` normalised ``x_min, y_min, x_max, y_max``: corners moved, enclosing box kept."""
        if not len(bboxes) or np.allclose(matrix, np.eye(3)):
            return bboxes
        h, w = shape[:2]
        size = np.array([w, h], dtype=np.float64)
        x0, y0, x1, y1 = (bboxes[:, i].astype(np.float64) for i in range(4))
        corners = np.stack([np.stack(c, -1) for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], 1)  # (N, 4, 2)
        px = corners * size - 0.5  # box edges -> pixel-centre coordinates of the matrix
        moved = (px @ matrix[:2, :2].T + matrix[:2, 2] + 0.5) / size
        out = bboxes.copy()
        out[:, :2], out[:, 2:4] = moved.min(1), moved.max(1)
        return out

    def apply_to_keypoints(self, keypoints: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        """Keypoints ``(N, 2+)``: x, y (pixel centres at integers) moved; angle (column 3) turned with its direction."""
        if not len(keypoints) or np.allclose(matrix, np.eye(3)):
            return keypoints
        out = keypoints.copy()
        xy = keypoints[:, :2].astype(np.float64)
        out[:, :2] = xy @ matrix[:2, :2].T + matrix[:2, 2]
        if out.shape[1] > 3:  # the direction (cos a, sin a) is mapped too (exact under shear as well)
            a = keypoints[:, 3].astype(np.float64)
            d = np.stack([np.cos(a), np.sin(a)], 1) @ matrix[:2, :2].T
            out[:, 3] = np.mod(np.arctan2(d[:, 1], d[:, 0]), 2 * np.pi)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("recombine_p", "severity", "ops", "dims", "cast")


class AlbuAPRPair(ImageOnlyTransform):
    """APR-P per image with partners passed per call, like albumentations' ``FDA``.

    ``out = t(image=img, apr_metadata=[partner, ...])["image"]``: the image keeps its phase and
    takes the amplitude of one partner drawn at random (resized to the image size if needed). Images and
    partners are uint8 or float in [0, 1] (either may be float while the other is uint8); float 0..255 values
    raise ``ValueError``, as in :class:`AlbuAPRSingle`.
    """

    class InitSchema(BaseTransformInitSchema):
        metadata_key: str
        dims: Literal["chw", "hw"]

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
            raise ValueError(
                f"AlbuAPRPair needs partner images: call the pipeline with {self.metadata_key}=[image, ...]"
            )
        if isinstance(refs, np.ndarray):  # one image (H, W[, C]), or a stack (N, H, W, C) of them; beside a grey
            # image (H, W), a 3-D array with more than 4 in its last axis is a stack of grey partners (N, H, W)
            grey = getattr(data.get("image"), "ndim", None) == 2 and refs.ndim == 3 and refs.shape[-1] > 4
            refs = list(refs) if refs.ndim == 4 or grey else [refs]
        if len(refs) == 0:
            raise ValueError(f"{self.metadata_key} must hold at least one partner image")
        partner = refs[self.py_random.randrange(len(refs))]
        if not isinstance(partner, np.ndarray) or partner.ndim not in (2, 3):
            got = f"an array of shape {partner.shape}" if isinstance(partner, np.ndarray) else type(partner).__name__
            raise ValueError(f"{self.metadata_key} must be a list of partner images (H, W) or (H, W, C), or one "
                             f"stacked array (N, H, W, C); got {got}")
        h, w = params["shape"][:2]
        if partner.shape[:2] != (h, w):
            import cv2

            partner = cv2.resize(partner, dsize=(w, h), interpolation=cv2.INTER_LINEAR)
        return {"partner": partner}

    def apply(self, img: np.ndarray, partner: np.ndarray, **params: Any) -> np.ndarray:
        x, y = _to_chw(img, "image"), _to_chw(partner, self.metadata_key)
        for t, name in ((x, "image"), (y, self.metadata_key)):  # float 0..255 would saturate the output
            check_image_tensor(t, name, min_ndim=3, max_ndim=3, unit_range=True, overshoot=True)
        if x.shape[0] != y.shape[0]:
            hint = (f"; a stack of grey partners (N, H, W) beside a colour image reads as one image with N channels: "
                    f"pass {self.metadata_key} as a list" if partner.ndim == 3 and img.ndim == 3 else "")
            raise ValueError(f"partner image has {y.shape[0]} channels, image has {x.shape[0]}{hint}")
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
