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
``main`` (``--train-only`` for training), with a time cap; a job that fails or is killed is recorded and the next
one still runs; a job that would not fit is skipped with the reason. ``--budget-s`` covers everything from the
start, the unpacking too: set the device call's timeout_s about 30 s above it.

Output (``--out``, the device tool's $OUT): ``gpu_studies.json`` and ``gpu_studies.md`` rewritten after every
change (a command killed at its limit still returns what finished), ``gpu_studies.log`` and one tar per study
script (``gpu_outputs``). Resumable state (``last.pt``, eval caches, job logs) stays in ``--work``; ``--resume``
continues it with the same epochs while the machine is still the same.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.repro.common import REPO_ROOT, shared_root
from benchmarks.repro.gpu_plan import (
    EPOCH_RANGE,
    EPOCH_S,
    JOBS,
    UNPACK_S,
    Job,
    Planned,
    PlanState,
    format_plan,
    job_args,
    lead_studies,
    plan,
    select,
    travel_bytes,
    update_costs,
)
from benchmarks.repro.shared_pack import incomplete, unpack_once

MARGIN_S = 8.0  # kept free at the end of the budget to kill what still runs and write the report
POLL_S = 1.0
PROGRESS_S = 15.0


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


def eval_blocker() -> str | None:
    """Why the evaluation jobs cannot run here (aprkit.eval needs pydantic), or None."""
    if importlib.util.find_spec("pydantic") is None:
        return "pydantic is not importable (carry .whl and run through `make gpu-studies`)"
    return None


class Driver:
    """Runs the jobs on ``--lanes`` child processes and keeps ``gpu_studies.json`` / ``.md`` current."""

    def __init__(self, args: argparse.Namespace, jobs: list[Job], costs: dict[str, float], t0: float) -> None:
        self.args, self.jobs, self.table, self.t0 = args, jobs, costs, t0
        self.out, self.work = Path(args.out).resolve(), Path(args.work).resolve()
        self.deadline = t0 + args.budget_s
        self.measured: dict[str, float] = {}
        self.running: dict[str, tuple[Job, Any, float]] = {}  # name -> (job, CappedProcess, expected end)
        self.killed_at_end: set[str] = set()
        self.report: dict[str, Any] = {
            "meta": {"started": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:],
                     "budget_s": args.budget_s, "lanes": args.lanes, "smoke": args.smoke, "device": args.device,
                     "work": str(self.work), "shared": args.shared, "lane_slowdown": args.lane_slowdown},
            "epochs": dict(args.forced_epochs), "jobs": {j.name: {"status": "pending", "study": j.study} for j in jobs},
            "unpack": [], "archives": {}, "study_results": {}}

    # ---------------------------------------------------------------- state and report
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def write(self) -> None:
        from aprkit._io import atomic_write_text
        from benchmarks.repro.gpu_outputs import dumps, render

        self.report["meta"]["wall_s"] = time.perf_counter() - self.t0
        text = dumps(self.report)
        atomic_write_text(self.out / "gpu_studies.json", text, durable=False)
        atomic_write_text(self.work / "gpu_studies.json", text, durable=False)  # what --resume reads
        atomic_write_text(self.out / "gpu_studies.md", render(self.report), durable=False)

    def log(self, msg: str) -> None:
        line = f"[gpu-studies {time.perf_counter() - self.t0:6.0f} s] {msg}"
        print(line, flush=True)
        with open(self.out / "gpu_studies.log", "a") as fh:
            fh.write(line + "\n")

    def resume_from(self, previous: dict[str, Any]) -> None:
        """Keep the finished jobs and the fixed epochs of an earlier call in the same work folder."""
        for group, e in (previous.get("epochs") or {}).items():
            if self.args.forced_epochs.get(group, e) != e:
                raise SystemExit(f"--resume: {group} was trained at {e} epochs in {self.work}; --epochs "
                                 f"{group}={self.args.forced_epochs[group]} would change the runs being resumed")
            self.report["epochs"][group] = e
        for name, j in (previous.get("jobs") or {}).items():
            if name in self.report["jobs"] and j.get("status") == "ok":
                self.report["jobs"][name] = {**j, "status": "ok", "resumed": True}
                if j.get("s_per_epoch") and j.get("cost"):
                    self.measured[j["cost"]] = j["s_per_epoch"]

    def state(self) -> PlanState:
        now = time.perf_counter()
        busy = [max(end - now, 5.0) for _, _, end in self.running.values()]
        done = {n: j["status"] for n, j in self.report["jobs"].items() if j["status"] not in ("pending", "running")}
        return PlanState(budget_s=self.left() - MARGIN_S, lanes_free=busy + [0.0] * (self.args.lanes - len(busy)),
                         costs=update_costs(self.table, self.measured), epochs=dict(self.report["epochs"]),
                         forced=lead_studies(self.args.forced_epochs, self.jobs),
                         status=done, running_end={n: max(end - now, 5.0) for n, (_, _, end) in self.running.items()},
                         eval_ok=eval_blocker(), smoke=self.args.smoke, lane_slowdown=self.args.lane_slowdown)

    # ---------------------------------------------------------------- jobs
    def argv(self, job: Job, epochs: int, ok: set[str]) -> list[str]:
        a = self.args
        argv = ["--out", str(self.work / job.out_name), "--epochs", str(epochs), "--device", a.device,
                "--shared", str(a.shared), "--resume", *job_args(job, ok, self.work)]
        argv += (["--train-only"] if job.kind == "train" else []) + (["--smoke"] if a.smoke else [])
        argv += (["--threads", str(a.threads)] if a.threads else []) + [f"--set={s}" for s in a.overrides]
        return argv

    def launch(self, p: Planned) -> None:
        from benchmarks.gpu.capped import CappedProcess

        job, epochs = p.job, int(p.epochs or 1)
        ok = {n for n, j in self.report["jobs"].items() if j["status"] == "ok"}
        spec = {"module": job.module, "argv": self.argv(job, epochs, ok)}
        jobs_dir = self.work / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        (jobs_dir / f"{job.name}.json").write_text(json.dumps(spec, indent=1))
        result = jobs_dir / f"{job.name}.result.json"
        result.unlink(missing_ok=True)
        cap = max(1.0, min((2 * p.est_s + 60) * self.args.cap_scale, self.left() - MARGIN_S / 2))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join(x for x in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if x)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(jobs_dir / f"{job.name}.json"),
               "--result", str(result)]
        child = CappedProcess(cmd, self.work / "logs" / f"{job.name}.log", cap, cwd=REPO_ROOT, env=env)
        self.running[job.name] = (job, child, time.perf_counter() + p.est_s)
        if job.kind == "train":
            self.report["epochs"].setdefault(job.group, epochs)  # frozen: the study's other runs use the same
        self.report["jobs"][job.name].update(status="running", epochs=epochs if job.kind == "train" else None,
                                             est_s=p.est_s, cap_s=cap, cost=job.cost, argv=spec["argv"],
                                             table_s_per_epoch=self.table.get(job.cost))
        what = f"{epochs} epoch(s), " if job.kind == "train" else ""
        self.log(f"{job.name}: started ({what}est. {p.est_s:.0f} s, cap {cap:.0f} s)")

    def reap(self, name: str, job: Job, child: Any) -> None:
        from benchmarks.gpu.capped import tail
        from benchmarks.repro.gpu_outputs import append_log

        entry = self.report["jobs"][name]
        result_path = self.work / "jobs" / f"{name}.result.json"
        try:
            payload = json.loads(result_path.read_text())
        except (OSError, ValueError):
            payload = {}
        rc = child.proc.returncode
        entry.pop("progress", None)
        entry.update(wall_s=child.wall, exit_code=rc)
        if child.timed_out:
            when = "at the budget's end" if name in self.killed_at_end else f"at its {child.cap:.0f} s cap"
            entry.update(status="timeout", error=f"killed {when}; log tail:\n{tail(child.log)}")
        elif rc != 0 or "error" in payload:
            entry.update(status="error", error=payload.get("error") or f"exit code {rc}; log tail:\n{tail(child.log)}")
        else:
            entry["status"] = "ok"
            res = payload.get("result") or {}
            run = (res.get("runs") or {}).get(job.run) if job.kind == "train" else None
            if run:
                entry.update(final=run.get("final"), train_s=run.get("train_s"), epochs=run.get("epochs"),
                             checkpoint=f"{job.out_name}.tar:runs/{job.run}/model.pt")
                if run.get("epochs") and not self.args.smoke:
                    entry["s_per_epoch"] = run["train_s"] / run["epochs"]
                    self.measured[job.cost] = entry["s_per_epoch"]
        append_log(self.out / "gpu_studies.log", name, child.log)
        self.collect(job)
        self.log(f"{name}: {entry['status']} in {child.wall:.0f} s")

    def collect(self, job: Job) -> None:
        """Rewrite the job's study archive in ``--out`` (and keep the results.md an evaluation wrote)."""
        from benchmarks.repro.gpu_outputs import write_archive

        root, entry = self.work / job.out_name, self.report["jobs"][job.name]
        if job.kind == "eval" and entry["status"] == "ok" and (root / "results.md").is_file():
            self.report["study_results"][job.out_name] = (root / "results.md").read_text()
        if root.is_dir():
            try:
                self.report["archives"][job.out_name] = write_archive(root, self.out, self.args.max_out_mb * 2**20)
            except OSError as err:
                entry["archive_error"] = f"{type(err).__name__}: {err}"

    def progress(self) -> None:
        """Epochs done so far of the running training jobs (from their metrics.json)."""
        for name, (job, _, _) in self.running.items():
            if job.kind != "train":
                continue
            try:
                rows = json.loads((self.work / job.out_name / "runs" / job.run / "metrics.json").read_text())
            except (OSError, ValueError):
                continue
            acc = rows[-1].get("test_acc") if rows else None
            self.report["jobs"][name]["progress"] = (f"epoch {len(rows)}/{self.report['jobs'][name]['epochs']}"
                                                     + (f", test acc {acc:.4f}" if acc is not None else ""))

    def run_jobs(self) -> None:
        """Plan, launch and reap until nothing runs and nothing more can start; children never outlive it (each
        runs in its own process session, so a SIGTERM to this process kills them first)."""
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._loop()
        finally:
            for _, child, _ in self.running.values():
                if not child.done:
                    child.kill()
            signal.signal(signal.SIGTERM, previous)

    def _loop(self) -> None:
        pending = [j for j in self.jobs if self.report["jobs"][j.name]["status"] != "ok"]
        for job in {j.out_name: j for j in self.jobs if j not in pending}.values():  # resumed: return them again
            self.collect(job)
        last: dict[str, Planned] = {}
        first, next_progress = True, time.perf_counter() + PROGRESS_S
        while True:
            for name, (job, child, _) in list(self.running.items()):
                child.poll()
                if child.done:
                    del self.running[name]
                    self.reap(name, job, child)
                    self.write()
            if len(self.running) < self.args.lanes and pending and self.left() > MARGIN_S:
                st = self.state()
                planned = plan(pending, st)
                if first:
                    self.report["initial_plan"], first = format_plan(planned, st), False
                last = {p.job.name: p for p in planned}
                for p in planned:
                    if len(self.running) < self.args.lanes and p.skip is None and (p.start_s or 0.0) <= 0.5:
                        self.launch(p)
                        pending.remove(p.job)
                self.write()
            if not self.running:
                break
            if self.left() < MARGIN_S / 2:
                for name, (_, child, _) in self.running.items():
                    self.killed_at_end.add(name)
                    child.kill()
            if time.perf_counter() >= next_progress:
                self.progress()
                self.write()
                next_progress = time.perf_counter() + PROGRESS_S
            time.sleep(POLL_S)
        for job in pending:
            q = last.get(job.name)
            why = q.skip if q is not None and q.skip else "the budget ran out before it could start"
            self.report["jobs"][job.name].update(status="skipped", reason=why, epochs=q.epochs if q else None,
                                                 est_s=q.est_s if q else None)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"terminated by signal {signum}")


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
    planned = plan(select(JOBS, args.only), st)
    print(f"unpack {len(args.unpack or [])} shard(s): ~{unpack_s:.0f} s; {MARGIN_S:.0f} s kept for the end\n")
    print(format_plan(planned, st))
    if args.carry is not None:
        tree, carried = travel_bytes(REPO_ROOT, args.carry)
        total = tree + carried
        print(f"\nA device call carrying {' '.join(args.carry) or 'nothing'} sends {total / 2**20:.1f} MiB of 64 MiB "
              f"(working tree {tree / 2**20:.1f}, carried {carried / 2**20:.1f})"
              + ("" if total <= 64 * 2**20 else ": TOO LARGE, the call would be refused"))
    return 0


def run_child(spec_path: str, result_path: str) -> int:
    """``--child``: call ``module.main(argv)`` from the job spec; write its return value (or the error)."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        payload, rc = {"result": importlib.import_module(spec["module"]).main(spec["argv"])}, 0
    except BaseException:  # recorded for the driver, which goes on with the next job
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        payload, rc = {"error": traceback.format_exc(limit=-6)}, 1
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, result_path)
    return rc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The driver's arguments, checked; ``--shared`` resolved (the unpack destination, or as the study scripts)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
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
