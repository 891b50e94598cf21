"""APR-S as a per-image dataloader transform (:class:`APRSingle`): PIL images and uint8 arrays take the reference's
path (PIL ops, one small FFT in ``scipy.fft``), everything else :class:`~aprkit.augment.single.APRSingleBatch`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._checks import check_chw_layout, check_hwc_layout, check_image_tensor, check_pil_mode
from .._tv import like_input
from ..fourier import Dims
from .functional import recombine_views_numpy
from .ops_pil import apply_pil_op
from .single import APRSingleBatch, Cast

__all__ = ["APRSingle"]


class APRSingle:
    """APR-S as a per-image dataloader transform: ``img = aprs(img)``.

    Accepts a PIL image (mode ``RGB`` or ``L``), a numpy array ``(H, W, C)``/``(H, W)`` or a tensor
    ``(C, H, W)`` (a channels-last tensor raises ``ValueError``), uint8 or float in [0, 1], and returns the same
    kind, shape and dtype. uint8 images on the CPU with 1 or 3 channels take the reference's path (PIL ops, then
    one small FFT in ``scipy.fft``: fastest per image); float images, device tensors and other channel counts take
    the batched torch path of :class:`APRSingleBatch` (same draws; the two agree to 0.5 grey levels mean per image on
    average, now and then several levels where a threshold op falls between them -- see
    ``aprkit.augment.ops_pil``). With ``generator=None`` and no
    ``seed`` draws use torch's global RNG, which ``DataLoader`` seeds per worker; with ``seed``/``generator``
    each worker re-seeds its copy from that seed and the worker's torch seed (:func:`worker_generator`), so
    workers draw different streams.
    """

    def __init__(self, p: float = 0.5, severity: float = 3, ops: Sequence[str] | None = None, dims: Dims = "chw",
                 generator: torch.Generator | None = None, seed: int | None = None, cast: Cast = "round") -> None:
        self.batch = APRSingleBatch(p, severity, ops, dims, generator=generator, seed=seed, cast=cast)

    @property
    def p(self) -> float:
        """The recombination probability (settable, checked: the one of :attr:`batch`)."""
        return self.batch.p

    @p.setter
    def p(self, value: float) -> None:
        self.batch.p = value  # checked there (CheckedProbability)

    def generate_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters for one image (tensors of shape ``(1,)``)."""
        return self.batch.generate_parameters((1,))

    def __call__(self, img: Any) -> Any:
        return self.apply(img, self.generate_parameters())

    def apply(self, img: Any, params: dict[str, torch.Tensor]) -> Any:
        """Deterministic APR-S of one image with ``params`` from :meth:`generate_parameters`."""
        if isinstance(img, torch.Tensor):
            check_chw_layout(check_image_tensor(img, "image", min_ndim=3, max_ndim=3, check_finite=False))  # values:
            # once, by apr_single's range pass (or PIL's uint8 path)
            if img.dtype == torch.uint8 and img.device.type == "cpu" and img.shape[0] in (1, 3):  # PIL's path
                hwc = img.permute(1, 2, 0).numpy()
                out = self._apply_numpy(hwc if img.shape[0] == 3 else hwc[..., 0], params)
                chw = torch.from_numpy(out).reshape(img.shape[1], img.shape[2], -1).permute(2, 0, 1).contiguous()
                return like_input(chw, img)  # a tv_tensors.Image stays one, as in torchvision's transforms
            return like_input(self.batch.apply(img.unsqueeze(0), params)[0], img)
        if isinstance(img, np.ndarray):
            return self._apply_numpy(img, params)
        try:
            from PIL import Image

            is_pil = isinstance(img, Image.Image)
        except ImportError:  # pragma: no cover - pillow is a dependency
            is_pil = False
        if is_pil:
            return self._apply_pil(img, params)
        raise TypeError(
            f"image must be a PIL image, a numpy array (H, W[, C]) or a tensor (C, H, W), got {type(img).__name__}"
        )

    def _apply_numpy(self, arr: np.ndarray, params: dict[str, torch.Tensor]) -> np.ndarray:
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] < 1):
            raise ValueError(f"numpy image must have shape (H, W) or (H, W, C), got {arr.shape}")
        check_hwc_layout(arr, "numpy image")
        if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] == 3):
            from PIL import Image

            return np.array(self._apply_pil(Image.fromarray(arr), params))
        if arr.dtype not in (np.uint8, np.float32, np.float64):
            raise TypeError(f"numpy image must have dtype uint8, float32 or float64, got {arr.dtype}")
        t = torch.from_numpy(np.require(arr, requirements=("C", "W")))  # copied only if strided or read-only
        chw = t.unsqueeze(0) if arr.ndim == 2 else t.permute(2, 0, 1)
        out = self.apply(chw, params)
        return (out[0] if arr.ndim == 2 else out.permute(1, 2, 0)).numpy()

    def _apply_pil(self, img: Any, params: dict[str, torch.Tensor]) -> Any:
        from PIL import Image

        check_pil_mode(img, "APRSingle")
        w, h = img.size
        if w < 2 or h < 2:
            raise ValueError(f"image must be at least 2x2 pixels, got {w}x{h}")
        names = self.batch.ops
        p = {k: v.tolist()[0] for k, v in params.items()}
        a = apply_pil_op(img, names[int(p["op1"])], float(p["level1"]), bool(p["negate1"]))
        if not p["recombine"]:
            return a
        b = apply_pil_op(a, names[int(p["op2"])], float(p["level2"]), bool(p["negate2"]))
        views = np.stack([np.asarray(a), np.asarray(b)]).astype(np.float32)
        if views.ndim == 3:  # mode "L": (2, H, W) -> (2, H, W, 1)
            views = views[..., None]
        rec = recombine_views_numpy(views, bool(p["phase_from_first"]), self.batch.dims)
        if self.batch.cast == "wrap":  # the reference's astype(np.uint8): truncate, wrap modulo 256
            arr = np.remainder(np.trunc(rec).astype(np.int64), 256).astype(np.uint8)
        else:
            arr = np.clip(np.rint(rec), 0, 255).astype(np.uint8)
        return Image.fromarray(arr[..., 0] if img.mode == "L" else arr)

    def __repr__(self) -> str:
        return f"APRSingle({self.batch.extra_repr()})"
