"""The faster batched corruption code against the implementations it replaced, kept here as oracles.

Exact where the rewrite only reorders work (same operations on the same values); within float rounding
where an FFT or a different summation order replaced a direct computation.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from conftest import natural_images
from PIL import Image

from aprkit.corruptions import digital, noise, spatter, weather
from aprkit.corruptions._common import filter2d, finish, gaussian_kernel1d, pad2d, pad_index
from aprkit.corruptions._random import ItemKeys, poisson_levels, uniform
from aprkit.corruptions._separable import gaussian_filter
from aprkit.corruptions.severity import params

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- dispatcher and noise
def test_finish_matches_clamp_then_truncate() -> None:
    """uint8 results are truncated, as the scripts that made the published -C sets store np.uint8(result) (they were
    rounded: half a level brighter on average, one level off in about half of all values; corruption reviewer), with
    5e-5 of a level for float32 error below a whole number: an unchanged level k / 255 stays k."""
    y = torch.cat([torch.rand(5000, generator=_gen()) * 1.6 - 0.3, (torch.arange(256) + 0.5) / 255,
                   torch.arange(256) / 255.0])
    old = ((y.clamp(0, 1) * 255) + 5e-5).floor().clamp(0, 255).to(torch.uint8)
    assert torch.equal(finish(torch.arange(256) / 255.0, torch.uint8), torch.arange(256).to(torch.uint8))
    assert torch.equal(finish(y, torch.uint8), old)
    out = torch.empty_like(old)
    assert finish(y, torch.uint8, out=out) is out and torch.equal(out, old)
    assert torch.equal(finish(y, torch.float32), y.clamp(0, 1))


def test_finish_blocks_and_strides() -> None:
    """The CPU int32 blocks: more values than one block (with a partial last one) and a non-contiguous input."""
    y = torch.rand(3, 5, 300, 70, generator=_gen(4)) * 1.4 - 0.2  # 315,000 values: two blocks of 2^18
    for src in (y, y.transpose(-1, -2), y[:, ::2]):
        old = (src.clamp(0, 1) * 255 + 5e-5).floor().clamp(0, 255).to(torch.uint8)
        assert torch.equal(finish(src, torch.uint8), old)
        out = torch.empty(old.shape, dtype=torch.uint8)
        assert finish(src, torch.uint8, out=out) is out and torch.equal(out, old)


def _old_poisson_from_levels(v: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """The guide-table sampler (bins = 2 * k_max) this module used before."""
    k_max = int(c + 12 * math.sqrt(c) + 12)
    lam = torch.arange(256, dtype=torch.float64)[:, None] * (c / 255.0)
    k = torch.arange(k_max, dtype=torch.float64)[None, :]
    logpmf = k * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(k + 1)
    pmf = torch.where(lam > 0, logpmf.exp(), (k == 0).to(torch.float64))
    cdf = pmf.cumsum(dim=1).clamp_max(1.0)
    cdf[:, -1] = 1.0
    bins = 2 * k_max
    edges = torch.arange(bins, dtype=torch.float64) / bins
    guide = torch.searchsorted(cdf, edges.expand(256, bins).contiguous(), side="left").flatten()
    flat_cdf = cdf.flatten()
    u = torch.rand(v.shape, generator=generator, dtype=torch.float64).flatten()
    vf = v.flatten().long()
    row = vf * k_max
    idx = row + guide.index_select(0, vf * bins + (u * bins).long().clamp_max(bins - 1))
    while True:
        behind = flat_cdf.index_select(0, idx) < u
        if not bool(behind.any()):
            break
        idx = idx + behind.long()
    return (idx - row).reshape(v.shape).to(torch.float32)


@pytest.mark.parametrize("c", [3.0, 12.0, 60.0, 500.0])
def test_shot_noise_bin_table_equals_guide_table(c: float) -> None:
    v = torch.randint(0, 256, (3, 3, 40, 50), generator=_gen(1), dtype=torch.int32)
    v[0, 0, :2] = 0
    v[0, 0, 2:4] = 255
    ours = poisson_levels(v, c, _gen(7))
    assert torch.equal(ours, _old_poisson_from_levels(v, c, _gen(7)))


@pytest.mark.parametrize("c", [3.0, 12.0, 60.0, 500.0])  # int8 tables up to k_max 127, int16 above
def test_shot_noise_item_keys_invert_the_uniforms(c: float) -> None:
    """With per-image keys the bins come from the raw half-words (no float64 uniforms but where the table leaves a
    search): the counts are still the first k with ``u <= cdf[v, k]`` at ``uniform``'s own float64 ``u``."""
    v = torch.randint(0, 256, (2, 3, 40, 50), generator=_gen(2), dtype=torch.int32)
    v[0, 0, :2] = 0
    v[0, 0, 2:4] = 255
    keys = torch.tensor([5, 2**62 + 9])
    ours = poisson_levels(v, c, ItemKeys(keys))
    u = uniform(v.shape, 0.0, 1.0, ItemKeys(keys), v.device, torch.float64).flatten()
    k_max = int(c + 12 * math.sqrt(c) + 12)
    lam = torch.arange(256, dtype=torch.float64)[:, None] * (c / 255.0)
    k = torch.arange(k_max, dtype=torch.float64)[None, :]
    pmf = torch.where(lam > 0, (k * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(k + 1)).exp(),
                      (k == 0).to(torch.float64))
    cdf = pmf.cumsum(dim=1).clamp_max(1.0)
    cdf[:, -1] = 1.0
    ref = torch.searchsorted(cdf[v.flatten().long()], u[:, None], side="left").squeeze(1)
    assert torch.equal(ours.flatten(), ref.to(torch.float32))


