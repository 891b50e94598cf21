"""Fidelity of aprkit.corruptions to Hendrycks & Dietterich's original CIFAR-10-C creation code.

The original ``make_cifar_c.py`` cannot run in aprkit's environment (NumPy 1.x, scikit-image 0.19,
SciPy < 1.12, Wand + ImageMagick). Build a side environment once::

    apt-get install -y libmagickwand-dev     # ImageMagick for Wand (make_cifar_c.py's motion blur)
    bash benchmarks/side_env.sh /tmp/cside   # -> /tmp/cside/venv/bin/python
    # a directory with make_cifar_c.py and frost1.png .. frost6.jpg (never commit these)

then run::

    python benchmarks/fidelity_corruptions.py --side-python /tmp/cside/venv/bin/python \\
        --orig-dir /tmp/cside/orig --work /tmp/cside/fidelity --n 2000 --severities 3 5

The script extracts the corruption functions from ``make_cifar_c.py`` at run time (into ``--work``),
runs them in the side environment on the first ``n`` CIFAR-10 test images (official order), runs
aprkit on the same images, and prints: PSNR between the two outputs for the deterministic
corruptions (target >= 35 dB) and the ResNet-20 accuracy on both versions for every corruption
(target: within 3 points). Pass ``--ref-seeds 0 1`` to also measure the seed-to-seed spread of the
original code.

``--vs-imagecorruptions`` compares the corruptions at 224 px (imagenet preset) with ``imagecorruptions`` (the pip
package of the ImageNet-C functions; no ``--orig-dir`` needed) on the first ``n`` test images upsampled to 224 px:
the deterministic ones pixel by pixel, the random ones by their mean effect (different draws on each side).
``imagecorruptions`` 1.1 replaced ``elastic_transform`` with a size-independent version of its own (no random
affine, other strengths); aprkit follows ``make_imagenet_c.py``, the code that made ImageNet-C, so that one
differs by design::

    python benchmarks/fidelity_corruptions.py --side-python /tmp/cside/venv/bin/python --work /tmp/cside/fid224 \\
        --n 96 --severities 1 3 5 --vs-imagecorruptions
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

if __package__ in (None, ""):  # run as a script: the repository root makes aprkit importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aprkit.corruptions import DETERMINISTIC, corrupt, list_corruptions  # noqa: E402
from aprkit.models import load_model  # noqa: E402

_RUNNER = """
import os, sys, time
import numpy as np
from PIL import Image
import warnings; warnings.filterwarnings('ignore')
work, orig, seed, sevs = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4].split(',')]
src = open(os.path.join(orig, 'make_cifar_c.py')).read()
body = src[src.index('# /////////////// Distortion Helpers'):src.index('# /////////////// End Distortions')]
ns = {}
exec(compile('import numpy as np\\nfrom PIL import Image\\n' + body, 'make_cifar_c_functions', 'exec'), ns)
os.chdir(orig)  # frost images are read relative to the working directory
imgs = np.load(os.path.join(work, 'clean.npy'))
out = os.path.join(work, f'orig_seed{seed}')
os.makedirs(out, exist_ok=True)
for name in sys.argv[5].split(','):
    for s in sevs:
        path = os.path.join(out, f'{name}_s{s}.npy')
        if os.path.exists(path):
            continue
        np.random.seed(seed * 1000 + s)
        t = time.time()
        res = np.stack([np.uint8(ns[name](Image.fromarray(im), s)) for im in imgs])
        np.save(path + '.tmp.npy', res); os.replace(path + '.tmp.npy', path)
        print(f'original {name} s{s}: {(time.time() - t) / len(imgs) * 1e3:.2f} ms/img', flush=True)
"""

# imagecorruptions (the ImageNet-C code, 224 px) on the images of WORK/clean224.npy, one .npy per name and severity
_IC_RUNNER = """
import os, sys, warnings
warnings.filterwarnings('ignore')
import numpy as np
from imagecorruptions import corrupt
work, sevs = sys.argv[1], [int(s) for s in sys.argv[2].split(',')]
imgs = np.load(os.path.join(work, 'clean224.npy'))
for name in sys.argv[3].split(','):
    for s in sevs:
        out = np.stack([np.asarray(corrupt(im, corruption_name=name, severity=s)) for im in imgs])
        np.save(os.path.join(work, f'ic_{name}_s{s}.npy'), out)
