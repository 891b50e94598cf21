"""The numbers behind aprkit's one reading of a float image range (``aprkit._checks.value_range_problem``).

Where [0, 1] images are expected and another augmentation's overshoot is taken (APR-S, APR-P with ``clamp``, the
adapters, the models' input check), a float batch is read as 0..255 values, as normalised with a mean and std, or
as [0, 1] images with an overshoot. This script measures, per image, the shares the rule reads on real CIFAR-10 test
images: APR-P's unclamped recombination of each image with the next one's amplitude, and the images normalised with
ImageNet's mean and std. It prints the share of values outside [-1, 2] (``OUTSIDE_SHARE``'s reading) and below 0
(``NORMALISED_SHARE``'s), and what the rule says of each set.

Usage: ``python benchmarks/float_range_rule.py [--shared ../shared] [--n 10000]`` (reads
``data/cifar10/test`` under ``--shared``; about 20 s on one CPU thread for the whole test set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: the repository root makes aprkit importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aprkit._checks import NORMALISED_SHARE, OUTSIDE_SHARE, value_range_problem  # noqa: E402
from aprkit.augment import APRPair  # noqa: E402
from aprkit.data import get_dataset  # noqa: E402


def shares(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the share of values outside [-1, 2] and below 0."""
    flat = t.flatten(1)
    return ((flat < -1) | (flat > 2)).double().mean(1), (flat < 0).double().mean(1)


def main() -> None:
    from aprkit.cli._common import positive_int

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default="../shared", help="folder holding data/cifar10 (default ../shared)")
    ap.add_argument("--n", type=positive_int, default=10000,
                    help="test images, spread over the set (default 10000: all; a rare image decides the thresholds)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = get_dataset(f"cifar10:{Path(args.shared) / 'data' / 'cifar10'}", "test")
    step = max(1, len(ds) // args.n)
    x = torch.stack([ds[i][0] for i in range(0, step * args.n, step)]).float() / 255
    n = x.shape[0]
    apr = APRPair(p=1.0).apply(x, {"perm": torch.roll(torch.arange(n), 1), "mask": torch.ones(n, dtype=torch.bool)})
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    normalised = (x - mean) / std
    print(f"{n} CIFAR-10 test images; OUTSIDE_SHARE = {OUTSIDE_SHARE:.1%}, NORMALISED_SHARE = {NORMALISED_SHARE:.1%}")
    for name, t in (("APR-P output", apr), ("ImageNet-normalised", normalised)):
        out, neg = shares(t)
        said: dict[str | None, int] = {}
        for img in t:
            lo, hi = (float(v) for v in torch.aminmax(img))
            kind = value_range_problem(img, lo, hi)
            said[kind] = said.get(kind, 0) + 1
        print(f"{name:20s} outside [-1, 2]: max {out.max():.2%}, median {out.median():.2%}, images with any "
              f"{(out > 0).double().mean():.1%} | below 0: max {neg.max():.1%}, median {neg.median():.1%}, "
              f"min {neg.min():.1%} | read as {dict(sorted(said.items(), key=lambda kv: str(kv[0])))}")
    out, neg = shares(normalised)
    few = neg < NORMALISED_SHARE
    print(f"normalised images with fewer than {NORMALISED_SHARE:.0%} of their values below 0: {int(few.sum())}; "
          f"{float((out[few] >= OUTSIDE_SHARE).double().mean()):.1%} of them have {OUTSIDE_SHARE:.1%} or more outside "
          "[-1, 2] (refused)")


if __name__ == "__main__":
    main()