def test_impulse_noise_masks_equal_masked_fill() -> None:
    x = natural_images(3, 32, seed=2).float() / 255
    u = uniform(x.shape, 0.0, 1.0, _gen(3), x.device, x.dtype)
    old = x.masked_fill(u < 0.09, 0.0).masked_fill_(u < 0.045, 1.0)
    assert torch.equal(noise.impulse_noise(x, 0.09, _gen(3)), old)


# ----------------------------------------------------------------------------- filters
def _direct_axis(x: torch.Tensor, sigma: float, dim: int, mode: str, truncate: float = 4.0) -> torch.Tensor:
    """The direct 1-D Gaussian correlation along ``dim``: one multiply-add per tap, in tap order."""
    w, r = gaussian_kernel1d(sigma, truncate)
    n = x.shape[dim]
    xp = x.index_select(dim, pad_index(n, r, r, mode, x.device))
    out = xp.narrow(dim, 0, n) * w[0]
    for i in range(1, 2 * r + 1):
        out.add_(xp.narrow(dim, i, n), alpha=w[i])
    return out


def _direct_gaussian(x: torch.Tensor, sigma: float, mode: str, truncate: float = 4.0) -> torch.Tensor:
    return _direct_axis(_direct_axis(x, sigma, -2, mode, truncate), sigma, -1, mode, truncate)


_SCIPY_MODE = {"replicate": "nearest", "symmetric": "reflect", "reflect101": "mirror"}


@pytest.mark.parametrize("mode", ["replicate", "symmetric", "reflect101"])
@pytest.mark.parametrize("planes", [1, 3, 4])
def test_gaussian_filter_matches_scipy(mode: str, planes: int) -> None:
    """Banded windows (several per axis, a partial last one, radius above the window) and dense operators
    (radius 32 and more, also beyond the image) against ``scipy.ndimage.gaussian_filter``."""
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        x = torch.rand(planes, 1, 37, 75, generator=_gen(planes), dtype=dtype)
        for sigma, truncate in ((1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (6.0, 4.0), (12.0, 4.0), (19.5, 3.0),
                                (170.8, 3.0)):
            ref = ndi.gaussian_filter(x.double().numpy(), (0, 0, sigma, sigma), mode=_SCIPY_MODE[mode],
                                      truncate=truncate)
            ours = gaussian_filter(x, sigma, mode, truncate)
            assert ours.shape == x.shape and ours.dtype == dtype
            assert np.abs(ours.double().numpy() - ref).max() < tol, (dtype, sigma)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 2.44])
def test_banded_gaussian_equals_direct_filter(sigma: float) -> None:
    """Radius up to 8 (the corruptions' short kernels): the banded products add the taps in the direct loop's
    order (the band's zeros add exact zeros), so the values agree to the last bits or exactly."""
    x = torch.rand(3, 2, 50, 70, generator=_gen(11))
    assert (gaussian_filter(x, sigma, "symmetric") - _direct_gaussian(x, sigma, "symmetric")).abs().max() < 1e-6


@pytest.mark.parametrize("sigma", [2.0, 6.0, 60.0])
def test_gaussian_filter_planes_do_not_depend_on_the_batch(sigma: float) -> None:
    x = torch.rand(5, 3, 40, 45, generator=_gen(12))
    whole = gaussian_filter(x, sigma, "replicate")
    assert torch.equal(whole[2:3], gaussian_filter(x[2:3], sigma, "replicate"))
    assert torch.equal(whole[1, 1], gaussian_filter(x[1, 1], sigma, "replicate"))


def test_fft_filter2d_non_symmetric_kernel_matches_scipy() -> None:
    x = torch.rand(3, 2, 30, 41, generator=_gen(5), dtype=torch.float64)
    kernel = torch.rand(9, 11, generator=_gen(6), dtype=torch.float64)  # 99 taps: FFT path, complex spectrum
    ours = filter2d(x, kernel, "reflect101")
    ref = ndi.correlate(x.numpy(), kernel.numpy()[None, None], mode="mirror")
    assert np.abs(ours.numpy() - ref).max() < 1e-12


