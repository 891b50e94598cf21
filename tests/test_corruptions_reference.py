"""aprkit.corruptions against independent per-image NumPy/PIL/SciPy implementations of the published
formulas, the original's severity curves, and exactness of the vectorised glass/motion blurs."""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from PIL import Image

from aprkit.corruptions import PARAMS, corrupt
from aprkit.corruptions.blur import glass_offsets, glass_permutation, motion_line_blur
from aprkit.corruptions.spatter import equalize_hist
from conftest import _shared_root, natural_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _real_or_natural(n: int) -> torch.Tensor:
    """The first ``n`` CIFAR-10 test images when ../shared is present, else generated natural images."""
    root = _shared_root()
    csv = root / "data" / "cifar10" / "test_order.csv" if root else None
    if csv is None or not csv.is_file():
        return natural_images(n, 32, seed=11)
    paths = [line.split(",")[3] for line in csv.read_text().splitlines()[1:n + 1]]
    arr = np.stack([np.asarray(Image.open(csv.parent / p).convert("RGB")) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


IMAGES = None


def _images() -> torch.Tensor:
    global IMAGES
    if IMAGES is None:
        IMAGES = _real_or_natural(8)
    return IMAGES


# ----------------------------------------------------------------------------- independent references (HWC float)
def ref_contrast(x: np.ndarray, c: float) -> np.ndarray:
    m = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1)


def _hsv_map(x: np.ndarray, fn) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            h, s, v = colorsys.rgb_to_hsv(*x[i, j])
            out[i, j] = colorsys.hsv_to_rgb(*fn(h, s, v))
    return np.clip(out, 0, 1)


def ref_brightness(x: np.ndarray, c: float) -> np.ndarray:
    return _hsv_map(x, lambda h, s, v: (h, s, min(max(v + c, 0.0), 1.0)))


def ref_saturate(x: np.ndarray, c: tuple) -> np.ndarray:
    return _hsv_map(x, lambda h, s, v: (h, min(max(s * c[0] + c[1], 0.0), 1.0), v))


def ref_pixelate(u8: np.ndarray, c: float) -> np.ndarray:
    h, w = u8.shape[:2]
    im = Image.fromarray(u8).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return np.asarray(im) / 255.0


def ref_jpeg(u8: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue()))) / 255.0


def ref_defocus(x: np.ndarray, c: tuple) -> np.ndarray:
    radius, alias = c
    grid, ks = (np.arange(-8, 9), 3) if radius <= 8 else (np.arange(-radius, radius + 1), 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ks) - (ks - 1) / 2
    g = np.exp(-(t**2) / (2 * alias**2))
    g /= g.sum()
    k = ndi.correlate1d(ndi.correlate1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")
    return np.clip(np.stack([ndi.correlate(x[..., i], k, mode="mirror") for i in range(3)], -1), 0, 1)


def ref_zoom_blur(x: np.ndarray, zooms) -> np.ndarray:
    h = x.shape[0]
    out = x.copy()
    for z in zooms:
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        zi = ndi.zoom(x[top:top + ch, top:top + ch], (z, z, 1), order=1)
        trim = (zi.shape[0] - h) // 2
        out += zi[trim:trim + h, trim:trim + h]
    return np.clip(out / (len(zooms) + 1), 0, 1)


def ref_gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(ndi.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0), 0, 1)


REFERENCES = {
    "contrast": (ref_contrast, False),
    "brightness": (ref_brightness, False),
    "saturate": (ref_saturate, False),
    "pixelate": (ref_pixelate, True),
    "jpeg_compression": (ref_jpeg, True),
    "defocus_blur": (ref_defocus, False),
    "zoom_blur": (ref_zoom_blur, False),
    "gaussian_blur": (ref_gaussian_blur, False),
}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_deterministic_matches_independent_reference(name: str) -> None:
    fn, wants_u8 = REFERENCES[name]
    x = _images()[:4] if name not in ("brightness", "saturate") else _images()[:2]
    for s in range(1, 6):
        c = PARAMS["cifar"][name][s - 1]
        ours = corrupt(x, name, s, "cifar").permute(0, 2, 3, 1).numpy()
        for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
            ref = fn(img if wants_u8 else img / 255.0, c) * 255.0
            diff = np.abs(ours[i].astype(np.float64) - np.round(ref))
            if name in ("pixelate", "jpeg_compression"):  # Pillow's own 8-bit output: the same bytes
                assert diff.max() == 0.0, f"{name} s{s}: max diff {diff.max()}"
            assert diff.max() <= 1.0, f"{name} s{s}: max diff {diff.max()}"
            assert _psnr(ours[i], np.round(ref)) >= 45.0


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "gaussian_blur"])
def test_deterministic_imagenet_preset_float(name: str) -> None:
    fn, _ = REFERENCES[name]
    x = natural_images(1, 224, seed=4).float() / 255
    c = PARAMS["imagenet"][name][4]
    ours = corrupt(x, name, 5, "imagenet")[0].permute(1, 2, 0).numpy()
    ref = fn(x[0].permute(1, 2, 0).numpy().astype(np.float64), c)
    assert np.abs(ours - ref).max() < 1e-4


