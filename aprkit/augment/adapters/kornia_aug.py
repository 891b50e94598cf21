"""APR-S and APR-P as kornia augmentations for float batches on device.

Kornia's conventions hold: ``p`` is the probability of applying the augmentation to an image (``p=0`` is
the identity), ``p_batch`` gates the whole batch and ``same_on_batch=True`` (or a container's
``ImageSequential(..., same_on_batch=True)``) gives every image the same draw. APR's own recombination
probability is ``p_apr``. Parameters replay with ``module(x, params=module._params)``.

:class:`RandomAPRSingle` is a geometric augmentation: its ``transform_matrix`` (``(B, 3, 3)``, pixel
coordinates with integer pixel centres, input -> output, like kornia's own) is the geometry of the view
whose phase the output keeps (see :func:`aprkit.augment.single.single_transform_matrix`), so
``AugmentationSequential(..., data_keys=["input", "mask", "bbox_xyxy", "keypoints"])`` moves masks
(nearest), boxes (corners, then the enclosing box) and keypoints with the image, and ``inverse`` undoes
that geometry (not the colour ops or the recombination, as kornia's inverses cannot restore lost pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from kornia.augmentation import GeometricAugmentationBase2D, IntensityAugmentationBase2D
from kornia.constants import Resample

from ..._checks import check_probability
from ..._generators import worker_generator
from ...fourier import Dims
from ..pair import APRPair
from ..single import APRSingleBatch, Cast, single_transform_matrix
from ..warp import warp_pixels

__all__ = ["RandomAPRSingle", "RandomAPRPair"]

_SINGLE_KEYS = ("op1", "level1", "negate1", "recombine", "op2", "level2", "negate2", "phase_from_first")
_PAIR_KEYS = ("perm", "mask")


def _video_frames(ours: dict[str, torch.Tensor], params: dict[str, Any], shared: bool) -> dict[str, torch.Tensor]:
    """APR-P's partners inside kornia's ``VideoSequential``: drawn per video (``same_on_frame=True``) and repeated over
    the ``T`` frames, they are video indices; frame ``t`` takes the amplitude of frame ``t`` of the partner video
    (``perm * T + t``, as kornia remaps its own mix augmentations). Drawn per frame they index the frames already.
    A draw shared by every video (``same_on_batch=True``: ``shared``) pairs nothing and is refused."""
    videos, row = params.get("video_batch_size"), params.get("row")
    perm = ours["perm"]
    if videos is None or row is None or not perm.numel():
        return ours
    n, videos = perm.numel(), int(videos)
    at = torch.arange(n, device=row.device)
    if torch.equal(row.reshape(-1), at):  # one draw per frame: frame indices already
        return ours
    if shared or n % videos or not torch.equal(row.reshape(-1), at // (n // videos)):  # no draw per video either
        raise ValueError("RandomAPRPair in a VideoSequential needs same_on_batch=False: APR-P pairs the videos of the "
                         "batch with each other, and one draw shared by all of them pairs every video with the first")
    frames = n // videos
    return {**ours, "perm": perm * frames + at.to(perm.device) % frames}


def _ours(params: dict[str, Any], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Our entries of a kornia parameter dict (kornia and its containers add their own)."""
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"params lack {missing}; pass the dict produced by generate_parameters/_params")
    return {k: params[k] for k in keys}


def _gate(gen: torch.Generator, batch_shape: tuple[int, ...], p: float, p_batch: float, same_on_batch: bool
          ) -> torch.Tensor:
    """Kornia's per-image application gate (``batch_prob``, float 0/1 ``(B,)``) drawn from ``gen``."""
    n = int(batch_shape[0])

    def draw(k: int, prob: float) -> torch.Tensor:  # no draw for 0 and 1, as kornia
        if prob in (0.0, 1.0):
            return torch.full((k,), prob)
        return (torch.rand(k, generator=gen, device=gen.device).cpu() < prob).float()

    return draw(1, p_batch) * (draw(1, p).expand(n) if same_on_batch else draw(n, p))


