"""Time N training steps of each study-1 recipe on the real CIFAR-10 (for the epoch budget in docs/reproductions.md).

    OMP_NUM_THREADS=2 python benchmarks/repro/time_steps.py --steps 60 --threads 2

Prints images/s per run (the loop's own figure, excluding data loading) and seconds per 50,000-image epoch, from the
second of two epochs of N steps (the first holds one-off costs: compilation, cuDNN's autotuning).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.repro.apr_cifar10 import FEATURE_RUN, RUNS
from benchmarks.repro.common import CONFIGS, _patched_build, cifar10_spec, feature_apr_builder, shared_root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shared", default=None)
    args = p.parse_args()
    from aprkit.train import fit

    for name in [*RUNS, FEATURE_RUN]:
        # two epochs of N steps, the second timed: the first holds the one-off costs (on CUDA the augmentation's
        # compilation into CUDA graphs and cuDNN's autotuning, which N steps would not amortise)
        ov = [f"data.dataset={cifar10_spec(shared_root(args.shared))}", f"data.limit={args.steps * 128}",
              "optim.epochs=2", "optim.milestones=[]", f"train.max_steps={2 * args.steps}", "train.eval_every=0",
              "train.progress=false", f"train.device={args.device}", f"train.threads={args.threads}"]
        ctx = _patched_build(feature_apr_builder(["layer2"], 0.5, 0)) if name == FEATURE_RUN else contextlib.nullcontext()
        with ctx:
            row = fit(str(CONFIGS / RUNS.get(name, RUNS["apr_sp"])), ov)["history"][-1]
        print(f"{name}: {row['images_per_s']:.1f} images/s, {50000 / row['images_per_s']:.0f} s per epoch", flush=True)

if __name__ == "__main__":
    main()