def test_pad2d_native_paths_equal_index_padding() -> None:
    from aprkit.corruptions._common import pad_index, select

    x = torch.rand(2, 3, 9, 7, generator=_gen(8))
    for mode in ("replicate", "reflect101"):
        for p in (1, 4):
            ref = select(x.index_select(-2, pad_index(9, p, p, mode, x.device)), -1, pad_index(7, p, p, mode, x.device))
            assert torch.equal(pad2d(x, p, p, mode), ref)
    assert torch.equal(pad2d(x, 12, 12, "reflect101"), select(x.index_select(-2, pad_index(9, 12, 12, "reflect101",
                       x.device)), -1, pad_index(7, 12, 12, "reflect101", x.device)))


def _old_resize_box(x255: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    h, w = x255.shape[-2:]
    if ow != w:
        x255 = torch.einsum("bchw,ow->bcho", x255, torch.from_numpy(digital._box_weights(w, ow)).to(x255.dtype))
    if oh != h:
        x255 = torch.einsum("bchw,oh->bcow", x255, torch.from_numpy(digital._box_weights(h, oh)).to(x255.dtype))
    return x255


@pytest.mark.parametrize("size", [32, 64, 224])
def test_pixelate_taps_equal_box_matrices(size: int) -> None:
    """Float (unquantised) BOX resizes: the tap sums equal the dense resampling matrices."""
    x = natural_images(2, size, seed=3).float() / 255 * 255
    for c in (0.95, 0.6, 0.4, 0.25):
        n = int(size * c)
        down = digital._resize_box(x, n, n, False)
        assert (down - _old_resize_box(x, n, n)).abs().max() < 1e-3
        assert (digital._resize_box(down, size, size, False) - _old_resize_box(down, size, size)).abs().max() < 1e-3


def _pillow_pixelate(u8: torch.Tensor, c: float) -> torch.Tensor:
    h, w = u8.shape[-2:]
    out = []
    for img in u8.permute(0, 2, 3, 1).numpy():
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        im = im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
        out.append(np.asarray(im).reshape(img.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 224, 224), (1, 64, 71), (3, 100, 100)])
def test_pixelate_emulation_equals_pillow_bit_for_bit(shape: tuple[int, int, int]) -> None:
    """``_resize_box(quantize=True)`` (the path off the CPU and for the float route) reproduces Pillow's 8-bit
    fixed-point BOX resampling exactly, ties included (2- and 4-input means round up, 10-input means down),
    for every preset factor and odd ones; the CPU uint8 path is Pillow itself."""
    ch, h, w = shape
    noise = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(h), dtype=torch.uint8)
    x = torch.cat([natural_images(2, max(h, w), channels=ch, seed=5)[..., :h, :w], noise])
    for c in (0.95, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.13, 0.1):
        ref = _pillow_pixelate(x, c)
        small = digital._resize_box(x.float(), int(h * c), int(w * c), True)
        assert torch.equal(digital._resize_box(small, h, w, True).to(torch.uint8), ref), c
        small8 = small.to(torch.uint8)  # enlarging copies bytes: the gathers that pixelate_bytes runs
        assert torch.equal(digital._box_axis(digital._box_axis(small8, -1, w), -2, h), ref), c
        assert torch.equal(digital.pixelate_bytes(x, c), ref), c
        assert torch.equal(finish(digital.pixelate(x.float() / 255, c, quantize=True), torch.uint8), ref), c


