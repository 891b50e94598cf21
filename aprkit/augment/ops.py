"""AugMix-style operations, batched in torch: one op per image, all images in one pass, no host sync.

The ops and their severity scaling follow AugMix's ``augmentations.py`` (as used by the reference
APR code): a level is drawn uniformly in ``[0.1, severity)``, then

* ``posterize``: keep ``4 - int(level * 4 / 10)`` bits;  ``solarize``: invert pixels ``>= 256 - int(level * 256 / 10)``;
* ``rotate``: ``+-int(level * 30 / 10)`` degrees about the centre;  ``shear_x/y``: ``+-level * 0.3 / 10``
  (about the top-left corner, as PIL's affine transform);  ``translate_x/y``: ``+-int(level * size / 3 / 10)``
  pixels, where ``size`` is the image's own width/height (the reference uses a global ``IMAGE_SIZE``);
* ``autocontrast``, ``equalize``: per channel, no level;  ``color``, ``contrast``, ``brightness``,
  ``sharpness`` (not in the default list: they overlap the test corruptions): factor ``level * 1.8 / 10 + 0.1``.

Geometric ops sample bilinearly with black fill. Work is done on a float 0..255 scale.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._checks import nearest_names

__all__ = ["DEFAULT_OPS", "ALL_OPS", "resolve_ops", "sample_op_params", "apply_ops"]

DEFAULT_OPS: tuple[str, ...] = (
    "autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
)
ALL_OPS: tuple[str, ...] = DEFAULT_OPS + ("color", "contrast", "brightness", "sharpness")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def resolve_ops(ops: Optional[Sequence[str]]) -> tuple[str, ...]:
    """Validate a sequence of op names (``None`` -> :data:`DEFAULT_OPS`)."""
    if ops is None:
        return DEFAULT_OPS
    if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) == 0:
        raise ValueError(f"ops must be a non-empty sequence of names from {ALL_OPS}, got {ops!r}")
    for name in ops:
        if name not in ALL_OPS:
            raise ValueError(f"unknown op {name!r}{nearest_names(str(name), ALL_OPS)}; expected names from {ALL_OPS}")
    return tuple(ops)


def sample_op_params(
    n: int, num_ops: int, severity: float, generator: Optional[torch.Generator] = None
) -> dict[str, torch.Tensor]:
    """Draw ``n`` op choices on the generator's device: ``op`` (index), ``level`` in [0.1, severity), ``negate``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    op = torch.randint(num_ops, (n,), generator=generator, device=gdev)
    level = 0.1 + (float(severity) - 0.1) * torch.rand(n, generator=generator, device=gdev, dtype=torch.float64)
    negate = torch.rand(n, generator=generator, device=gdev) > 0.5
    return {"op": op, "level": level, "negate": negate}


def int_parameter(level: torch.Tensor, maxval: float | torch.Tensor) -> torch.Tensor:
    return torch.floor(level * maxval / 10)


def float_parameter(level: torch.Tensor, maxval: float) -> torch.Tensor:
    return level * maxval / 10


def _affine_matrices(names: tuple[str, ...], op: torch.Tensor, level: torch.Tensor, negate: torch.Tensor,
                     h: int, w: int) -> torch.Tensor:
    """Per-image inverse maps ``(B, 2, 3)`` in pixel coordinates: output point -> input point."""
    b = op.shape[0]
    sign = torch.where(negate, -1.0, 1.0).to(torch.float64)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64, device=op.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    for k, name in enumerate(names):
        sel = op == k
        if name == "rotate":
            rad = torch.deg2rad(int_parameter(level, 30) * sign)
            c, s = torch.cos(rad), torch.sin(rad)
            cx, cy = w / 2, h / 2
            rot = torch.stack([torch.stack([c, -s, cx - c * cx + s * cy], -1),
                               torch.stack([s, c, cy - s * cx - c * cy], -1)], 1)
            theta = torch.where(sel[:, None, None], rot, theta)
        elif name in ("shear_x", "shear_y", "translate_x", "translate_y"):
            if name.startswith("shear"):
                amount = float_parameter(level, 0.3) * sign
            else:
                amount = int_parameter(level, (w if name.endswith("x") else h) / 3) * sign
            row, col = {"shear_x": (0, 1), "shear_y": (1, 0), "translate_x": (0, 2), "translate_y": (1, 2)}[name]
            upd = theta.clone()
            upd[:, row, col] = amount
            theta = torch.where(sel[:, None, None], upd, theta)
    return theta


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear warp with black fill: ``out(p) = x(theta @ [p, 1])``, pixel centres at ``i + 0.5``."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=torch.float64) + 0.5
    xs = torch.arange(w, device=x.device, dtype=torch.float64) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, h * w, 3)
    src = pts @ theta.transpose(1, 2)  # (B, HW, 2) in pixel coordinates
    norm = torch.stack([2 * src[..., 0] / w - 1, 2 * src[..., 1] / h - 1], -1).reshape(b, h, w, 2)
    return F.grid_sample(x, norm.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) * (255.0 / torch.where(span > 0, span, 1.0)), x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's equalize per channel (histogram of the values rounded to 0..255)."""
    b, c, h, w = x.shape
    v = x.round().clamp(0, 255).long().reshape(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device, dtype=torch.float64).scatter_add_(
        1, v, torch.ones_like(v, dtype=torch.float64))
    last = hist.gather(1, v.amax(dim=1, keepdim=True))
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    cum = torch.cumsum(hist, 1) - hist  # exclusive
    safe = torch.where(step > 0, step, 1.0)
    lut = torch.div(torch.div(step, 2, rounding_mode="floor") + cum, safe, rounding_mode="floor").clamp(max=255)
    out = lut.gather(1, v).to(x.dtype).reshape(b, c, h, w)
    return torch.where((step > 0).reshape(b, c, 1, 1), out, x)


