"""``RandomCorruption``: a transform applying random corruptions, for torchvision v2 pipelines (samples, tv_tensors)
and batches (kornia-style ``generate_parameters`` / ``apply``; not a kornia augmentation: inside
``kornia.augmentation.AugmentationSequential`` it sees the images only, so masks would stay behind, and a container's
``params=`` replay does not reach it).

Works on a single image ``(C, H, W)``, a batch ``(B, C, H, W)`` (each image draws its own corruption
and severity), a PIL image or a NumPy ``(H, W, 3)`` uint8 array, so it fits inside
``torchvision.transforms.v2.Compose`` before or after ``ToImage``/``ToTensor``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._checks import (
    CheckedProbability,
    batch_size_of,
    check_chw_layout,
    check_image_tensor,
    check_once,
    check_param_keys,
    check_pil_mode,
)
from .._generators import make_generator, worker_generator
from .._replay import ReplayModule
from .._tv import draw_groups, is_video, like_input
from ..augment.draws import uniform_rows
from .api import BENCHMARK, check_channels, check_names, corrupt, image_channels, on_image
from .names import moves_pixels
from .severity import check_preset, check_severities

__all__ = ["RandomCorruption"]

_PARAM_KEYS = ("apply", "name_index", "severity", "seed")


class RandomCorruption(CheckedProbability, ReplayModule):
    """With probability ``p`` per image, apply a corruption drawn uniformly from ``names`` at a
    severity drawn uniformly from ``severities``.

    Every input is validated whole before the draws (value range, dtype, and 3 channels when ``names`` holds a colour
    corruption), so an unfit batch raises on every call, not only when an image happens to be drawn.

    Args:
        names: corruption names (default: the 15 benchmark corruptions) or a single name.
        severities: an int 1-5 or a sequence of them.
        p: probability of corrupting each image.
        preset: ``"cifar"``, ``"tinyimagenet"`` or ``"imagenet"`` severity parameters; ``None``: the one made for
            the size of the images transformed (``preset_for_size``).
        generator: source of every random choice (``None``: torch's global RNG). In DataLoader workers each copy is
            re-seeded from its seed and the worker's torch seed at first use (as the APR transforms do), so the
            workers draw different streams that repeat with the loader's seed.
        frost_dir: directory with the frost textures (see ``aprkit.corruptions.find_frost_dir``).
        seed: instead of ``generator``, a new CPU generator seeded with it (as ``APRPair`` and ``APRSingle`` take).
    """

    def __init__(
        self,
        names: Sequence[str] | str | None = None,
        severities: Sequence[int] | int = (1, 2, 3, 4, 5),
        p: float = 1.0,
        preset: str | None = None,
        generator: torch.Generator | None = None,
        frost_dir: str | os.PathLike | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.names = tuple(check_names(BENCHMARK if names is None else names))
        if not self.names:
            raise ValueError("names must contain at least one corruption name")
        self.severities = tuple(check_severities(severities))
        if not self.severities:
            raise ValueError("severities must contain at least one integer 1-5")
        for what, values in (("names", self.names), ("severities", self.severities)):
            check_once(values, what, "each is drawn uniformly: a repeat would silently weigh it twice")
        self.p = p  # checked whenever it is set (CheckedProbability)
        self.preset = None if preset is None else check_preset(preset)
        self.generator = make_generator(generator, seed)
        self._base_seed = None if self.generator is None else self.generator.initial_seed()  # see worker_generator
        self.frost_dir = frost_dir

    def generate_parameters(self, batch_shape: int | Sequence[int]) -> dict[str, torch.Tensor]:
        """Sample per-image choices for a batch of shape ``(B, C, H, W)`` (or of size B, as the APR transforms take
        either): ``apply`` (bool), ``name_index``, ``severity`` and ``seed`` (long, the image's key for the
        corruption's own draws), each ``(B,)`` on the CPU. Image ``i``'s choices come from row ``i`` of
        :func:`~aprkit.augment.draws.uniform_rows`: the same whatever the batch size."""
        batch_size = batch_size_of(batch_shape)
        g = worker_generator(self.generator, self._base_seed)
        # one row of uniforms per image (uniform_rows): image i draws the same in a batch of 2 as in one of 256
        u = uniform_rows(batch_size, 4, g).cpu()
        apply = u[:, 0] < self.p
        name_index = (u[:, 1] * len(self.names)).long().clamp_(max=len(self.names) - 1)
        sev_index = (u[:, 2] * len(self.severities)).long().clamp_(max=len(self.severities) - 1)
        seed = (u[:, 3] * 2.0**53).long()  # the image's key for the corruption's own draws (53 random bits)
        severity = torch.tensor(self.severities)[sev_index]
        return {"apply": apply, "name_index": name_index, "severity": severity, "seed": seed}

    def replay(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Corrupt ``images`` ``(B, C, H, W)`` as ``params`` prescribes (a new tensor; input untouched); called as
        ``apply(images, params)``, Kornia-style (``apply(fn)`` is ``nn.Module.apply``, see :mod:`aprkit._replay`).
        Each image draws from its own ``seed``, so a replay gives the same images in any batch."""
        check_param_keys(params, _PARAM_KEYS, "generate_parameters")
        # untouched images pass their gradient through (as the hosts' transforms); corrupted ones carry none (as
        # corrupt's results); a batch corrupted throughout is no graph at all
        whole = bool(params["apply"].all())
        out = images.detach().clone() if whole else images.clone()
        keys = params["name_index"] * 8 + params["severity"]
        keys = torch.where(params["apply"], keys, torch.full_like(keys, -1))
        drawn = [k for k in torch.unique(keys).tolist() if k >= 0]
        if images.ndim >= 3:  # named with the whole batch's shape (corrupt sees one (corruption, severity) group)
            check_channels([self.names[k // 8] for k in drawn], images.shape[-3], f"shape {tuple(images.shape)}")
        for key in drawn:
            sel = (keys == key).nonzero().flatten().to(images.device)
            name, severity = self.names[key // 8], key % 8
            out[sel] = corrupt(images[sel], name, severity, self.preset, seeds=params["seed"][sel.cpu()],
                               frost_dir=self.frost_dir)
        return out

    def forward(self, *inputs: Any) -> Any:
        """Corrupt a tensor ``(C, H, W)`` / ``(B, C, H, W)``, a PIL image (mode RGB or L) or an ``(H, W, 3)`` uint8
        array; or, as torchvision v2's transforms do, the images of a sample of several items (``(image, label)``, a
        dict, ...: everything else passes through). Boxes, masks and keypoints pass through too, as through
        ``v2.GaussianBlur``, unless ``names`` holds a corruption that moves pixels (``MOVES_PIXELS``: glass, motion and
        zoom blur, elastic): then they are refused, as ``v2.AugMix`` refuses them. A sample holding no image, or a
        uint8 NumPy image (which those rules would leave clean), is refused. Where a sample holds no
        ``tv_tensors.Image``/``Video`` or PIL image, only its first plain tensor is an image (torchvision's rule:
        ``(image, label_tensor)``), so a list of image tensors is not a batch: stack it. The frames of a
        ``tv_tensors.Video`` share their draws."""
        if len(inputs) == 1 and not isinstance(inputs[0], (tuple, list, dict)):
            return self._corrupt(inputs[0])
        if len(inputs) == 2 and isinstance(inputs[1], dict) and set(_PARAM_KEYS) <= set(inputs[1]):
            raise TypeError("RandomCorruption(images, params) would corrupt a sample (images, dict) with new draws; "
                            "to replay drawn parameters call .apply(images, params)")
        return _v2_sample(self)(*inputs)

    def _corrupt(self, x: Any) -> Any:
        """One image, batch or video (see :meth:`forward`)."""
        if isinstance(x, torch.Tensor):
            video = is_video(x)
            check_image_tensor(x, "images", min_ndim=3, max_ndim=None if video else 4, unit_range=True,
                               allow_empty=True)
            check_chw_layout(x, "images")
            check_channels(self.names, x.shape[-3], f"shape {tuple(x.shape)}")
            if x.ndim >= 4 and 0 in x.shape[:-3]:  # an empty batch comes back as it is, as from the hosts' transforms
                return x
            batch = x.as_subclass(torch.Tensor).reshape(-1, *x.shape[-3:])
            draws, per = draw_groups(x)  # a video's frames share its draw
            params = {k: v.repeat_interleave(per) for k, v in self.generate_parameters(draws).items()}
            return like_input(self.apply(batch, params).reshape(x.shape), x)  # an Image stays one
        if isinstance(x, np.ndarray) or type(x).__module__.startswith("PIL"):
            if not isinstance(x, np.ndarray):  # another mode would come back as RGB only when drawn
                check_pil_mode(x, "RandomCorruption")
            channels = image_channels(x)
            check_channels(self.names, channels, f"a {type(x).__name__} image with {channels} channel(s)")
            prm = self.generate_parameters(1)
            if not bool(prm["apply"][0]):
                return x
            name, severity = self.names[int(prm["name_index"][0])], int(prm["severity"][0])
            return on_image(x, lambda t: corrupt(t, name, severity, self.preset, seeds=prm["seed"],
                                                 frost_dir=self.frost_dir))
        raise TypeError(f"RandomCorruption expects a torch.Tensor, PIL image or NumPy array, got {type(x).__name__}")

    def extra_repr(self) -> str:
        return f"names={list(self.names)}, severities={list(self.severities)}, p={self.p}, preset={self.preset!r}"


def _v2_sample(corruption: RandomCorruption) -> Any:
    """A ``torchvision.transforms.v2.Transform`` corrupting the images of a sample with ``corruption`` (torchvision's
    rules of which items are images; made per call: torchvision is imported only for samples)."""
    from torchvision.transforms import v2

    from ..augment.adapters.torchvision_v2 import IMAGE_TYPES, reject_annotations, require_image

    moving = moves_pixels(corruption.names)

    class Sample(v2.Transform):
        _transformed_types = IMAGE_TYPES  # annotations pass through: colour and noise corruptions leave them in place

        def check_inputs(self, flat_inputs: list[Any]) -> None:
            if moving:
                reject_annotations(flat_inputs, "RandomCorruption", moving)
            for inpt in flat_inputs:  # torchvision's rules pass NumPy arrays through: an image would stay clean
                if isinstance(inpt, np.ndarray) and inpt.dtype == np.uint8 and (
                        inpt.ndim == 3 and inpt.shape[-1] in (1, 3, 4) or inpt.ndim == 2 and min(inpt.shape) >= 8):
                    raise TypeError(f"RandomCorruption got a sample holding a uint8 NumPy image of shape "
                                    f"{inpt.shape}, which torchvision's sample rules pass through uncorrupted; "
                                    "pass that image alone, or convert it to a tensor, PIL image or "
                                    "tv_tensors.Image in the sample")
            require_image(flat_inputs, "RandomCorruption", "Pass a NumPy (H, W, 3) uint8 image alone, or convert it "
                          "with v2.ToImage() first")

        def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
            return corruption._corrupt(inpt)

    return Sample()