# ----------------------------------------------------------------------------- spatter's OpenCV steps
def _old_canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    h, w = img.shape[-2:]
    p = pad2d(img, 1, 1, "replicate")
    dx, dy = p[..., 2:] - p[..., :-2], p[..., 2:, :] - p[..., :-2, :]
    gx = dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]
    gy = dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    tg22x = ax * spatter._TG22
    horiz = ay * 32768 < tg22x
    vert = ~horiz & (ay * 32768 > tg22x + ax * 65536)
    m = F.pad(mag, (1, 1, 1, 1))

    def nb(oy: int, ox: int) -> torch.Tensor:
        return m[..., 1 + oy:1 + oy + h, 1 + ox:1 + ox + w]

    same = (gx < 0) == (gy < 0)
    d1 = torch.where(same, nb(-1, -1), nb(-1, 1))
    d2 = torch.where(same, nb(1, 1), nb(1, -1))
    nms = torch.where(horiz, (mag > nb(0, -1)) & (mag >= nb(0, 1)),
                      torch.where(vert, (mag > nb(-1, 0)) & (mag >= nb(1, 0)), (mag > d1) & (mag > d2)))
    cand = nms & (mag > low)
    edges = cand & (mag > high)
    while True:
        grown = cand & spatter._dilate3(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _liquid_layers(n: int) -> list[torch.Tensor]:
    g = _gen(9)
    out = []
    for t in range(n):
        liquid = gaussian_filter(torch.randn(2, 1, 48 + 7 * t, 64, generator=g) * 0.3 + 0.65, 1.0 + t % 3)
        out.append(torch.floor((liquid * (liquid >= 0.68) * 255).clamp(0, 255)))
        out.append(torch.randint(0, 256, (2, 1, 30, 45 + t), generator=g).float())
    return out


def test_canny_int16_equals_float_version() -> None:
    for img in _liquid_layers(6):
        assert torch.equal(spatter.canny(img, 50, 150), _old_canny(img, 50, 150))


def _raster_chamfer(edges: np.ndarray, limit: int) -> np.ndarray:
    """The two-pass 5x5 chamfer scan (costs 1, 1.4, 2.1969) that ``cv2.distanceTransform(DIST_L2, 5)`` runs,
    written out with Python loops in float64, truncated at ``limit``."""
    a, b, c = 1.0, 1.4, 2.1969
    fwd = [(0, -1, a), (-1, 0, a), (-1, -1, b), (-1, 1, b), (-1, -2, c), (-1, 2, c), (-2, -1, c), (-2, 1, c)]
    h, w = edges.shape
    d = np.where(edges, 0.0, np.inf)
    for order, steps in ((1, fwd), (-1, [(-dy, -dx, v) for dy, dx, v in fwd])):
        for y in range(h)[::order]:
            for x in range(w)[::order]:
                for dy, dx, v in steps:
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        d[y, x] = min(d[y, x], d[y + dy, x + dx] + v)
    return np.minimum(d, limit)


def test_truncated_distance_is_the_5x5_chamfer_scan() -> None:
    g = torch.Generator().manual_seed(3)
    for shape, p in (((40, 37), 0.995), ((23, 31), 0.97), ((9, 50), 0.9)):
        edges = torch.rand(2, 1, *shape, generator=g) > p
        ours = spatter.truncated_distance(edges, 20)
        for i in range(2):
            assert np.abs(ours[i, 0].numpy() - _raster_chamfer(edges[i, 0].numpy(), 20)).max() < 1e-4
    assert torch.equal(spatter.truncated_distance(torch.zeros(1, 1, 8, 8, dtype=torch.bool)), torch.full((1, 1, 8, 8), 20.0))
    one = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    one[..., 0, 0] = True
    assert spatter.truncated_distance(one, 20)[0, 0, 1:3, 1:3].flatten().tolist() == pytest.approx([1.4, 2.1969, 2.1969, 2.8])


def test_truncated_distance_matches_cv2_distance_transform() -> None:
    """The scripts' ``cv2.distanceTransform(255 - canny, cv2.DIST_L2, 5)`` truncated at 20, on the Canny maps of
    liquid layers (OpenCV sums its float32 steps in scan order: a few units of the last place apart)."""
    cv2 = pytest.importorskip("cv2")
    for img in _liquid_layers(4):
        edges = spatter.canny(img, 50, 150)
        ours = spatter.truncated_distance(edges, 20)
        for i in range(edges.shape[0]):
            e8 = edges[i, 0].numpy().astype(np.uint8) * 255
            _, ref = cv2.threshold(cv2.distanceTransform(255 - e8, cv2.DIST_L2, 5), 20, 20, cv2.THRESH_TRUNC)
            assert np.abs(ours[i, 0].numpy() - ref).max() < 1e-4


def _script_water_spatter(x: np.ndarray, layer: np.ndarray, c: tuple) -> np.ndarray:
    """``make_imagenet_c.py``'s water spatter (float, 0-255) of one HWC float image in [0, 1], from the blurred
    liquid ``layer``: the scripts' OpenCV calls (the channel order follows aprkit's RGB colour)."""
    import cv2

    layer = layer.copy()
    layer[layer < c[3]] = 0
    l8 = (layer * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(l8, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    m = l8 * dist
    m = m / m.max() * c[4]
    colour = np.array([175, 238, 238]) / 255.0
    return np.clip(x + m[..., None] * colour, 0, 1) * 255


@pytest.mark.parametrize("preset,size", [("imagenet", 224), ("cifar", 32)])
def test_water_spatter_follows_the_scripts_opencv_pipeline(preset: str, size: int) -> None:
    """Water spatter against the scripts' OpenCV calls from the same blurred liquid layer (the Gaussian filter is
    checked against SciPy's on its own: float32 against float64 can put a value on the other side of the threshold):
    within one level (the exact Euclidean distance it had before moved 224-px severities 1-3 by up to 36 levels)."""
    pytest.importorskip("cv2")
    from aprkit.corruptions._random import normal

    x = natural_images(2, size, seed=5).float().div(255)
    for sev in range(1, 6):
        c = params("spatter", sev, preset)
        if c[5] != 0:
            continue
        ours = spatter.spatter(x, c, _gen(40 + sev)).clamp(0, 1).mul(255).numpy()
        liquid = normal((2, 1, size, size), c[0], c[1], _gen(40 + sev), torch.device("cpu"))
        liquid = gaussian_filter(liquid, float(c[2]), "replicate").numpy()  # the draws spatter() blurs first
        for i in range(2):
            ref = _script_water_spatter(x[i].permute(1, 2, 0).numpy(), liquid[i, 0], c)
            assert np.abs(ours[i].transpose(1, 2, 0) - ref).max() <= 1.0, (preset, sev, i)


def test_first_box_blur_truncates_like_cv2_blur() -> None:
    """``cv2.blur`` on float32 sums in double and scales by 1/9 before the script's uint8 cast: flat distances 3, 6,
    7, 12, 14 and 19 stay themselves (float32 products with 1/9 gave 2.9999998, truncated to 2), and every level is
    that of a float64 sum."""
    flat = torch.tensor([3.0, 6.0, 7.0, 12.0, 14.0, 19.0]).view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous()
    assert torch.equal(spatter.box_blur_levels(flat), flat)
    d = torch.randint(0, 401, (2, 1, 24, 20), generator=_gen(12)).float().sqrt().clamp_max(20.0)  # as distances are
    pad = np.pad(d.double().numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")  # reflect-101
    sums = sum(pad[..., i:i + 24, j:j + 20] for i in range(3) for j in range(3))
    assert np.array_equal(spatter.box_blur_levels(d).numpy(), np.floor((sums * (1 / 9)).astype(np.float32)))


def test_equalize_hist_equals_scatter_version() -> None:
    img = torch.randint(0, 21, (3, 1, 40, 30), generator=_gen(4)).float()
    img[2] = 7.0  # a constant image
    b = img.shape[0]
    flat = img.reshape(b, -1).long().clamp(0, 255)
    hist = torch.zeros(b, 256, dtype=torch.float64).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    first = (hist > 0).float().argmax(dim=1, keepdim=True)
    h_first = hist.gather(1, first)
    lut = torch.round((hist.cumsum(1) - h_first) * (255.0 / (flat.shape[1] - h_first).clamp_min(1))).clamp(0, 255)
    lut = torch.where(torch.arange(256)[None] <= first, torch.zeros_like(lut), lut)
    lut = torch.where(h_first == flat.shape[1], first.to(lut.dtype).expand_as(lut), lut)
    assert torch.equal(spatter.equalize_hist(img), lut.gather(1, flat).reshape(img.shape).to(img.dtype))


# ----------------------------------------------------------------------------- colour, weather, geometry
def _grey_heavy_images() -> torch.Tensor:
    g = _gen(10)
    x = torch.randint(0, 256, (3, 3, 24, 24), generator=g, dtype=torch.uint8)
    x[:, 1:, :8] = x[:, :1, :8]  # grey rows
    x[:, :, 16:] = 0  # black rows
    return x.float() / 255


def test_brightness_and_saturate_equal_where_versions() -> None:
    x = _grey_heavy_images()
    for c in (0.1, 0.5):
        v = x.amax(dim=1, keepdim=True)
        v2 = (v + c).clamp(0, 1)
        old = torch.where(v > 0, x * (v2 / torch.where(v > 0, v, torch.ones_like(v))), v2.expand_as(x))
        assert torch.equal(digital.brightness(x, c), old)
    for c in ((0.3, 0.0), (2.0, 0.0), (20.0, 0.2)):
        v = x.amax(dim=1, keepdim=True)
        delta = v - x.amin(dim=1, keepdim=True)
        s2 = ((delta / torch.where(v > 0, v, torch.ones_like(v))) * c[0] + c[1]).clamp(0, 1)
        colour = v - s2 * v * (v - x) / torch.where(delta > 0, delta, torch.ones_like(delta))
        gs = min(max(c[1], 0.0), 1.0)
        old = torch.where(delta > 0, colour, torch.cat([v, v * (1 - gs), v * (1 - gs)], dim=1))
        assert torch.equal(digital.saturate(x, c), old)


def _old_plasma(batch: int, mapsize: int, wibbledecay: float, generator) -> torch.Tensor:
    m = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64)
    noise_ = uniform((batch, mapsize * mapsize - 1), -1.0, 1.0, generator, m.device, torch.float64)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        nonlocal used
        n = a.shape[1] * a.shape[2]
        r = noise_[:, used:used + n].view(a.shape)
        used += n
        return a / 4 + (wibble * wibble) * r

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half::step, half::step] = wibbled(sq)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2))
        m[:, half::step, 0::step] = wibbled(dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1))
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("mapsize", [32, 256])
def test_plasma_in_place_equals_old(mapsize: int) -> None:
    assert torch.equal(weather.plasma_fractal(3, mapsize, 1.7, _gen(11)), _old_plasma(3, mapsize, 1.7, _gen(11)))
    seeds = [5, 6]
    assert torch.equal(weather.plasma_fractal(2, mapsize, 2.0, ItemKeys(seeds)),
                       _old_plasma(2, mapsize, 2.0, ItemKeys(seeds)))


