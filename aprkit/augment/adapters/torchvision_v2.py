"""APR-S as a ``torchvision.transforms.v2`` transform (works inside ``v2.Compose``)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2._utils import is_pure_tensor

from ...fourier import Dims
from ..single import APRSingle

__all__ = ["APRSingleV2"]


class APRSingleV2(v2.Transform):
    """APR-S for classification pipelines: ``v2.Compose([v2.RandomCrop(32, 4), APRSingleV2(), v2.ToDtype(...)])``.

    Transforms PIL images, ``tv_tensors.Image`` and plain tensors ``(..., C, H, W)`` (uint8 or float
    in [0, 1]; leading dims are independent images). Bounding boxes and masks are rejected: the
    geometric ops would desynchronise them. Other inputs (e.g. integer labels) pass through.
    """

    _transformed_types = (tv_tensors.Image, is_pure_tensor, PIL.Image.Image)

    def __init__(self, p: float = 0.5, severity: float = 3, ops: Optional[Sequence[str]] = None, dims: Dims = "chw",
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None) -> None:
        super().__init__()
        self.aprs = APRSingle(p, severity, ops, dims, generator=generator, seed=seed)

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for inpt in flat_inputs:
            if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask)):
                raise TypeError(f"APRSingleV2 supports image classification inputs only, got {type(inpt).__name__}")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        n = 1
        for inpt in flat_inputs:
            if isinstance(inpt, torch.Tensor) and self._needs(inpt) and inpt.ndim > 3:
                n = max(n, math.prod(inpt.shape[:-3]))
        return {"apr": self.aprs.batch.generate_parameters((n,))}

    @staticmethod
    def _needs(inpt: Any) -> bool:
        return isinstance(inpt, tv_tensors.Image) or is_pure_tensor(inpt)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        p = params["apr"]
        if isinstance(inpt, torch.Tensor):
            plain = inpt.as_subclass(torch.Tensor)
            if plain.ndim == 3:
                out = self.aprs.apply(plain, {k: v[:1] for k, v in p.items()})
            else:
                flat = plain.reshape(-1, *plain.shape[-3:])
                out = self.aprs.batch.apply(flat, {k: v[: flat.shape[0]] for k, v in p.items()}).reshape(plain.shape)
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out
        return self.aprs.apply(inpt, {k: v[:1] for k, v in p.items()})

    def extra_repr(self) -> str:
        return self.aprs.batch.extra_repr()
