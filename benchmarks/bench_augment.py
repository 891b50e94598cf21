"""Throughput of the APR augmentations against plain re-expressions of the reference algorithms.

Prints img/s and ratios measured in the same run (interleaved repeats, the best of them: on a shared machine another
process's cache and memory traffic only add time):

* APR-P, batch 256 at 3x32x32 and batch 64 at 3x224x224: ``aprkit.augment.apr_pair`` (batch selected)
  vs the reference ``mix_data`` (two complex ``fftn``, abs/angle/exp, complex ``ifftn``) and vs a plain
  ``clone`` of the batch (the memory-bound limit); then torch's FFTs (``rfftn`` + ``irfftn`` of the batch: the
  issue's "FFT-only limit") and the share of them that ``apr_pair`` and ``APRPair.forward`` reach; then the FFTs
  the cores run (``aprkit.fourier.rfftn`` + ``irfftn``: on the CPU a 2-D FFT plus a 3x3 DFT over RGB, chunked
  for large batches, faster than torch's: the real floor there), their speed against torch's and the share of them
  the core reaches; then those FFTs plus the least
  memory traffic of an amplitude swap (two read+write passes over the half spectrum: one for the magnitudes,
  one to rescale), and the share of that the cores reach.
* APR-S per image on PIL images (32 and 224 px, recombination always on): ``APRSingle`` vs the reference
  ``APRecombination`` (same PIL ops, then NumPy complex ``fftn`` of both views, abs/angle/exp, ``ifftn``),
  plus ``APRSingleBatch`` on the device for comparison.

On the CPU with one torch thread the calls are timed in the thread's CPU time (steady on a shared machine),
elsewhere in wall time (``benchmarks.common.cpu_clock``).

Usage: ``python benchmarks/bench_augment.py [--device cuda] [--threads 1] [--repeats 7] [--min-time 0.02] [--quick]``.
The candidate sets (``pair_candidates``, ``other_candidates``) are reused by ``benchmarks/gpu_check.py``.
Goals: APR-P >= 4x the reference at both sizes, APR-S >= 2x.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: the repository root makes `benchmarks` and aprkit importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aprkit.augment import APRPair, APRSingle, APRSingleBatch, apr_pair, sample_single_params  # noqa: E402
from aprkit.augment.ops_pil import apply_pil_op  # noqa: E402
from aprkit.fourier import irfftn, low_frequency_swap, mix_amplitude, rfftn  # noqa: E402
from benchmarks.common import bench, cpu_clock, synthetic_images  # noqa: E402


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


def fft_limit(x: torch.Tensor) -> torch.Tensor:
    """The FFT-only limit of an APR op: ``irfftn(rfftn(x))`` over (C, H, W) in aprkit's compute dtype."""
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return torch.fft.irfftn(torch.fft.rfftn(xf, dim=(1, 2, 3)), s=x.shape[1:], dim=(1, 2, 3))