# ----------------------------------------------------------------------------- exactness of vectorised loops
def _sequential_glass(h: int, w: int, d: int, offsets: np.ndarray) -> np.ndarray:
    """The scripts' loop verbatim (NumPy view semantics of the "swap"), on an index image."""
    idx = np.arange(h * w).reshape(h, w, 1)
    for it in range(offsets.shape[0]):
        k = 0
        for hh in range(h - d, d, -1):
            for ww in range(w - d, d, -1):
                dx, dy = offsets[it, 0, k], offsets[it, 1, k]
                hp, wp = hh + dy, ww + dx
                idx[hh, ww], idx[hp, wp] = idx[hp, wp], idx[hh, ww]
                k += 1
    return idx.reshape(-1)


def test_glass_swap_statement_copies_like_numpy() -> None:
    x = np.arange(6).reshape(1, 2, 3)
    x[0, 0], x[0, 1] = x[0, 1], x[0, 0]  # the scripts' statement: a copy, not a swap
    assert x[0, 0].tolist() == [3, 4, 5] and x[0, 1].tolist() == [3, 4, 5]


@pytest.mark.parametrize("h,w,d,iters", [(12, 12, 1, 2), (16, 11, 2, 1), (14, 14, 3, 2)])
def test_glass_wavefront_equals_sequential_loop(h: int, w: int, d: int, iters: int) -> None:
    off = glass_offsets(3, h, w, d, iters, torch.Generator().manual_seed(0), torch.device("cpu"))
    perm = glass_permutation(off, h, w, d)
    for b in range(3):
        assert np.array_equal(perm[b].numpy(), _sequential_glass(h, w, d, off[:, :, b].numpy()))
    assert int(off.min()) == -d and int(off.max()) == d - 1  # np.random.randint(-d, d)


