"""Affine warps of image batches as PIL's affine transform samples them: the geometric ops of :mod:`.ops` and the
adapters that move masks, boxes and keypoints along (:func:`pixel_matrix`, :func:`warp_pixels`).

Sampling is bilinear (or nearest, for masks) at pixel centres; a sample point outside the image gives black and
one inside interpolates with the edge pixels repeated. Half-precision input is warped in float32 and cast back
(a half-precision sampling grid moves pixels and blackens borders), with an enclosing ``torch.autocast`` off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._tensor_cache import tensor_cache
from .._tensors import autocast_off

__all__ = ["autocast_off", "pixel_matrix", "warp_pixels"]


def _build_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(h * w, 3).to(device=device, dtype=dtype)


_cached_grid = tensor_cache(64)(_build_grid)


def _build_extent(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(2, 2)``: rows ``(W / 2, H / 2)``, the normalised grid's scale to pixels, and ``(W, H)``, the extent."""
    return torch.tensor([[w / 2, h / 2], [w, h]], dtype=dtype, device=device)


_cached_extent = tensor_cache(64)(_build_extent)  # made once per size and device: no copy to the device per batch


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(H * W, 3)``: normalised output pixel centres ``(x_n, y_n, 1)`` (``affine_grid``'s, computed in float64)."""
    if torch.compiler.is_compiling():
        return _build_grid(h, w, device, dtype)
    return _cached_grid(h, w, device, dtype)


#: input dtypes the ops compute in float32 (cast back after)
_HALF = (torch.float16, torch.bfloat16)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp as PIL's affine transform: ``out(p) = x(theta @ [p, 1])`` (normalised coordinates, pixel centres).

    Like PIL (``Image.transform`` / ``rotate``), a sample point outside the image ``[0, W) x [0, H)`` gives
    black and one inside interpolates with the edge pixels repeated (``grid_sample`` with zero padding
    would blend the outermost half pixel with black: up to 4 grey levels per image of difference from
    the reference). ``mode="nearest"`` moves masks along with the image."""
    b, _, h, w = x.shape
    # the sample points in float64 (PIL's): in float32 the inside test's error moved both edges one way, so a point
    # just outside the top/left edge took the edge pixel and one just inside the bottom/right edge black (20 of 150
    # rotations of a 224 px image); the grid for grid_sample is cast to the image's dtype after (MPS: float32)
    exact = torch.float32 if x.device.type == "mps" else torch.float64
    points = _base_grid(h, w, x.device, exact) @ theta.reshape(b, 2, 3).to(exact).transpose(1, 2)  # (B, HW, 2)
    grid = points.to(x.dtype).view(b, h, w, 2)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
    # inside test in pixels, with a tolerance for the float error of the grid (an exact 1-pixel shift lands on the edge)
    tol = 8 * torch.finfo(exact).eps * max(h, w)
    extent = (_build_extent if torch.compiler.is_compiling() else _cached_extent)(h, w, points.device, exact)
    px = (points + 1) * extent[0]
    inside = ((px > -tol) & (px < extent[1] - tol)).all(-1).view(b, h, w)
    return out * inside.unsqueeze(1).to(out.dtype)


def _to_norm(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``(3, 3)``: pixel coordinates with integer pixel centres (kornia's, OpenCV's) -> ``affine_grid``'s
    normalised ones."""
    return torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]], dtype=like.dtype, device=like.device)


def pixel_matrix(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The forward map ``(B, 3, 3)`` of the inverse maps ``theta`` ``(B, 6)`` (columns of :func:`op_table`).

    Maps input pixel coordinates to output pixel coordinates, pixel centres at integers (corners
    ``(0, 0)`` and ``(W - 1, H - 1)``): kornia's ``transform_matrix`` convention and OpenCV's, so boxes and
    keypoints move with the image. Same dtype and device as ``theta``."""
    n = _to_norm(h, w, theta)
    last = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    inv = torch.cat([theta.reshape(-1, 2, 3), last], 1)  # output normalised -> input normalised
    return torch.linalg.solve(n, torch.linalg.solve(inv, n.expand_as(inv)))  # N^-1 inv^-1 N


def warp_pixels(x: torch.Tensor, matrix: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Warp ``x`` ``(B, C, H, W)`` float by forward pixel maps ``matrix`` ``(B, 3, 3)`` (:func:`pixel_matrix`'s
    convention), with the same sampling and borders as the ops; ``mode="nearest"`` for masks. Runs with
    autocast off (see :func:`autocast_off`)."""
    if x.dtype in _HALF:
        return warp_pixels(x.float(), matrix, mode).to(x.dtype)
    h, w = x.shape[-2:]
    m = matrix.to(torch.float64)
    n = _to_norm(h, w, m)
    theta = n @ torch.linalg.solve(m, torch.linalg.inv(n).expand_as(m))  # N M^-1 N^-1: output -> input, normalised
    with autocast_off(x.device):
        return _warp(x, theta[:, :2].reshape(-1, 6).to(x.dtype), mode)
