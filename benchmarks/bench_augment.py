"""Throughput of the APR augmentations against plain re-expressions of the reference algorithms.

Prints img/s and ratios measured in the same run (interleaved repeats, median):

* APR-P, batch 256 at 3x32x32 and batch 64 at 3x224x224: ``aprkit.augment.apr_pair`` (batch selected)
  vs the reference ``mix_data`` (two complex ``fftn``, abs/angle/exp, complex ``ifftn``) and vs a plain
  ``clone`` of the batch (the memory-bound limit).
* APR-S per image on PIL images (32 and 224 px, recombination always on): ``APRSingle`` vs the reference
  ``APRecombination`` (same PIL ops, then NumPy complex ``fftn`` of both views, abs/angle/exp, ``ifftn``),
  plus ``APRSingleBatch`` on the device for comparison.

Usage: ``python benchmarks/bench_augment.py [--device cuda] [--threads 1] [--repeats 7] [--quick]``.
Goals: APR-P >= 4x the reference at both sizes, APR-S >= 2x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch

from aprkit.augment import APRSingle, APRSingleBatch, apr_pair, sample_single_params
from aprkit.augment.ops_pil import apply_pil_op


def reference_mix_data(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Reference APR-P (``mix_data`` after the probability draw), re-expressed."""
    fft_1 = torch.fft.fftn(x, dim=(1, 2, 3))
    abs_1, angle_1 = torch.abs(fft_1), torch.angle(fft_1)
    fft_2 = torch.fft.fftn(x[index, :], dim=(1, 2, 3))
    abs_2, angle_2 = torch.abs(fft_2), torch.angle(fft_2)
    return torch.fft.ifftn(abs_2 * torch.exp(1j * angle_1), dim=(1, 2, 3)).real.float()


def reference_aprs(img, names, p: dict):
    """Reference APR-S (``APRecombination`` with both draws fixed), re-expressed with NumPy."""
    from PIL import Image

    x = apply_pil_op(img, names[p["op1"]], p["level1"], p["negate1"])
    x_aug = apply_pil_op(x, names[p["op2"]], p["level2"], p["negate2"])
    x, x_aug = np.array(x).astype(np.uint8), np.array(x_aug).astype(np.uint8)
    fft_1, fft_2 = np.fft.fftshift(np.fft.fftn(x)), np.fft.fftshift(np.fft.fftn(x_aug))
    abs_1, angle_1 = np.abs(fft_1), np.angle(fft_1)
    abs_2, angle_2 = np.abs(fft_2), np.angle(fft_2)
    fft_1 = abs_1 * np.exp(1j * angle_2)
    fft_2 = abs_2 * np.exp(1j * angle_1)
    out = np.fft.ifftn(np.fft.ifftshift(fft_2 if p["phase_from_first"] else fft_1))
    return Image.fromarray(np.clip(np.round(out.real), 0, 255).astype(np.uint8))


def bench(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, interleaved so that load changes hit all alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():  # warm-up
        fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def test_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images ``(n, 3, size, size)`` (low-pass noise; content does not affect timing)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    img = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return (img * 255).round().to(torch.uint8)


def run_pair(device: torch.device, repeats: int, quick: bool) -> None:
    print(f"APR-P batched ({device}): img/s, median of {repeats}")
    for b, s in ([(64, 32), (8, 224)] if quick else [(256, 32), (64, 224)]):
        x = (test_images(b, s).float() / 255).to(device)
        perm = torch.randperm(b, generator=torch.Generator().manual_seed(0)).to(device)
        err = (apr_pair(x, perm) - reference_mix_data(x, perm)).abs().max().item()
        t = bench({"reference": lambda: reference_mix_data(x, perm), "aprkit": lambda: apr_pair(x, perm),
                   "copy": lambda: x.clone()}, repeats, device)
        ips = {k: b / v for k, v in t.items()}
        print(f"  batch {b:3d} x 3x{s}x{s}: reference {ips['reference']:10.0f}  aprkit {ips['aprkit']:10.0f}  "
              f"copy {ips['copy']:12.0f}   aprkit/reference {t['reference'] / t['aprkit']:5.2f}x  "
              f"copy/aprkit {t['aprkit'] / t['copy']:6.1f}x   max|diff| {err:.1e}")


def run_single(device: torch.device, repeats: int, quick: bool) -> None:
    from PIL import Image

    print(f"APR-S per image (PIL, CPU; recombination on): img/s, median of {repeats}")
    for n, s in ([(32, 32), (4, 224)] if quick else [(256, 32), (32, 224)]):
        imgs_t = test_images(n, s, seed=1)
        imgs = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in imgs_t]
        aprs = APRSingle(p=1.0)
        params = [sample_single_params(1, 1.0, generator=torch.Generator().manual_seed(i)) for i in range(n)]
        plain = [{k: v[0].item() for k, v in p.items()} for p in params]
        names = aprs.batch.ops
        diff = max(np.abs(np.asarray(aprs.apply(im, p), dtype=int) - np.asarray(reference_aprs(im, names, q), dtype=int)).max()
                   for im, p, q in zip(imgs[:4], params[:4], plain[:4]))
        sb = APRSingleBatch(p=1.0, seed=0)
        xb = imgs_t.to(device)
        bparams = sb.generate_parameters(xb.shape, device)
        t = bench({
            "reference": lambda: [reference_aprs(im, names, q) for im, q in zip(imgs, plain)],
            "aprkit": lambda: [aprs.apply(im, p) for im, p in zip(imgs, params)],
            "batch": lambda: sb.apply(xb, bparams),
        }, repeats, device)
        ips = {k: n / v for k, v in t.items()}
        print(f"  {n:3d} images 3x{s}x{s}: reference {ips['reference']:8.0f}  aprkit {ips['aprkit']:8.0f}   "
              f"aprkit/reference {t['reference'] / t['aprkit']:5.2f}x   max|diff| {diff}   "
              f"(APRSingleBatch on {device}: {ips['batch']:8.0f})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads for every measurement (default 1: on a shared 2-core machine a second "
                         "intra-op thread is often descheduled and multi-threaded torch ops stall; DataLoader workers "
                         "run with one thread anyway)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    run_pair(device, args.repeats, args.quick)
    run_single(device, args.repeats, args.quick)


if __name__ == "__main__":
    main()