def test_motion_kernel_matches_imagemagick_definition() -> None:
    x = torch.rand(1, 1, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    radius, sigma, angle = 3, 1.5, -30.0
    ours = motion_line_blur(x, radius, sigma, torch.tensor([angle]))[0, 0].numpy()
    width = 2 * math.ceil(radius) + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(px, py)
    img = x[0, 0].numpy()
    ref = np.zeros_like(img)
    for yy in range(9):
        for xx in range(11):
            for i in range(width):
                ox, oy = math.ceil(i * py / hyp - 0.5), math.ceil(i * px / hyp - 0.5)
                ref[yy, xx] += k[i] * img[min(max(yy + oy, 0), 8), min(max(xx + ox, 0), 10)]
    assert np.abs(ours - ref).max() < 1e-12


def test_equalize_hist_matches_opencv_algorithm() -> None:
    img = torch.randint(30, 90, (2, 1, 16, 16), generator=torch.Generator().manual_seed(2)).float()
    ours = equalize_hist(img)
    for b in range(2):
        v = img[b, 0].numpy().astype(int)
        hist = np.bincount(v.ravel(), minlength=256)
        i = int(np.nonzero(hist)[0][0])
        scale = 255.0 / (v.size - hist[i])
        lut = np.zeros(256)
        lut[i + 1:] = np.round(np.cumsum(hist[i + 1:]) * scale)
        assert np.array_equal(ours[b, 0].numpy(), lut[v])


# ----------------------------------------------------------------------------- noise statistics
def test_noise_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.full((16, 3, 32, 32), 0.5)  # the cifar preset's parameters
    assert abs(float((corrupt(x, "gaussian_noise", 3, generator=g) - x).std()) - 0.08) < 0.005
    assert abs(float((corrupt(x, "speckle_noise", 5, generator=g) - x).std()) - 0.5 * 0.2) < 0.005
    shot = corrupt(x, "shot_noise", 5, generator=g)  # Poisson(0.5 * 50) / 50
    assert abs(float(shot.var()) - 0.5 / 50) < 0.002
    imp = corrupt(x, "impulse_noise", 5, generator=g)
    assert abs(float((imp != 0.5).float().mean()) - 0.07) < 0.01
    assert abs(float((imp == 1).float().mean()) - 0.035) < 0.007


# ----------------------------------------------------------------------------- severity curves
#: mean |corrupted - clean| (0-255) of the original make_cifar_c.py functions on the first 200 CIFAR-10
#: test images, severities 1-5 (measured once in a side environment; see benchmarks/fidelity_corruptions.py)
ORIGINAL_CURVES: dict[str, list[float]] = {
    "gaussian_noise": [7.97, 11.83, 15.66, 17.55, 19.43],
    "shot_noise": [5.91, 8.32, 13.03, 14.96, 18.19],
    "impulse_noise": [1.28, 2.55, 3.84, 6.37, 9.00],
    "defocus_blur": [1.37, 3.31, 4.99, 6.51, 9.26],
    "glass_blur": [11.23, 11.37, 11.13, 18.21, 17.48],
    "motion_blur": [7.27, 10.37, 13.06, 13.33, 15.31],
    "zoom_blur": [8.85, 10.39, 12.42, 14.50, 16.51],
    "snow": [10.62, 23.55, 25.25, 36.58, 51.21],
    "frost": [29.80, 45.69, 46.70, 45.42, 44.60],
    "fog": [11.08, 21.70, 28.36, 33.00, 39.95],
    "brightness": [9.98, 20.16, 29.86, 39.02, 55.40],
    "contrast": [10.93, 21.85, 26.22, 30.59, 37.14],
    "elastic_transform": [21.32, 20.15, 17.68, 16.33, 13.64],
    "pixelate": [1.81, 3.35, 4.21, 6.26, 8.53],
    "jpeg_compression": [5.29, 6.59, 7.03, 7.48, 8.09],
    "speckle_noise": [5.70, 9.34, 11.14, 14.68, 18.18],
    "gaussian_blur": [1.33, 4.91, 6.28, 7.44, 9.45],
    "spatter": [1.04, 2.73, 6.73, 3.01, 5.06],
    "saturate": [11.45, 14.80, 7.96, 20.21, 29.46],
}
NON_MONOTONE = {"glass_blur", "frost", "elastic_transform", "spatter", "saturate"}


def _distortion(name: str, x: torch.Tensor, s: int) -> float:
    y = corrupt(x, name, s, "cifar", torch.Generator().manual_seed(s))
    return float((y.float() - x.float()).abs().mean())


@pytest.mark.parametrize("name", sorted(NON_MONOTONE) + ["motion_blur", "snow", "fog", "shot_noise", "pixelate"])
def test_severity_curve_follows_original(name: str) -> None:
    """On the first 200 CIFAR-10 test images, aprkit's distortion per severity is within 8 % (+0.6) of the
    original code's, including its non-monotone steps (reproduced, not fixed)."""
    if name not in ORIGINAL_CURVES:
        pytest.skip(f"no recorded original curve for {name}")
    if name == "frost":
        from aprkit.corruptions import find_frost_dir

        try:
            find_frost_dir()
        except FileNotFoundError:
            pytest.skip("frost textures not found: `pip install --no-deps imagecorruptions` or set APRKIT_FROST_DIR")
    x = _real_or_natural(200)
    if _shared_root() is None or x.shape[0] != 200:
        pytest.skip("../shared CIFAR-10 images are not present (the recorded curves are for them)")
    orig = ORIGINAL_CURVES[name]
    ours = [_distortion(name, x, s) for s in range(1, 6)]
    for s, (a, o) in enumerate(zip(ours, orig), 1):
        assert abs(a - o) <= 0.08 * o + 0.6, f"{name} s{s}: aprkit {a:.2f} vs original {o:.2f}"
    for i in range(4):
        if abs(orig[i + 1] - orig[i]) > 1.0:  # a clear step in the original: same direction here
            assert (ours[i + 1] - ours[i]) * (orig[i + 1] - orig[i]) > 0, f"{name}: {ours} vs {orig}"
    if name in NON_MONOTONE:
        assert any(b < a for a, b in zip(orig, orig[1:]))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur",
                                  "zoom_blur", "snow", "fog", "brightness", "contrast", "pixelate",
                                  "jpeg_compression", "speckle_noise", "gaussian_blur"])
