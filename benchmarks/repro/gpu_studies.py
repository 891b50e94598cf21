"""One prepared command for a lent GPU machine (issue 16): unpack the data shard it carries, then train the
studies' runs in priority order within a wall-time budget and bring back whatever finished.

    make gpu-studies GPU_PYTHON=python3 GPU_OUT=$OUT GPU_ARGS="--unpack .gpu_data/part0.npz --shared /tmp/shared \
        --budget-s 420"                                                  # on the GPU machine (docs/reproductions.md)
    python benchmarks/repro/gpu_studies.py --out /tmp/o --dry-run --budget-s 420 --carry .gpu_data/part0.npz
    python benchmarks/repro/gpu_studies.py --out /tmp/o --work /tmp/w --smoke --device cpu --threads 1   # CPU smoke

Order (``gpu_plan.JOBS``): study 1 (standard, APR-P, APR-SP ResNet-20) at the epochs that fit (up to 30),
study 4 (APR-SP + FeatureAPR) at the same epochs, study 2 (phase_collapse modulus vs soft-threshold, the paper's
widths) and study 3's trained models (gfnet_cifar, vit_tiny_p4) at what is left, then the evaluations that fit
(study 2's clean error, study 3's transplant sweeps). Each job is a child process calling the study script's
``main`` (``--train-only`` for training), with a time cap (``gpu_driver``); a job that fails or is killed is
recorded and the next one still runs; a job that would not fit is skipped with the reason. ``--budget-s`` covers
everything from the start, the unpacking too: set the device call's timeout_s about 30 s above it.

Output (``--out``, the device tool's $OUT): ``gpu_studies.json`` and ``gpu_studies.md`` rewritten after every
change (a command killed at its limit still returns what finished), ``gpu_studies.log`` and one tar per study
script (``gpu_outputs``). Resumable state (``last.pt``, eval caches, job logs) stays in ``--work``; ``--resume``
continues it with the same epochs while the machine is still the same.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.repro.common import REPO_ROOT, shared_root
from benchmarks.repro.gpu_driver import MARGIN_S, Driver, eval_blocker, run_child
from benchmarks.repro.gpu_plan import (
    EPOCH_RANGE,
    EPOCH_S,
    JOBS,
    UNPACK_S,
    Job,
    PlanState,
    format_plan,
    lead_studies,
    plan,
    select,
    travel_bytes,
)
from benchmarks.repro.shared_pack import incomplete, unpack_once


def parse_epochs(specs: list[str] | None) -> dict[str, int]:
    """``--epochs 30`` (studies 1 and 4) or ``--epochs resnet20=30 phase_collapse=6 transplant=4``."""
    out: dict[str, int] = {}
    for spec in specs or []:
        group, _, value = spec.rpartition("=")
        group = group or "resnet20"
        if group not in EPOCH_RANGE or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--epochs {spec!r}: expected E or GROUP=E with E >= 1 and GROUP one of "
                             f"{', '.join(EPOCH_RANGE)}")
        out[group] = int(value)
    return out


def run(args: argparse.Namespace, jobs: list[Job] | None = None, costs: dict[str, float] | None = None) -> int:
    t0 = time.perf_counter()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    previous = work / "gpu_studies.json"
    if not args.resume and work.is_dir() and any(work.iterdir()):
        raise SystemExit(f"{work} holds an earlier call's runs: pass --resume to continue them (same epochs) or "
                         "choose another --work")
    work.mkdir(parents=True, exist_ok=True)
    try:
        selected = select(jobs or JOBS, args.only)
    except ValueError as err:
        raise SystemExit(f"--only: {err}") from None
    d = Driver(args, selected, dict(costs or EPOCH_S), t0)
    if args.resume and previous.is_file():
        d.resume_from(json.loads(previous.read_text()))
    d.write()
    if args.unpack:  # first: its worker processes are forked before this process starts CUDA
        d.log(f"unpacking {', '.join(args.unpack)} into {args.shared}")
        d.report["unpack"] = unpack_once(args.unpack, Path(args.shared), args.workers)
    try:
        import torch

        from benchmarks.gpu.env import environment

        d.report["env"] = environment(torch.device(args.device))
    except Exception as err:  # recorded; the jobs report their own errors
        d.report["env"] = {"error": f"{type(err).__name__}: {err}"}
    d.report["data_error"] = incomplete(Path(args.shared), args.smoke)
    if d.report["data_error"]:
        d.log(d.report["data_error"])
    else:
        d.run_jobs()
    d.report["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    d.write()
    print((out / "gpu_studies.md").read_text(), flush=True)
    bad = [n for n, j in d.report["jobs"].items() if j["status"] in ("error", "timeout")]
    return 1 if d.report["data_error"] or bad else 0


def dry_run(args: argparse.Namespace) -> int:
    """Print the plan (and what a device call carrying ``--carry`` would send) without running anything."""
    unpack_s = UNPACK_S * len(args.unpack or [])
    st = PlanState(budget_s=args.budget_s - unpack_s - MARGIN_S, lanes_free=[0.0] * args.lanes,
                   epochs=dict(args.forced_epochs), forced=lead_studies(args.forced_epochs), eval_ok=eval_blocker(),
                   smoke=args.smoke,
                   lane_slowdown=args.lane_slowdown)
    try:
        selected = select(JOBS, args.only)
    except ValueError as err:  # unknown names: one line, as on the run path
        raise SystemExit(f"--only: {err}") from None
    planned = plan(selected, st)
    print(f"unpack {len(args.unpack or [])} shard(s): ~{unpack_s:.0f} s; {MARGIN_S:.0f} s kept for the end\n")
    print(format_plan(planned, st))
    if args.carry is not None:
        tree, carried = travel_bytes(REPO_ROOT, args.carry)
        total = tree + carried
        print(f"\nA device call carrying {' '.join(args.carry) or 'nothing'} sends {total / 2**20:.1f} MiB of 64 MiB "
              f"(working tree {tree / 2**20:.1f}, carried {carried / 2**20:.1f})"
              + ("" if total <= 64 * 2**20 else ": TOO LARGE, the call would be refused"))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The driver's arguments, checked; ``--shared`` resolved (the unpack destination, or as the study scripts)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", help="returned files: gpu_studies.{json,md,log} and one tar per study script")
    p.add_argument("--work", default="/tmp/aprkit-gpu-studies", help="runs, last.pt, eval caches, job logs")
    p.add_argument("--shared", default=None, help="data folder (unpack destination); default as the study scripts")
    p.add_argument("--unpack", nargs="+", default=None, metavar="SHARD", help="shared_pack shards to unpack first")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall time for everything, the unpacking too")
    p.add_argument("--lanes", type=int, default=1, help="jobs run at the same time on the one GPU")
    p.add_argument("--lane-slowdown", type=float, default=0.5,
                   help="planning assumption: each further lane makes every job this much slower")
    p.add_argument("--epochs", nargs="+", default=None, metavar="[GROUP=]E",
                   help=f"force epochs: E for studies 1/4, or GROUP=E for {', '.join(EPOCH_RANGE)}")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="jobs, studies (study1..4) or evals")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of each job")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for every job (repeatable)")
    p.add_argument("--cap-scale", type=float, default=1.0, help="multiply every job's time cap (2 x est. + 60 s)")
    p.add_argument("--max-out-mb", type=int, default=48, help="returned files in all, MiB")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="unpacking processes")
    p.add_argument("--resume", action="store_true", help="continue the runs in --work (same epochs)")
    p.add_argument("--smoke", action="store_true", help="the whole plan with the scripts' smoke sizes (CPU)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    p.add_argument("--carry", nargs="*", default=None, metavar="PATH",
                   help="with --dry-run: the size a device call carrying these paths would send")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    args.forced_epochs = parse_epochs(args.epochs)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if args.lanes < 1:
        p.error(f"--lanes must be at least 1, got {args.lanes}")
    for name, value in (("--lane-slowdown", args.lane_slowdown), ("--cap-scale", args.cap_scale),
                        ("--budget-s", args.budget_s)):
        if not (value > 0 or (name == "--lane-slowdown" and value == 0)):  # also NaN
            p.error(f"{name} must be {'0 or more' if name == '--lane-slowdown' else 'positive'}, got {value}")
    missing = [c for c in args.carry or [] if not (REPO_ROOT / c).exists()]
    if missing:
        p.error(f"--carry names paths that do not exist under {REPO_ROOT}: {', '.join(missing)}")
    if args.dry_run:
        return args
    if not args.out:
        p.error("--out is required")
    if args.unpack and not args.shared:
        p.error("--unpack needs --shared (the destination the studies then read)")
    args.shared = str(Path(args.shared).resolve()) if args.unpack else str(shared_root(args.shared))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child, args.result)
    return dry_run(args) if args.dry_run else run(args)


if __name__ == "__main__":
    sys.exit(main())
