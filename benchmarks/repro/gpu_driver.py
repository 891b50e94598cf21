"""The job runner of ``gpu_studies.py``: each job of the plan (``gpu_plan``) runs as a child process with a time
cap; the :class:`Driver` plans, launches and reaps them on ``--lanes`` lanes within the budget and keeps
``gpu_studies.json`` / ``.md`` (``gpu_outputs``) current after every change.

A job is handed over as a spec file (``jobs/<name>.json``: the study module and its argv); the child, started as
``gpu_studies.py --child SPEC --result RESULT``, runs :func:`run_child`, which calls ``module.main(argv)`` and
writes its return value or the error to ``jobs/<name>.result.json``. A job that fails, exceeds its cap or is
killed at the budget's end is recorded with its log tail, and the next one still runs.
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

from benchmarks.repro.common import REPO_ROOT
from benchmarks.repro.gpu_plan import Job, Planned, PlanState, format_plan, job_args, lead_studies, plan, update_costs

__all__ = ["MARGIN_S", "ENTRY", "eval_blocker", "Driver", "run_child"]

MARGIN_S = 8.0  # kept free at the end of the budget to kill what still runs and write the report
POLL_S = 1.0
PROGRESS_S = 15.0
ENTRY = Path(__file__).resolve().with_name("gpu_studies.py")  # the script a job's child process runs (--child)


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
                     "work": str(self.work), "shared": args.shared, "lane_slowdown": args.lane_slowdown,
                     "overrides": list(args.overrides), "threads": args.threads},
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
        """Keep the finished jobs and the fixed epochs of an earlier call in the same work folder; refuse one whose
        jobs were made with other settings (``--smoke``, ``--set`` overrides, ``--device``)."""
        before, now = previous.get("meta") or {}, self.report["meta"]
        differ = [f"{k}: {before.get(k)!r} there, {now[k]!r} now" for k in ("smoke", "overrides", "device")
                  if before.get(k, [] if k == "overrides" else None) != now[k]]
        if differ:
            raise SystemExit(f"--resume: the jobs in {self.work} were made with other settings ({'; '.join(differ)}); "
                             "pass the same ones, or another --work folder")
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
        cmd = [sys.executable, str(ENTRY), "--child", str(jobs_dir / f"{job.name}.json"), "--result", str(result)]
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