def fft2_limit(x: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """The FFT-only limit of a two-input op (APR-S, amplitude mix, low-frequency swap): ``rfftn`` of both inputs and one
    ``irfftn``, over (C, H, W), in float32."""
    xf, pf = (t if t.dtype in (torch.float32, torch.float64) else t.float() for t in (x, partner))
    return torch.fft.irfftn(torch.fft.rfftn(xf, dim=(1, 2, 3)) + torch.fft.rfftn(pf, dim=(1, 2, 3)), s=x.shape[1:],
                            dim=(1, 2, 3))


def pass_candidates(x: torch.Tensor, partner: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The FFT-only limits plus the least memory traffic of an amplitude swap on ``x`` (and ``partner``).

    ``spectrum_pass``: one read+write pass over the half spectrum (a copy into a second buffer);
    ``fft_limit_aprkit``: :func:`aprkit.fourier.rfftn` + :func:`aprkit.fourier.irfftn` (the FFTs the cores run: on
    the CPU the RGB route, chunked for large batches); ``fft_2pass_limit``: those FFTs with two such passes between
    them (a swap must read the spectrum once for the magnitudes and once more to rescale it); ``fft2_2pass_limit``:
    the same for the two-input ops (the forward FFT of both inputs, their sum as the first pass, a copy as the
    second, the inverse).
    """
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    pf = partner if partner.dtype in (torch.float32, torch.float64) else partner.float()
    dims, s = (1, 2, 3), list(x.shape[1:])
    z = rfftn(xf, dims)
    buf = torch.empty_like(z)

    def two_pass() -> torch.Tensor:
        zz = rfftn(xf, dims)
        buf.copy_(zz)
        return irfftn(zz.copy_(buf), s, dims)

    def two_input_two_pass() -> torch.Tensor:
        zz = rfftn(xf, dims) + rfftn(pf, dims)
        return irfftn(buf.copy_(zz), s, dims)

    return {"spectrum_pass": lambda: buf.copy_(z),
            "fft_limit_aprkit": lambda: irfftn(rfftn(xf, dims), s, dims),
            "fft_2pass_limit": two_pass, "fft2_2pass_limit": two_input_two_pass}


def pair_candidates(x: torch.Tensor, perm: torch.Tensor) -> dict[str, Callable[[], object]]:
    """APR-P on a float batch ``x`` with partners ``perm`` (on ``x``'s device), next to its two limits.

    ``copy`` (memory-bound limit), ``fft_limit``, the functional core ``apr_pair`` and ``APRPair.forward``
    with a CPU generator (the default) and with a generator on ``x``'s device (what training uses).
    """
    cpu_gen, dev_gen = APRPair(p=1.0, seed=0), APRPair(p=1.0, generator=torch.Generator(x.device).manual_seed(0))
    return {
        "copy": lambda: x.clone(),
        "fft_limit": lambda: fft_limit(x),
        "apr_pair": lambda: apr_pair(x, perm),
        "APRPair": lambda: cpu_gen(x),
        "APRPair_devgen": lambda: dev_gen(x),
    }


def other_candidates(x: torch.Tensor, x8: torch.Tensor) -> dict[str, Callable[[], object]]:
    """``APRSingleBatch`` (always recombining) on the uint8 batch ``x8`` and the FACT / FDA amplitude ops on ``x``
    (over (C, H, W), like the FFT limits they are compared with; their default is per channel, ``dims="hw"``), and
    their own limit ``fft2_limit`` (two inputs: two ``rfftn``, one ``irfftn``)."""
    partner = x.roll(1, 0)
    single = APRSingleBatch(p=1.0, seed=0)
    return {
        "fft2_limit": lambda: fft2_limit(x, partner),
        "APRSingleBatch": lambda: single(x8),
        "mix_amplitude": lambda: mix_amplitude(x, partner, 0.5, "chw"),
        "low_frequency_swap": lambda: low_frequency_swap(x, partner, 0.1, "chw"),
    }


#: the candidates of two inputs, whose FFT-only limit is ``fft2_limit`` (two ``rfftn``, one ``irfftn``)
TWO_INPUT = ("APRSingleBatch", "mix_amplitude", "low_frequency_swap")


def throughput(times: dict[str, float], batch: int) -> dict[str, dict[str, Any]]:
    """Per candidate: img/s and the ratios (limit time / candidate time) to ``copy`` and to its own FFT-only limit
    (``vs_fft_limit``; ``limit`` names it: ``fft2_limit`` for :data:`TWO_INPUT`, else ``fft_limit``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, t in times.items():
        row: dict[str, Any] = {"img_s": batch / t, "ms_per_batch": t * 1e3}
        limit = "fft2_limit" if name in TWO_INPUT else "fft_limit"
        if limit in times and name not in ("fft_limit", "fft2_limit"):
            row.update(vs_fft_limit=times[limit] / t, limit=limit)
        if "copy" in times and name != "copy":
            row["vs_copy"] = times["copy"] / t
        out[name] = row
    return out


def run_pair(device: torch.device, repeats: int, quick: bool, min_time: float = 0.0) -> None:
    print(f"APR-P batched ({device}): img/s, best of {repeats}")
    for b, s in ([(64, 32), (8, 224)] if quick else [(256, 32), (64, 224)]):
        x = (synthetic_images(b, s).float() / 255).to(device)
        perm = torch.randperm(b, generator=torch.Generator().manual_seed(0)).to(device)
        err = (apr_pair(x, perm) - reference_mix_data(x, perm)).abs().max().item()
        fns = {"reference": lambda: reference_mix_data(x, perm), **pair_candidates(x, perm),
               **pass_candidates(x, x.roll(1, 0))}
        t = bench(fns, repeats, device, min_time=min_time, clock=cpu_clock(device)[0], stat="min")
        ips = {k: b / v for k, v in t.items()}
        print(f"  batch {b:3d} x 3x{s}x{s}: reference {ips['reference']:10.0f}  aprkit {ips['apr_pair']:10.0f}  "
              f"copy {ips['copy']:12.0f}   aprkit/reference {t['reference'] / t['apr_pair']:5.2f}x  "
              f"copy/aprkit {t['apr_pair'] / t['copy']:6.1f}x   max|diff| {err:.1e}")
        print(f"      torch's FFTs (the issue's FFT-only limit) {ips['fft_limit']:10.0f}  apr_pair "
              f"{t['fft_limit'] / t['apr_pair']:.2f} of it, APRPair.forward {t['fft_limit'] / t['APRPair']:.2f} "
              f"({ips['APRPair']:.0f} img/s; {t['apr_pair'] / t['APRPair']:.2f} of apr_pair)")
        lp = t["fft_2pass_limit"]
        print(f"      aprkit's FFTs (the floor: the core's own transforms) {ips['fft_limit_aprkit']:10.0f}  "
              f"({t['fft_limit'] / t['fft_limit_aprkit']:.2f}x torch's speed)  apr_pair "
              f"{t['fft_limit_aprkit'] / t['apr_pair']:.2f} of it")
        print(f"      FFT + 2 passes {ips['fft_2pass_limit']:10.0f}  apr_pair {lp / t['apr_pair']:.2f} of it "
              f"(aprkit's FFTs; one read+write pass over the half spectrum: {t['spectrum_pass'] / t['fft_limit']:.3f} "
              "of torch's FFTs)")


def run_wrappers(device: torch.device, repeats: int, quick: bool, min_time: float = 0.0) -> None:
    """Each wrapper against its unchecked core (validate once: goal >= 0.9), and the cores against the FFT-only limit
    (for the two-input ops also against ``rfftn`` of both inputs + ``irfftn``, their own FFT work)."""
    from aprkit.augment.functional import apr_pair_core
    from aprkit.augment.single import apr_single_core
    from aprkit.hidden import FeatureAPR
    from aprkit.hidden.feature_apr import feature_apr_core

    print(f"Wrappers vs their cores ({device}): time ratios, best of {repeats}")
    for b, s in ([(64, 32), (8, 224)] if quick else [(256, 32), (64, 224)]):
        x8 = synthetic_images(b, s).to(device)
        x = x8.float() / 255
        perm = torch.randperm(b, generator=torch.Generator().manual_seed(0)).to(device)
        ones, partner = torch.ones(b, dtype=torch.bool, device=device), x.roll(1, 0)
        single, feat = APRSingleBatch(p=1.0, seed=0), FeatureAPR(p=1.0, dims="chw").train()
        sparams = single.generate_parameters(x8.shape)
        t = bench({
            "fft_limit": lambda: fft_limit(x),
            "fft2_limit": lambda: fft2_limit(x, partner),
            "apr_pair_core": lambda: apr_pair_core(x, perm),
            "APRPair": pair_candidates(x, perm)["APRPair"],
            "apr_single_core": lambda: apr_single_core(x8, sparams, single.ops),
            "APRSingleBatch": lambda: single(x8),
            "feature_apr_core": lambda: feature_apr_core(x, perm, ones, None, (-3, -2, -1)),
            "FeatureAPR": lambda: feat(x),
            "mix_amplitude": lambda: mix_amplitude(x, partner, 0.5, "chw"),  # as the 3-D limits
            "low_frequency_swap": lambda: low_frequency_swap(x, partner, 0.1, "chw"),
            **pass_candidates(x, partner),
        }, repeats, device, min_time=min_time, clock=cpu_clock(device)[0], stat="min")
        lim, lim2 = t["fft_limit"], t["fft2_limit"]
        print(f"  batch {b:3d} x 3x{s}x{s}: core/torch's FFTs: apr_pair {lim / t['apr_pair_core']:.2f}  "
              f"feature_apr {lim / t['feature_apr_core']:.2f}  mix_amplitude {lim / t['mix_amplitude']:.2f} "
              f"({lim2 / t['mix_amplitude']:.2f} of rfftn x2 + irfftn)  low_frequency_swap {lim / t['low_frequency_swap']:.2f} "
              f"({lim2 / t['low_frequency_swap']:.2f})")
        print(f"      wrapper/core: APRPair {t['apr_pair_core'] / t['APRPair']:.2f}  APRSingleBatch "
              f"{t['apr_single_core'] / t['APRSingleBatch']:.2f}  FeatureAPR {t['feature_apr_core'] / t['FeatureAPR']:.2f}")
        lp, lp2 = t["fft_2pass_limit"], t["fft2_2pass_limit"]
        print(f"      core/(FFT + 2 passes): apr_pair {lp / t['apr_pair_core']:.2f}  "
              f"feature_apr {lp / t['feature_apr_core']:.2f}  mix_amplitude {lp2 / t['mix_amplitude']:.2f}  "
              f"low_frequency_swap {lp2 / t['low_frequency_swap']:.2f} "
              f"(two-input ops: rfftn x2 + 2 passes + irfftn, aprkit's FFTs; one pass = {t['spectrum_pass'] / lim:.3f} "
              f"of torch's FFTs; aprkit's FFTs {lim / t['fft_limit_aprkit']:.2f}x their speed)")


def run_single(device: torch.device, repeats: int, quick: bool, min_time: float = 0.0) -> None:
    from PIL import Image

    print(f"APR-S per image (PIL, CPU; recombination on): img/s, best of {repeats}")
    for n, s in ([(32, 32), (4, 224)] if quick else [(256, 32), (32, 224)]):
        imgs_t = synthetic_images(n, s, seed=1)
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
        }, repeats, device, min_time=min_time, clock=cpu_clock(device)[0], stat="min")
        ips = {k: n / v for k, v in t.items()}
        print(f"  {n:3d} images 3x{s}x{s}: reference {ips['reference']:8.0f}  aprkit {ips['aprkit']:8.0f}   "
              f"aprkit/reference {t['reference'] / t['aprkit']:5.2f}x   max|diff| {diff}   "
              f"(APRSingleBatch on {device}: {ips['batch']:8.0f})")


def main(argv: list[str] | None = None) -> None:
    from aprkit.cli._common import positive_int
    from aprkit.distributed import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=positive_int, default=1,
                    help="torch.set_num_threads for every measurement (default 1: on a shared 2-core machine a second "
                         "intra-op thread is often descheduled and multi-threaded torch ops stall; DataLoader workers "
                         "run with one thread anyway)")
    ap.add_argument("--repeats", type=positive_int, default=7)
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds per timed block: fast calls repeat inside it (default 0.02 on a GPU, where one call "
                         "between two synchronisations is mostly launch latency; 0 on the CPU)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        ap.error(f"--device: {e}")
    if args.min_time is None:
        args.min_time = 0.02 if device.type == "cuda" else 0.0
    if not (args.min_time >= 0 and math.isfinite(args.min_time)):
        ap.error(f"--min-time must be a number >= 0, got {args.min_time}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    print(f"timer: {cpu_clock(device)[1]} (the same-run ratios are what to compare; img/s under other load vary)")
    run_pair(device, args.repeats, args.quick, args.min_time)
    run_wrappers(device, args.repeats, args.quick, args.min_time)
    run_single(device, args.repeats, args.quick, args.min_time)


if __name__ == "__main__":
    main()