"""


def vs_imagecorruptions(args: argparse.Namespace, clean: np.ndarray, work: Path) -> dict[str, dict[str, float]]:
    """The corruptions at 224 px (imagenet preset) against ``imagecorruptions`` in the side environment, on
    ``clean`` upsampled to 224 px (bicubic). Deterministic ones pixel by pixel: PSNR, mean and largest difference,
    share of values that differ. Random ones (different draws on each side) by their effect: the mean absolute
    change per value and the mean change per image (mean and standard error over the images)."""
    from PIL import Image

    from aprkit.corruptions import item_seeds

    big = np.stack([np.asarray(Image.fromarray(im).resize((224, 224), Image.Resampling.BICUBIC)) for im in clean])
    np.save(work / "clean224.npy", big)
    sev = ",".join(map(str, args.severities))
    subprocess.run([args.side_python, "-c", _IC_RUNNER, str(work), sev, ",".join(args.names)], check=True)
    x = torch.from_numpy(big).permute(0, 3, 1, 2).contiguous()
    base = big.astype(np.float64)
    n = len(big)
    print(f"224 px, imagenet preset, {n} images: aprkit vs imagecorruptions")
    print(f"{'corruption':18s} sev  PSNR(dB)  mean diff  max |diff|  share differing   (deterministic)")
    print(f"{'':18s}      mean |change| aprkit / ic   mean change per image aprkit / ic (+- SE)   (random)")
    results: dict[str, dict[str, float]] = {}
    for name in args.names:
        for s in args.severities:
            ref = np.load(work / f"ic_{name}_s{s}.npy").astype(np.float64)
            seeds = item_seeds(args.seed, name, s, "imagenet", torch.arange(n))
            ours = corrupt(x, name, s, "imagenet", seeds=seeds).permute(0, 2, 3, 1).numpy().astype(np.float64)
            if name in DETERMINISTIC:
                d = ours - ref
                r = {"psnr": psnr(ours, ref), "mean_diff": float(d.mean()), "max_abs_diff": float(np.abs(d).max()),
                     "share_differing": float((d != 0).mean())}
                print(f"{name:18s} {s:3d}  {r['psnr']:8.2f}  {r['mean_diff']:+9.3f}  {r['max_abs_diff']:10.0f}  "
                      f"{r['share_differing']:15.3f}", flush=True)
            else:
                shift_o, shift_r = (ours - base).mean(axis=(1, 2, 3)), (ref - base).mean(axis=(1, 2, 3))
                r = {"abs_change": float(np.abs(ours - base).mean()), "abs_change_ic": float(np.abs(ref - base).mean()),
                     "shift": float(shift_o.mean()), "shift_ic": float(shift_r.mean()),
                     "shift_se": float(shift_o.std() / n**0.5), "shift_se_ic": float(shift_r.std() / n**0.5)}
                print(f"{name:18s} {s:3d}  {r['abs_change']:8.2f} / {r['abs_change_ic']:<8.2f}  "
                      f"{r['shift']:+7.2f} +- {r['shift_se']:.2f} / {r['shift_ic']:+7.2f} +- {r['shift_se_ic']:.2f}",
                      flush=True)
            results[f"{name}/{s}"] = r
    (work / "fidelity_imagenet.json").write_text(strict_json(results))
    return results


@torch.no_grad()
def accuracy(model: nn.Module, images_hwc: np.ndarray, labels: np.ndarray) -> float:
    correct = 0
    for i in range(0, len(images_hwc), 500):
        x = torch.from_numpy(images_hwc[i:i + 500]).permute(0, 3, 1, 2).float() / 255
        correct += int((model(x).argmax(1).numpy() == labels[i:i + 500]).sum())
    return 100.0 * correct / len(images_hwc)


def strict_json(results: dict) -> str:
    """``results`` as standard JSON (``aprkit``'s ``to_jsonable``: non-finite floats become null); a cell with a
    PSNR also says whether the outputs are ``"identical"`` (PSNR infinity), since its null PSNR could otherwise
    also mean NaN (random corruptions, no pixel comparison)."""
    from aprkit.eval.engine.cache import to_jsonable

    marked = {k: {**v, "identical": v["psnr"] == float("inf")} if isinstance(v.get("psnr"), float) else v
              for k, v in results.items()}
    return json.dumps(to_jsonable(marked), indent=1, allow_nan=False)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    from aprkit.cli._common import positive_int

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side-python", required=True, help="python of the side environment")
    ap.add_argument("--orig-dir", default=None, help="directory with make_cifar_c.py and the frost images")
    ap.add_argument("--vs-imagecorruptions", action="store_true",
                    help="instead: the corruptions at 224 px against imagecorruptions on the first --n test images "
                         "upsampled to 224 px")
    ap.add_argument("--work", required=True, help="scratch directory for outputs (outside the repository)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    ap.add_argument("--model", default=None, help="ResNet-20 checkpoint (default: ../shared/models/resnet20-*.th)")
    ap.add_argument("--n", type=positive_int, default=2000)
    ap.add_argument("--severities", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--names", nargs="+", default=list(list_corruptions()), choices=list_corruptions())
    ap.add_argument("--ref-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--seed", type=int, default=0, help="aprkit seed")
    args = ap.parse_args(argv)

    from PIL import Image

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    rows = list(csv.DictReader(open(data / "test_order.csv")))[: args.n]
    clean = np.stack([np.asarray(Image.open(data / r["path"]).convert("RGB")) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    if args.vs_imagecorruptions:
        vs_imagecorruptions(args, clean, work)
        return 0
    if args.orig_dir is None:
        ap.error("--orig-dir is required (unless --vs-imagecorruptions)")
    np.save(work / "clean.npy", clean)
    runner = work / "run_original.py"
    runner.write_text(textwrap.dedent(_RUNNER))
    sev = ",".join(map(str, args.severities))
    for seed in args.ref_seeds:
        subprocess.run([args.side_python, str(runner), str(work), args.orig_dir, str(seed), sev, ",".join(args.names)],
                       check=True)

    model_path = Path(args.model) if args.model else sorted((data.parents[1] / "models").glob("resnet20-*.th"))[0]
    model = load_model(model_path)  # a legacy pytorch_resnet_cifar10 checkpoint: option-A ResNet-20
    print(f"clean accuracy ({args.n} images): {accuracy(model, clean, labels):.2f}%")
    x = torch.from_numpy(clean).permute(0, 3, 1, 2).contiguous()
    results = {}
    header = f"{'corruption':18s} sev  {'aprkit':>7s}  " + "  ".join(f"orig{s:<3d}" for s in args.ref_seeds)
    print(header + "   diff   PSNR(dB)  aprkit ms/img")
    for name in args.names:
        for s in args.severities:
            g = torch.Generator().manual_seed(args.seed * 1000 + s)
            t = time.perf_counter()
            ours = torch.cat([corrupt(x[i:i + 500], name, s, "cifar", g) for i in range(0, len(x), 500)])
            ms = (time.perf_counter() - t) / len(x) * 1e3
            ours = ours.permute(0, 2, 3, 1).numpy()
            acc_ours = accuracy(model, ours, labels)
            refs = [np.load(work / f"orig_seed{seed}" / f"{name}_s{s}.npy") for seed in args.ref_seeds]
            acc_ref = [accuracy(model, r, labels) for r in refs]
            q = psnr(ours, refs[0]) if name in DETERMINISTIC else float("nan")
            results[f"{name}/{s}"] = {"aprkit": acc_ours, "original": acc_ref, "psnr": q, "ms_per_image": ms}
            print(f"{name:18s} {s:3d}  {acc_ours:7.2f}  " + "  ".join(f"{a:7.2f}" for a in acc_ref)
                  + f"  {acc_ours - acc_ref[0]:+6.2f}  {q:8.2f}  {ms:8.3f}", flush=True)
    (work / "fidelity.json").write_text(strict_json(results))
    worst = max(abs(v["aprkit"] - v["original"][0]) for v in results.values())
    psnrs = [v["psnr"] for v in results.values() if v["psnr"] == v["psnr"]]
    print(f"max |accuracy difference| = {worst:.2f} points (target <= 3); "
          f"min PSNR (deterministic) = {min(psnrs) if psnrs else float('nan'):.2f} dB (target >= 35)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