def _same_on_batch(params: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Image 0's draw for all ``n`` images."""
    return {k: v[:1].expand(n, *v.shape[1:]).clone() for k, v in params.items()}


class _Gate:
    """Kornia's apply/skip draw taken from ``self.core``'s generator when it has one, so seeded runs reproduce
    (kornia's base class follows in the MRO)."""

    core: Any

    def __batch_prob_generator__(self, batch_shape: tuple[int, ...], p: float, p_batch: float,
                                 same_on_batch: bool) -> torch.Tensor:
        if self.core.generator is None:  # kornia's own draws from the global RNG
            return super().__batch_prob_generator__(batch_shape, p, p_batch, same_on_batch)  # type: ignore[misc]
        # re-seeded per DataLoader worker before this first draw of a call, as the core's own draws are
        gen = worker_generator(self.core.generator, self.core._base_seed)
        return _gate(gen, batch_shape, p, p_batch, same_on_batch)  # type: ignore[arg-type]


class _SeededGate(_Gate):
    """What both APR adapters share: ``p_apr`` (the APR probability of ``self.core``) and the seeded gate."""

    @property
    def p_apr(self) -> float:
        """The APR probability (settable, checked, as kornia's ``p``): the one of ``self.core``."""
        return self.core.p

    @p_apr.setter
    def p_apr(self, value: float) -> None:
        self.core.p = check_probability(value, "p_apr")

    def __repr__(self) -> str:  # kornia's fields after the core's settings, whose ``p`` is ``p_apr`` here
        name, _, rest = super().__repr__().partition("(")
        ours = self.core.extra_repr()
        return f"{name}({'p_apr=' + ours[2:] if ours.startswith('p=') else ours}, {rest}"


class RandomAPRSingle(_SeededGate, GeometricAugmentationBase2D):
    """Kornia APR-S on ``(B, C, H, W)`` float images in [0, 1] (see :class:`aprkit.augment.APRSingleBatch`).

    ``p_apr`` is APR-S's recombination probability (``APRSingleBatch(p=...)``; positional first argument as
    before); ``p``, ``p_batch``, ``same_on_batch`` and ``keepdim`` are kornia's. ``generator``/``seed`` drive
    every draw, kornia's gate included, so a seeded module reproduces its output. Image ``i``'s APR-S draws do not
    depend on the batch size (:func:`~aprkit.augment.single.sample_single_params`) while the gate draws nothing
    (``p`` and ``p_batch`` 0 or 1); with ``0 < p < 1`` its ``B`` draws come first.
    """

    def __init__(self, p_apr: float = 0.5, severity: float = 3, ops: Sequence[str] | None = None, dims: Dims = "chw",
                 generator: torch.Generator | None = None, seed: int | None = None, *, p: float = 1.0,
                 p_batch: float = 1.0, same_on_batch: bool = False, keepdim: bool = False,
                 cast: Cast = "round") -> None:
        super().__init__(p=check_probability(p, "p"), p_batch=check_probability(p_batch, "p_batch"),
                         same_on_batch=same_on_batch, keepdim=keepdim)
        self.core = APRSingleBatch(check_probability(p_apr, "p_apr"), severity, ops, dims, generator=generator,
                                   seed=seed, cast=cast)
        self.flags = {"resample": Resample.BILINEAR, "align_corners": False}

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        if not self.same_on_batch:
            return self.core.generate_parameters(batch_shape)
        return _same_on_batch(self.core.generate_parameters((1, *batch_shape[1:])), int(batch_shape[0]))

    def compute_transformation(self, input: torch.Tensor, params: dict[str, torch.Tensor],
                               flags: dict[str, Any]) -> torch.Tensor:
        ours = _ours(params, _SINGLE_KEYS)
        m = single_transform_matrix(ours, self.core.ops, input.shape[-2], input.shape[-1])
        return m.to(device=input.device, dtype=input.dtype)

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        return self.core.apply(input, _ours(params, _SINGLE_KEYS))

    def _warp(self, input: torch.Tensor, transform: torch.Tensor | None, flags: dict[str, Any]) -> torch.Tensor:
        if not isinstance(transform, torch.Tensor):
            raise TypeError(f"expected the transform matrices as a tensor (B, 3, 3), got {type(transform).__name__}")
        mode = Resample.get(flags.get("resample", Resample.BILINEAR)).name.lower()
        work = input if input.dtype in (torch.float32, torch.float64) else input.float()
        out = warp_pixels(work, transform.to(input.device), "nearest" if mode == "nearest" else "bilinear")
        return out.to(input.dtype)

    def apply_transform_mask(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                             transform: torch.Tensor | None = None) -> torch.Tensor:
        """Masks follow the image's geometry only (nearest unless the caller chose another ``resample``)."""
        return self._warp(input, transform, flags)

    def inverse_transform(self, input: torch.Tensor, flags: dict[str, Any], transform: torch.Tensor | None = None,
                          size: tuple[int, int] | None = None) -> torch.Tensor:
        """Undo the geometry (``transform`` is the inverse matrix kornia passes)."""
        return self._warp(input, transform, flags)


class RandomAPRPair(_SeededGate, IntensityAugmentationBase2D):
    """Kornia APR-P on ``(B, C, H, W)`` images (see :class:`aprkit.augment.APRPair`); labels are unchanged.

    ``p_apr`` is APR-P's probability (``APRPair(p=...)``); kornia's ``p``/``p_batch`` gate which images keep
    their recombined result (partners are always drawn over the whole batch). ``same_on_batch=True`` gives
    all images the same recombination decision.

    Unlike kornia's own intensity augmentations, results are not clamped to [0, 1] by default (``clamp=False``, as
    APR-P's reference trains on them): a recombined image overshoots by a few tenths where its phase and its
    partner's amplitude disagree. Pass ``clamp=True`` for images that must stay in range.

    A batch is recombined as it comes: the [0, 1] images (the reference's CIFAR code) or a mean/std-normalised batch
    (its ImageNet code, which mixes after normalising). The two are different augmentations, not one rescaled: each
    image keeps the sign of its own DC term and a 3-D transform (``dims="chw"``) mixes differently scaled channels.
    Place the step before ``Normalize`` for the CIFAR recipe (``clamp=True`` then refuses a normalised batch).
    """

    def __init__(self, p_apr: float = 0.6, dims: Dims = "chw", per_sample: bool = False, clamp: bool = False,
                 generator: torch.Generator | None = None, seed: int | None = None, *, p: float = 1.0,
                 p_batch: float = 1.0, same_on_batch: bool = False, keepdim: bool = False) -> None:
        super().__init__(p=check_probability(p, "p"), p_batch=check_probability(p_batch, "p_batch"),
                         same_on_batch=same_on_batch, keepdim=keepdim)
        self.core = APRPair(check_probability(p_apr, "p_apr"), dims, per_sample, clamp, generator=generator, seed=seed)

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        params = self.core.generate_parameters(batch_shape)
        if self.same_on_batch and params["mask"].numel() > 1:
            params["mask"] = params["mask"][:1].expand_as(params["mask"]).clone()
        # each row's own index: how a VideoSequential broadcast the draw over the frames shows in it (_video_frames)
        params["row"] = torch.arange(params["perm"].numel(), device=params["perm"].device)
        return params

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        out = self.core.apply(input, _video_frames(_ours(params, _PAIR_KEYS), params, self.same_on_batch))
        return input.clone() if out is input else out  # a new tensor whatever the draw, as kornia's own transforms
