"""The ``spatter`` corruption (water drops or mud), batched.

The creation scripts build a "liquid" layer (blurred Gaussian noise, cut below a threshold). For
water (``c[5] == 0``) they derive a glossy rim from OpenCV: Canny edges of the layer, a distance
transform truncated at 20, 3x3 box blur, histogram equalisation, an emboss-like 3x3 filter and
another box blur; the normalised product is added in pale turquoise. For mud (``c[5] == 1``) a
blurred mask is pasted in brown.

Each OpenCV step is re-implemented on batched tensors with OpenCV's conventions (Sobel with
replicated borders and L1 gradient magnitude, 4-direction non-maximum suppression and 8-connected
hysteresis — identical edge maps to ``cv2.Canny`` 4.11 on test layers; reflect-101 borders; 8-bit
truncation/rounding where OpenCV stores uint8; the first box blur sums in float64 and scales by 1/9 as
``cv2.blur`` does on float32, so that it truncates to the same levels; the distance transform is the chamfer one of
``cv2.DIST_L2`` with a 5x5 mask, since corruption version 11: the exact Euclidean distance before moved water
severities 1-3 by up to 36 levels at 224 px once equalised and embossed). Like the scripts,
the 8-bit liquid layer wraps values of 256 and more around (their ``astype(np.uint8)``) and the second box blur
rounds to whole levels (``cv2.blur`` of 8-bit input), since corruption version 9.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._tensor_cache import tensor_cache
from ._common import filter2d, mask, pad2d
from ._random import RandomSource, normal
from ._separable import gaussian_filter

__all__ = ["spatter", "canny", "equalize_hist", "truncated_distance", "box_blur_levels", "liquid_bytes"]

_TG22 = 13573  # round(tan(22.5 deg) * 2**15), as in OpenCV's Canny
_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def _dilate3(e: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a 0/1 uint8 ``(..., H, W)`` map (zero outside), as two shifted ORs per axis."""
    r = e.clone()
    r[..., 1:, :] |= e[..., :-1, :]
    r[..., :-1, :] |= e[..., 1:, :]
    out = r.clone()
    out[..., 1:] |= r[..., :-1]
    out[..., :-1] |= r[..., 1:]
    return out


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (aperture 3, L1 magnitude) of 8-bit values ``(B, 1, H, W)`` -> bool.

    Gradients are exact int16 integers; every test is an integer comparison into a 0/1 uint8 map (``mask``: NumPy's
    compare on the CPU), combined with bitwise ``&`` and ``|`` (a byte per value: half the traffic of int16)."""
    h, w = img.shape[-2:]
    p = pad2d(img.to(torch.int16), 1, 1, "replicate")  # exact integers: int16 halves the memory traffic
    dx, dy = p[..., 2:] - p[..., :-2], p[..., 2:, :] - p[..., :-2, :]  # separable Sobel
    gx = dx[..., :-2, :] + dx[..., 2:, :]
    gx += dx[..., 1:-1, :]
    gx += dx[..., 1:-1, :]
    gy = dy[..., :-2] + dy[..., 2:]
    gy += dy[..., 1:-1]
    gy += dy[..., 1:-1]
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay  # at most 2040: every difference below fits in int16
    ax32, ay32 = ax.to(torch.int32), ay.to(torch.int32)  # OpenCV's fixed-point direction tests
    tg22x = ax32 * _TG22
    ay15 = ay32.mul_(32768)
    horiz = mask(tg22x, ">", ay15)  # ay15 < tg22x
    vert = mask(ay15, ">", ax32.mul_(65536).add_(tg22x))  # ay15 > tg67x (>= tg22x): not horiz
    m = F.pad(mag, (1, 1, 1, 1))  # neighbour (dy, dx) of every pixel: m[1 + dy:, 1 + dx:] (0 outside)

    def above(oy: int, ox: int) -> torch.Tensor:  # mag > neighbour (oy, ox)
        return mask(mag, ">", m[..., 1 + oy:1 + oy + h, 1 + ox:1 + ox + w])

    def at_least(oy: int, ox: int) -> torch.Tensor:  # mag >= neighbour (oy, ox)
        return mask(mag, ">=", m[..., 1 + oy:1 + oy + h, 1 + ox:1 + ox + w])

    # non-maximum suppression per direction: horizontal and vertical keep ties on one side; diagonals compare
    # (up, -s) and (down, +s), s = +1 when the signs of gx and gy agree (gx ^ gy has its sign bit clear)
    same = mask(torch.bitwise_xor(gx, gy), ">=", 0)
    diag = torch.bitwise_or(horiz, vert).bitwise_xor_(1)
    nms = horiz & above(0, -1) & at_least(0, 1)
    nms |= vert & above(-1, 0) & at_least(1, 0)
    nms |= diag & same & above(-1, -1) & above(1, 1)
    nms |= diag & same.bitwise_xor_(1) & above(-1, 1) & above(1, -1)
    cand = nms & mask(mag, ">", math.floor(low))  # integers: mag > low <=> mag > floor(low)
    edges = cand & mask(mag, ">", math.floor(high))
    while True:
        grown = cand & _dilate3(edges)
        if torch.equal(grown, edges):
            return edges.view(torch.bool)  # 0/1 bytes are valid bools
        edges = grown


#: ``cv2.DIST_L2`` with a 5x5 mask: the costs of a straight step, a diagonal one and a knight's move
_CHAMFER = (1.0, 1.4, 2.1969)


@tensor_cache(maxsize=8)
def _chamfer_table(limit: int) -> torch.Tensor:
    """``T[k, g]``: the chamfer distance of an offset of ``g`` columns and ``k`` rows (``0 <= g <= limit + 1``,
    ``0 <= k <= limit``), capped at ``limit``: along the straight steps and then the diagonal or knight's moves,
    ``c*lo + a*(hi - 2*lo)`` when ``hi >= 2*lo``, else ``c*(hi - lo) + b*(2*lo - hi)`` (``hi``, ``lo``: the larger
    and the smaller offset), in float64 and then float32."""
    a, b, c = _CHAMFER
    g = torch.arange(limit + 2, dtype=torch.float64)
    k = torch.arange(limit + 1, dtype=torch.float64)[:, None]
    hi, lo = torch.maximum(g, k), torch.minimum(g, k)
    d = torch.where(hi >= 2 * lo, c * lo + a * (hi - 2 * lo), c * (hi - lo) + b * (2 * lo - hi))
    return d.clamp_max_(limit).float()


def truncated_distance(edges: torch.Tensor, limit: int = 20) -> torch.Tensor:
    """``cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5)`` truncated at ``limit``: the chamfer distance
    ``(B, 1, H, W)`` of every pixel to the nearest edge pixel (steps of cost 1, 1.4 and 2.1969), float32.

    The row distance to the nearest edge (capped at ``limit + 1``) comes from running maxima of edge columns from
    both sides; the distance is the smallest ``T[k, row_distance(y +- k)]`` over ``k <= limit`` (``_chamfer_table``;
    larger offsets cost more than ``limit``). The chamfer cost grows with either offset, so the nearest edge of a row
    is the cheapest one in it, and ``T[k]`` of the nearer of rows ``y - k`` and ``y + k`` is the smaller. OpenCV sums
    the steps one by one in a raster scan: its float32 values differ from these by a few units of the last place."""
    h, w = edges.shape[-2:]
    off = limit + 2  # non-edges take column -off: at least limit + 2 from every pixel
    shifted = torch.arange(off, w + off, dtype=torch.int16, device=edges.device).expand(edges.shape)
    e = edges.to(torch.int16)  # the column (edges) or -off, as 0/1 products: cheaper than torch.where on the CPU
    left = (shifted * e).sub_(off).cummax(dim=-1).values  # nearest edge column on each side
    right = (w - 1) - (shifted * e.flip(-1)).sub_(off).cummax(dim=-1).values.flip(-1)
    pos = shifted - off
    g = torch.minimum(pos - left, right - pos).clamp_max_(limit + 1)  # row distance, capped
    gp = F.pad(g.to(torch.int32), (0, 0, limit, limit), value=limit + 1)  # rows outside: no edge within limit
    table = _chamfer_table(limit).to(edges.device)

    def cost(k: int, rows: torch.Tensor) -> torch.Tensor:  # T[k, rows]: index_select of flat int32 indices is
        # several times faster than advanced indexing on the CPU
        return table[k].index_select(0, rows.flatten()).view(rows.shape)

    d = cost(0, gp[..., limit:limit + h, :])
    for k in range(1, limit + 1):
        nearer = torch.minimum(gp[..., limit - k:limit - k + h, :], gp[..., limit + k:limit + k + h, :])
        torch.minimum(d, cost(k, nearer), out=d)
    return d


def box_blur_levels(dist: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(dist, (3, 3)).astype(np.uint8)`` of float32 distances ``(B, 1, H, W)`` in [0, 20] (reflect-101).

    ``cv2.blur`` sums float32 values in double and scales by 1/9; the sums of these distances (multiples of 2^-23
    below 180) are exact in float64, whatever the order (here rows, then columns: 4 additions instead of 9
    multiply-adds), so the truncated levels are OpenCV's. Float32 products with 1/9 made a flat 3 2.9999998,
    truncated to 2 (0.2-1.5 % of the levels at water severities)."""
    p = pad2d(dist.double(), 1, 1, "reflect101")
    rows = p[..., :-2, :] + p[..., 1:-1, :]
    rows += p[..., 2:, :]
    sums = rows[..., :-2] + rows[..., 1:-1]
    sums += rows[..., 2:]
    return sums.mul_(1 / 9).float().floor_()


def equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image of 8-bit values ``(B, 1, H, W)`` (float in, float 0-255 out)."""
    b = img.shape[0]
    flat = img.reshape(b, -1).to(torch.int32).clamp_(0, 255)
    total = flat.shape[1]
    key = flat.add_(torch.arange(0, 256 * b, 256, dtype=torch.int32, device=img.device)[:, None]).flatten()
    hist = torch.bincount(key, minlength=256 * b).reshape(b, 256).to(torch.float64)
    first = (hist > 0).float().argmax(dim=1, keepdim=True)
    h_first = hist.gather(1, first)
    cum = hist.cumsum(1) - h_first
    scale = 255.0 / (total - h_first).clamp_min(1)
    lut = torch.round(cum * scale).clamp(0, 255)
    lut = torch.where(torch.arange(256, device=img.device)[None] <= first, torch.zeros_like(lut), lut)
    lut = torch.where(h_first == total, first.to(lut.dtype).expand_as(lut), lut)
    return lut.to(img.dtype).flatten().index_select(0, key).reshape(img.shape)  # integer levels: exact


def liquid_bytes(liquid: torch.Tensor) -> torch.Tensor:
    """The scripts' ``(liquid * 255).astype(np.uint8)`` of a non-negative layer, as float levels: truncation, and
    values of 256 and more wrap around (as x86 float-to-uint8 casts do)."""
    return torch.mul(liquid, 255).floor_().remainder_(256)


def spatter(x: torch.Tensor, c: tuple, generator: RandomSource = None) -> torch.Tensor:
    """Water (``c[5] == 0``) or mud (``c[5] == 1``) spatter; ``c = (loc, scale, sigma, threshold,
    intensity / mud blur, kind)`` as in the scripts."""
    b, _, h, w = x.shape
    liquid = normal((b, 1, h, w), c[0], c[1], generator, x.device, torch.float32)
    liquid = gaussian_filter(liquid, float(c[2]), "replicate")
    liquid = liquid.mul_(mask(liquid, ">=", c[3]))  # zero below the threshold (torch.where is slow on the CPU)
    if c[5] == 0:
        l8 = liquid_bytes(liquid)
        dist = truncated_distance(canny(l8, 50, 150), 20)
        dist = box_blur_levels(dist)
        dist = equalize_hist(dist)
        dist = filter2d(dist, _EMBOSS, "reflect101").round_().clamp_(0, 255)  # (kernels are read on the host)
        dist = filter2d(dist, torch.full((3, 3), 1 / 9), "reflect101").round_()  # cv2.blur of 8-bit
        # values: whole levels (a sum / 9 is never half-way)
        m = dist.mul_(l8)  # the scripts multiply the 8-bit liquid layer
        mx = m.amax(dim=(2, 3), keepdim=True)
        m = m.div_(mx.clamp_min(1e-12)).mul_(c[4])  # an all-zero layer stays zero
        # m * colour + x, channel by channel: torch's product of a one-channel plane and a (1, 3, 1, 1) colour
        # broadcast over channels is slower than three products with a number (the colour in x's dtype: the same
        # values)
        m = m.to(x.dtype)[:, 0]
        y = torch.empty_like(x)
        for ch, value in enumerate(torch.tensor(_WATER, dtype=x.dtype).tolist()):
            torch.mul(m, value, out=y[:, ch])
        return y.add_(x)
    m = mask(liquid, ">", c[3]).to(torch.float32)
    m = gaussian_filter(m, float(c[4]), "replicate")
    m = m.mul_(mask(m, ">=", 0.8)).to(x.dtype)
    color = torch.tensor(_MUD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x * (1 - m) + color * m