def test_monotone_severity_curve(name: str) -> None:
    x = _images()
    curve = [_distortion(name, x, s) for s in range(1, 6)]
    assert all(b > a for a, b in zip(curve, curve[1:])), f"{name}: {curve}"


def test_motion_kernel_direct_path_for_large_images() -> None:
    x = torch.rand(2, 3, 80, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    angles = torch.tensor([30.0, -100.0])
    ours = motion_line_blur(x, 15, 8, angles)  # > 64x64: shifted-slice path
    width = 31
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * 8.0**2))
    k = k / k.sum()
    a = torch.deg2rad(angles.double())[:, None]
    ox, oy = torch.ceil(i * torch.cos(a) - 0.5).long(), torch.ceil(i * torch.sin(a) - 0.5).long()
    ref = torch.zeros_like(x)
    for t in range(width):
        for b in range(2):
            rows = (torch.arange(80) + oy[b, t]).clamp(0, 79)
            cols = (torch.arange(70) + ox[b, t]).clamp(0, 69)
            ref[b] += k[t] * x[b][:, rows][:, :, cols]
    assert (ours - ref).abs().max() < 1e-10


def test_grid_sample_reflection_matches_opencv_and_scipy_borders() -> None:
    """elastic_transform relies on grid_sample's reflection = reflect-101 (align_corners=True) and
    SciPy's half-sample "reflect" (align_corners=False); bilinear_sample maps indices explicitly."""
    import torch.nn.functional as F

    from aprkit.corruptions.digital import bilinear_sample

    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 20, 17, dtype=torch.float64, generator=g)
    sy = torch.rand(2, 20, 17, dtype=torch.float64, generator=g) * 60 - 20
    sx = torch.rand(2, 20, 17, dtype=torch.float64, generator=g) * 60 - 20
    grid = torch.stack([sx * 2 / 16 - 1, sy * 2 / 19 - 1], -1)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    assert (bilinear_sample(x, sy, sx, "reflect101") - ref).abs().max() < 1e-12
    grid = torch.stack([(sx + 0.5) * 2 / 17 - 1, (sy + 0.5) * 2 / 20 - 1], -1)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    assert (bilinear_sample(x, sy, sx, "symmetric") - ref).abs().max() < 1e-12
    # and SciPy's map_coordinates(order=1, mode="reflect") agrees with the "symmetric" mapping
    ys, xs = sy[0].numpy(), sx[0].numpy()
    ours = bilinear_sample(x[:1], sy[:1], sx[:1], "symmetric")[0, 0].numpy()
    scipy_ref = ndi.map_coordinates(x[0, 0].numpy(), [ys, xs], order=1, mode="reflect")
    assert np.abs(ours - scipy_ref).max() < 1e-9


def test_shot_noise_uint8_inverse_cdf_statistics() -> None:
    x = torch.full((32, 3, 32, 32), 128, dtype=torch.uint8)
    for s, c in ((1, 500), (5, 50)):
        y = corrupt(x, "shot_noise", s, "cifar", torch.Generator().manual_seed(s)).double() / 255
        counts = y * c  # Poisson(c * 128/255), up to uint8 rounding of counts / c
        lam = c * 128 / 255
        assert abs(float(counts.mean()) - lam) < 0.02 * lam
        assert abs(float(counts.var()) - lam) < 0.08 * lam


def test_cpu_chunking_matches_per_image() -> None:
    x = natural_images(8, 224, seed=6)  # 8 x 150k values: processed in chunks on the CPU
    for name in ("contrast", "pixelate", "zoom_blur"):
        whole = corrupt(x, name, 3, "imagenet")
        single = torch.cat([corrupt(x[i:i + 1], name, 3, "imagenet") for i in range(8)])
        assert torch.equal(whole, single)
