"""Evaluate a timm or torchvision model on CIFAR-10-C: the published ``.npy`` folder, or generated on the fly.

    # corruptions generated on the fly from the clean test set (no CIFAR-10-C download needed)
    python examples/eval_cifar10c.py --model timm:resnet18 --checkpoint my_resnet18.pth \
        --data cifar10:../shared/data/cifar10 --limit 1000 --out runs/c10c
    # the published CIFAR-10-C folder (<corruption>.npy + labels.npy, memory-mapped)
    python examples/eval_cifar10c.py --model torchvision:resnet18 --checkpoint my_tv_resnet18.pth \
        --data cifar10:/data/cifar10 --cifar10c /data/CIFAR-10-C --out runs/c10c
    # seconds: a tiny generated CIFAR-10 / CIFAR-10-C layout and a random-init ResNet-20
    python examples/eval_cifar10c.py --smoke

``--model`` is anything ``aprkit.models.load_model`` reads (``timm:NAME``, ``torchvision:NAME``, an aprkit
architecture or checkpoint); foreign models are wrapped so they take float images in [0, 1]. Prints clean
accuracy, the error per corruption and the mean corruption error (CIFAR convention: 15 corruptions x 5
severities), and writes a report when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def make_tiny_layout(root: Path, n: int = 20, corruptions: tuple[str, ...] = ("gaussian_noise", "fog"), seed: int = 0) -> tuple[str, str]:
    """Write ``n`` clean 32x32 images as an ImageFolder tree and their CIFAR-10-C ``.npy`` files; return the specs."""
    from PIL import Image

    from aprkit.corruptions import corrupt
    from aprkit.data.synthetic import render

    labels = torch.arange(n) % 10  # every class present, so the folder tree has all 10 class folders
    images = render(labels, labels, generator=torch.Generator().manual_seed(seed))
    for i, (img, y) in enumerate(zip(images, labels.tolist())):
        folder = root / "clean" / f"class{y}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    # the clean tree sorts by class folder; store the -C files in that same order
    order = sorted(range(n), key=lambda i: (f"class{int(labels[i])}", f"{i:04d}"))
    images, labels = images[order], labels[order]
    croot = root / "CIFAR-10-C"
    croot.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for c in corruptions:
        stack = [corrupt(images, c, s, preset="cifar", generator=g) for s in range(1, 6)]
        np.save(croot / f"{c}.npy", torch.cat(stack).permute(0, 2, 3, 1).contiguous().numpy())  # (5N, 32, 32, 3) uint8
    np.save(croot / "labels.npy", labels.repeat(5).numpy().astype(np.uint8))
    return f"folder:{root / 'clean'}", f"cifar10-c:{croot}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="timm:resnet18", help="timm:NAME, torchvision:NAME, aprkit name or checkpoint")
    ap.add_argument("--checkpoint", default=None, help="local weights for --model (nothing is downloaded)")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--data", default=None, help="clean test set spec, e.g. cifar10:PATH or folder:PATH")
    ap.add_argument("--cifar10c", default=None, help="folder with the published CIFAR-10-C .npy files (default: generate)")
    ap.add_argument("--corruptions", default=None, help="comma-separated subset (default: the 15 benchmark corruptions)")
    ap.add_argument("--severities", default="1,2,3,4,5")
    ap.add_argument("--limit", type=int, default=None, help="first N test images (generated corruptions)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=None, help="write results.json / report.md / report.html here")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run on a generated tiny layout with a tiny random model")
    args = ap.parse_args(argv)

    from aprkit.eval import evaluate
    from aprkit.models import load_model

    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory(prefix="aprkit-c10c-smoke-")
        args.data, args.cifar10c = make_tiny_layout(Path(tmp.name))
        args.model, args.checkpoint, args.corruptions = "resnet20", None, "gaussian_noise,fog"  # 32 px, as the data
        args.batch_size = 64
    if args.data is None:
        ap.error("--data is required (e.g. cifar10:../shared/data/cifar10), or use --smoke")
    corrupted = args.cifar10c
    if corrupted is not None and ":" not in corrupted:
        corrupted = f"cifar10-c:{corrupted}"
    try:
        weights_file = Path(args.model).expanduser().is_file()  # a checkpoint given as --model carries its weights
        untrained = args.checkpoint is None and not weights_file
        model = load_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint, random_init=untrained)
        if untrained:
            print(f"note: {args.model} has random weights (no --checkpoint); the numbers only show the pipeline works")
        res = evaluate(
            model, suite=["corruption"], data=args.data, model_id=args.model.replace(":", "-"), corrupted=corrupted,
            corruptions=args.corruptions.split(",") if args.corruptions else None,
            severities=[int(s) for s in args.severities.split(",")], limit=args.limit, device=args.device,
            batch_size=args.batch_size, out_dir=args.out, progress=not args.smoke,
        )
        r = res["corruption"]
        print(f"clean accuracy: {100 * r['clean']['accuracy']:.2f}% on {r['clean']['n']} images "
              f"(corrupted data: {'published .npy files' if corrupted else 'generated on the fly'})")
        for c, err in r["per_corruption"].items():
            print(f"  {c:<20} error {100 * err:6.2f}%  (mean over severities)")
        mce = r["mean_corruption_error"]
        print(f"mean corruption error: {'%.2f%%' % (100 * mce) if mce is not None else 'n/a (needs all 15 x 5)'}; "
              f"mean error over evaluated cells: {100 * r['mean_error']:.2f}%")
        if args.out:
            print(f"report: {res.paths.get('html', Path(args.out) / 'report.html')}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