def _old_elastic(x: torch.Tensor, c: tuple, generator) -> torch.Tensor:
    b, _, h, w = x.shape
    alpha, sigma, jitter = (float(v) for v in c)
    cy, cx, sq = float(h // 2), float(w // 2), float(min(h, w) // 3)
    pts1 = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=torch.float64)
    pts2 = pts1 + uniform((b, 3, 2), -jitter, jitter, generator, x.device, torch.float64)
    a = torch.cat([pts2, torch.ones(b, 3, 1, dtype=torch.float64)], dim=2)
    inv = torch.linalg.solve(a, pts1.expand(b, 3, 2))
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1).reshape(1, -1, 3)
    src = (grid @ inv).reshape(b, h, w, 2)
    norm = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=torch.float64)
    warped = F.grid_sample(x, (src * norm - 1).to(x.dtype), mode="bilinear", padding_mode="reflection",
                           align_corners=True)

    def smooth(u: torch.Tensor) -> torch.Tensor:  # the direct two-pass filter
        return _direct_gaussian(u, sigma, "symmetric", 3.0)

    dx = smooth(uniform((b, h, w), -1.0, 1.0, generator, x.device, x.dtype))
    dy = smooth(uniform((b, h, w), -1.0, 1.0, generator, x.device, x.dtype))
    gx = ((xx[None] + dx * alpha + 0.5) * (2.0 / w) - 1).to(x.dtype)
    gy = ((yy[None] + dy * alpha + 0.5) * (2.0 / h) - 1).to(x.dtype)
    return F.grid_sample(warped, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="reflection",
                         align_corners=False)


