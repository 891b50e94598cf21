"""``aprkit demo``: train standard and APR-SP small CNNs, evaluate both, write one side-by-side report.

Examples::

    aprkit demo --out runs/demo                       # synthetic data, about 5-8 minutes on a 2-core CPU
    aprkit demo --out runs/demo-quick --quick         # seconds; every report section present
    aprkit demo --out runs/demo-c10 --data cifar10:/data/cifar10 --epochs 15 --device cuda
    aprkit demo --out runs/demo-mine --data folder:/data/my_images   # PATH/{train,test}/<class>/ or one tree
"""

from __future__ import annotations

import argparse

from ._common import nonnegative_int, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="train standard vs APR-SP on built-in synthetic data (or yours), evaluate both, write a report",
        description="Train the same small CNN with standard training and with APR-SP, run the full evaluation "
        "(clean accuracy, 15 corruptions x 5 severities, calibration, OOD, shape bias, phase bias, transplant "
        "sweep) on both and write report.html / report.md / results.json to --out.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (report, checkpoints, resumable cache)")
    p.add_argument("--quick", action="store_true", help="tiny run (seconds) with every report section")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--data", default="synthetic", metavar="SPEC",
                   help="synthetic (default), synthetic:N_TRAIN, cifar10:PATH, cifar100:PATH or folder:PATH")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs per model (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, training and evaluation, 0..2**31-1 (default 0)")
    p.add_argument("--train-size", type=nonnegative_int, default=None, metavar="N",
                   help="training images (real data: seeded random subset; 0 = all)")
    p.add_argument("--test-size", type=positive_int, default=None, metavar="N", help="test images for the evaluation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage messages")
    p.add_argument("--download", action="store_true",
                   help="fetch the frost textures (2 MB, into $APRKIT_DATA/frost) when none are found")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..demo import demo_settings, run_demo
    from ._common import check_out_dir

    check_out_dir(args.out, "--out")
    if args.train_size is not None and args.data.strip().lower().startswith("synthetic:"):
        raise ValueError(f"--data {args.data} already sets the number of training images; drop --train-size "
                         f"{args.train_size} or use --data synthetic")
    extra = {k: v for k, v in (("n_train", args.train_size), ("n_test", args.test_size)) if v is not None}
    settings = demo_settings(args.quick, args.epochs, **extra)
    res = run_demo(args.out, quick=args.quick, device=args.device, data=args.data, epochs=args.epochs, seed=args.seed,
                   progress=not args.no_progress, settings=settings, download=args.download)
    demo = res.meta["demo"]
    if args.no_progress:
        from ..demo.summary import summary_text

        print(summary_text(demo["verdicts"]) + "\n" + demo["overall"])
    total = demo["timings"]["total"]
    print(f"\nreport: {res.paths['html']}\n        {res.paths['markdown']}\n        {res.paths['json']}")
    print(f"total time: {total['wall_s']:.1f} s wall, {total['cpu_s']:.1f} s CPU "
          f"(load average at start {demo['load_average_start'][0]:.1f} on {demo['cpu_count']} cores)")
    return 0