def _posterize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    shift = 4 + int_parameter(level, 4)  # dropped low bits: 8 - (4 - int(level * 4 / 10))
    q = torch.pow(2.0, shift).to(x.dtype).view(-1, 1, 1, 1)
    return torch.floor(x.clamp(0, 255).floor() / q) * q


def _solarize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    thr = (256 - int_parameter(level, 256)).to(x.dtype).view(-1, 1, 1, 1)
    return torch.where(x >= thr, 255.0 - x, x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * wts).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    factor = (float_parameter(level, 1.8) + 0.1).to(x.dtype).view(-1, 1, 1, 1)
    return (degenerate + factor * (x - degenerate)).clamp(0, 255)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    k = (k / 13).expand(x.shape[1], 1, 3, 3)
    inner = F.conv2d(x, k, groups=x.shape[1])
    return F.pad(inner, (1, 1, 1, 1)) + x * F.pad(torch.zeros_like(inner), (1, 1, 1, 1), value=1.0)


def _color_op(name: str, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    if name == "autocontrast":
        return _autocontrast(x)
    if name == "equalize":
        return _equalize(x)
    if name == "posterize":
        return _posterize(x, level)
    if name == "solarize":
        return _solarize(x, level)
    if name == "color":
        return _blend(_gray(x).expand_as(x), x, level)
    if name == "contrast":
        return _blend(_gray(x).mean(dim=(-3, -2, -1), keepdim=True).expand_as(x), x, level)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, level)
    if name == "sharpness":
        return _blend(_smooth(x), x, level)
    raise ValueError(f"unknown op {name!r}")


def apply_ops(x: torch.Tensor, names: tuple[str, ...], params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply op ``names[params['op'][i]]`` to image ``i`` of ``x`` ``(B, C, H, W)`` (float, 0..255 scale).

    Returns a new float tensor of the same shape; every image gets exactly one op. Images are grouped
    by op and each op runs only on its own group (the grouping reads ``params['op']`` on the host: no
    device sync when, as sampled by :func:`sample_op_params`, it lives on the CPU).
    """
    op_host = params["op"].detach().cpu().long()
    if op_host.numel() and (int(op_host.min()) < 0 or int(op_host.max()) >= len(names)):
        raise ValueError(f"params['op'] must index the {len(names)} ops, got values in [{int(op_host.min())}, {int(op_host.max())}]")
    level = params["level"].to(x.device)
    negate = params["negate"].to(x.device)
    _, _, h, w = x.shape
    out = torch.empty_like(x)
    geo = [k for k, name in enumerate(names) if name in _GEOMETRIC]
    if geo:
        rows = torch.isin(op_host, torch.tensor(geo)).nonzero().flatten()
        if rows.numel():
            i = rows.to(x.device)
            theta = _affine_matrices(names, params["op"].to(x.device)[i], level[i], negate[i], h, w)
            out.index_copy_(0, i, _warp(x[i], theta))
    for k, name in enumerate(names):
        if name in _GEOMETRIC:
            continue
        rows = (op_host == k).nonzero().flatten()
        if rows.numel():
            i = rows.to(x.device)
            out.index_copy_(0, i, _color_op(name, x[i], level[i]))
    return out