@pytest.mark.parametrize("size", [32, 224])
def test_elastic_grids_match_old_within_rounding(size: int) -> None:
    from aprkit.corruptions import PARAMS

    x = natural_images(2, size, seed=12).float() / 255
    preset = "cifar" if size == 32 else "imagenet"
    for s in (1, 3, 5):
        c = PARAMS[preset]["elastic_transform"][s - 1]
        ours, old = digital.elastic_transform(x, c, _gen(s)), _old_elastic(x, c, _gen(s))
        assert (ours - old).abs().max() < 2e-4, s


def test_frost_window_copies_equal_advanced_indexing() -> None:
    from aprkit.corruptions._frost import frost_textures

    try:
        textures = frost_textures(1.0, (224, 224))
    except FileNotFoundError:
        pytest.skip("frost textures not installed")
    x = natural_images(4, 224, seed=13).float() / 255
    c = (0.7, 0.7)
    b, _, h, w = x.shape
    g = _gen(14)
    idx = torch.randint(0, 5, (b,), generator=g)
    starts = torch.rand(b, 2, generator=g)
    layer = torch.empty_like(x)
    for k, tex in enumerate(textures):
        sel = (idx == k).nonzero().flatten()
        if sel.numel():
            r0 = (starts[sel, 0] * (tex.shape[1] - h)).long().clamp_max(tex.shape[1] - h - 1)
            c0 = (starts[sel, 1] * (tex.shape[2] - w)).long().clamp_max(tex.shape[2] - w - 1)
            crops = tex[:, (r0[:, None] + torch.arange(h))[:, :, None], (c0[:, None] + torch.arange(w))[:, None, :]]
            layer[sel] = crops.permute(1, 0, 2, 3).to(x.dtype) / 255.0
    assert torch.equal(weather.frost(x, c, _gen(14), scale=1.0), c[0] * x + c[1] * layer)


def test_jpeg_equals_per_image_pillow_round_trip() -> None:
    for x in (natural_images(3, 40, seed=15), natural_images(2, 33, seed=16)[:, :1]):
        xf = x.float() / 255
        ours = digital.jpeg_compression(xf, 15)
        for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
            buf = io.BytesIO()
            gray = img.shape[-1] == 1
            Image.fromarray(img[..., 0] if gray else img, "L" if gray else "RGB").save(buf, "JPEG", quality=15)
            ref = np.array(Image.open(io.BytesIO(buf.getvalue()))).reshape(img.shape)
            assert torch.equal(ours[i], torch.from_numpy(ref).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "glass_blur", "motion_blur", "snow", "spatter",
                                  "elastic_transform", "pixelate", "shot_noise"])
def test_224px_paths_independent_of_the_batch(name: str) -> None:
    """The FFT filters pair planes only within an image, the motion blur loops per image: an image's result
    is the same alone as in a batch (the 32-px invariance tests do not reach these paths)."""
    from aprkit.corruptions import corrupt, item_seeds

    x = natural_images(3, 224, seed=18)
    seeds = item_seeds(0, name, 5, "imagenet", torch.arange(3))
    whole = corrupt(x, name, 5, "imagenet", seeds=seeds)
    alone = torch.cat([corrupt(x[i:i + 1], name, 5, "imagenet", seeds=seeds[i:i + 1]) for i in range(3)])
    assert torch.equal(whole, alone)


def test_motion_line_direct_equals_fft_path() -> None:
    """Large images: shifted slices on the CPU, the previous FFT correlation on accelerators; they agree."""
    from aprkit.corruptions.blur import _line_direct, _line_fft

    x = torch.rand(3, 3, 80, 70, generator=_gen(19), dtype=torch.float64)
    i = torch.arange(25, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * 8.0**2))
    k = k / k.sum()
    a = torch.deg2rad(torch.tensor([30.0, -100.0, 5.0], dtype=torch.float64))[:, None]
    ox, oy = torch.ceil(i * torch.cos(a) - 0.5).long(), torch.ceil(i * torch.sin(a) - 0.5).long()
    assert (_line_direct(x, k, ox, oy, 25) - _line_fft(x, k, ox, oy, 25)).abs().max() < 1e-12


@pytest.mark.filterwarnings("ignore::aprkit.corruptions.PresetSizeWarning")  # imagenet pixelate on 48-px images
def test_uint8_shortcuts_equal_the_float_path() -> None:
    """uint8 batches skip the float round trip (JPEG, pixelate, impulse noise on bytes, shot noise on levels):
    the same results."""
    from aprkit.corruptions import PARAMS, corrupt, item_seeds

    x = natural_images(3, 48, seed=20)
    for s in (1, 5):
        ours = corrupt(x, "jpeg_compression", s, "tinyimagenet")
        assert ours.dtype == torch.uint8 and ours.is_contiguous()
        assert torch.equal(ours, finish(corrupt(x.float() / 255, "jpeg_compression", s, "tinyimagenet"), torch.uint8))
        xf = x.float() / 255
        assert torch.equal(corrupt(x, "pixelate", s, "imagenet"),
                           finish(digital.pixelate(xf, PARAMS["imagenet"]["pixelate"][s - 1], quantize=True), torch.uint8))
        seeds = item_seeds(1, "impulse_noise", s, "tinyimagenet", torch.arange(3))
        assert torch.equal(corrupt(x, "impulse_noise", s, "tinyimagenet", seeds=seeds),
                           finish(corrupt(xf, "impulse_noise", s, "tinyimagenet", seeds=seeds), torch.uint8))
        assert torch.equal(corrupt(x, "impulse_noise", s, "tinyimagenet", _gen(s)),
                           finish(corrupt(xf, "impulse_noise", s, "tinyimagenet", _gen(s)), torch.uint8))
        seeds = item_seeds(1, "shot_noise", s, "tinyimagenet", torch.arange(3))
        on_levels = noise.shot_noise(x, 25.0, ItemKeys(seeds), levels=True)
        assert torch.equal(on_levels, noise.shot_noise(x.float() / 255, 25.0, ItemKeys(seeds), levels=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mask_equals_torch_comparisons(dtype: torch.dtype) -> None:
    """``mask`` (NumPy on the CPU) gives torch's own comparisons, also for values next to the threshold rounded to
    the tensor's dtype and for thresholds that are not representable in it."""
    from aprkit.corruptions._common import mask

    for c in (0.7, 0.69, 0.045, 1 / 3, 0.0, 0.8):
        ct = torch.tensor(c, dtype=dtype)
        near = torch.stack([torch.nextafter(ct, torch.tensor(-1.0, dtype=dtype)), ct,
                            torch.nextafter(ct, torch.tensor(2.0, dtype=dtype))])
        t = torch.cat([near, torch.rand(1000, generator=_gen(3), dtype=dtype), torch.tensor([-0.0, 1.0], dtype=dtype)])
        for op, ref in ((">=", t >= c), (">", t > c), ("<", t < c), ("<=", t <= c)):
            got = mask(t, op, c)
            assert got.dtype == torch.uint8 and torch.equal(got.bool(), ref), (c, op)
        assert torch.equal(mask(t[::3], ">=", c).bool(), t[::3] >= c)  # strided input


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_mask_and_positions_equal_torch_on_integers(dtype: torch.dtype) -> None:
    """Integer tensors: ``mask`` and ``positions`` give torch's values for integer, fractional, whole-number float,
    out-of-range and tensor thresholds (torch compares a float threshold in float32, NumPy would truncate it or
    compare exactly), for 0-dim tensors and broadcast tensor operands."""
    from aprkit.corruptions._common import mask, positions

    info = torch.iinfo(dtype)
    t = torch.tensor([info.min, -1 if info.min < 0 else 0, 0, 1, 2, 100, info.max], dtype=dtype)
    cases: list = [0, 1, 0.5, -0.5, 2.0, 1e20, -1e20, float("nan")]
    if dtype in (torch.int32, torch.int64):
        t = torch.cat([t, torch.tensor([16777217], dtype=dtype)])
        cases.append(16777216.0)
    for c in cases:
        for op, fn in ((">=", torch.ge), (">", torch.gt), ("<", torch.lt), ("<=", torch.le)):
            assert torch.equal(mask(t, op, c).bool(), fn(t, c)), (c, op)
            assert torch.equal(positions(t, op, c), fn(t, c).nonzero().flatten()), (c, op)
    other = torch.flip(t, [0])
    assert torch.equal(mask(t, ">", other).bool(), t > other)
    assert torch.equal(mask(t[:, None], "<=", t[None, ::2]).bool(), t[:, None] <= t[None, ::2])
    assert torch.equal(mask(torch.tensor(3, dtype=dtype), ">", 2).bool(), torch.tensor(True))  # 0-dim


def test_tensor_caches_build_outside_inference_mode() -> None:
    """Cached constant tensors (here fft_filter2d's index maps and spectrum) first built inside inference mode are
    ordinary tensors: a later call that autograd records can save them."""
    from aprkit.corruptions._common import _filter_spectrum, circular_size, fft_filter2d

    kernel = tuple(torch.rand(11, 11, generator=_gen(4), dtype=torch.float64).flatten().tolist())
    args = (kernel, 11, 11, circular_size(23, 29, 5, 5), torch.float32, torch.device("cpu"))
    with torch.inference_mode():
        fft_filter2d(torch.rand(1, 3, 23, 29), 5, 5, "reflect101", _filter_spectrum(*args))
    x = torch.rand(1, 3, 23, 29, requires_grad=True)
    fft_filter2d(x, 5, 5, "reflect101", _filter_spectrum(*args)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_finish_maps_nan_to_zero_without_a_warning() -> None:
    from aprkit.corruptions._common import finish

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = finish(torch.tensor([float("nan"), 0.5, 2.0]), torch.uint8)
    assert out.tolist() == [0, 127, 255]


def test_every_corruption_returns_a_new_tensor() -> None:
    """``corrupt`` finishes each function's result in place (``finish(consume=True)``): no function may return its
    input, a view of it or a tensor it keeps (a second call must still give the first call's result)."""
    from aprkit.corruptions import find_frost_dir
    from aprkit.corruptions.api import CORRUPTIONS

    try:
        find_frost_dir()
        names = list(CORRUPTIONS)
    except FileNotFoundError:  # no frost textures here
        names = [n for n in CORRUPTIONS if n != "frost"]
    for size in (32, 224):
        x = natural_images(2, size, seed=9).float() / 255
        before = x.clone()
        for name in names:
            fn, c = CORRUPTIONS[name], params(name, 3, "cifar" if size == 32 else "imagenet")
            opts = {"quantize": False} if name == "pixelate" else {}
            y = fn(x, c, torch.Generator().manual_seed(0), **opts)
            assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr(), name
            first = y.clone()
            y.mul_(0.5)  # what finish(consume=True) may do to it
            assert torch.equal(fn(x, c, torch.Generator().manual_seed(0), **opts), first), name
            assert torch.equal(x, before), name


def test_zoom_factors_are_numpys_arange_to_the_last_bit():
    """make_cifar_c.py's np.arange(1, 1.26, 0.01) ends at 1.2500000000000002, which zooms a 32-px image to 33 px."""
    from aprkit.corruptions.severity import params

    for sev, stop in enumerate([1.06, 1.11, 1.16, 1.21, 1.26], start=1):
        assert params("zoom_blur", sev, "cifar") == tuple(np.arange(1, stop, 0.01).tolist())
    assert params("zoom_blur", 5, "cifar")[-1] == 1.2500000000000002


def test_spatter_liquid_bytes_wrap_as_the_scripts_uint8_cast():
    """(liquid * 255).astype(np.uint8) truncates and wraps values of 256 and more (they had been clamped to 255)."""
    from aprkit.corruptions.spatter import liquid_bytes

    liquid = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.01, 1.5])
    expected = (liquid.numpy().astype(np.float64) * 255).astype(np.int64) % 256
    assert liquid_bytes(liquid).tolist() == expected.astype(float).tolist()
