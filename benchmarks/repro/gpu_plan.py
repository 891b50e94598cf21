"""The plan of ``gpu_studies.py``: issue 16's studies as jobs in priority order, their cost on one H200, and the
epochs that fit a wall-time budget. Pure Python (no torch), so ``--dry-run`` and the tests need nothing else.

A job is one child process that calls a study script's ``main``: a training run (``--train-only``) or an
evaluation that resumes the finished runs. Jobs start in priority order on ``lanes`` concurrent children (1: one
after the other). The training runs of a study share one epoch count, chosen when the study is planned: the
largest in its group's range that lets all of the study's runs finish within the budget (study 1 up to the
issue's 30, study 4 the same as study 1, studies 2 and 3 up to 15 with what is left). A study whose runs do not
all fit is skipped with the reason; an evaluation is planned only when the runs it reads are. The driver
re-plans whenever a lane frees up, with the time actually left and the per-epoch costs measured so far.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Job", "JOBS", "EPOCH_S", "MEASURED", "EPOCH_RANGE", "Planned", "PlanState", "plan", "duration",
           "lead_studies", "select", "job_args", "update_costs", "format_plan", "travel_bytes"]

_S = "benchmarks.repro."


@dataclass(frozen=True)
class Job:
    """One child process: ``module.main(argv)``; training jobs train one run (``run``) of their study."""

    name: str  # unique, usable as a file name
    study: str  # study1 .. study4 (what --only selects)
    group: str  # the studies sharing one epoch count: resnet20 (1, 4), phase_collapse (2), transplant (3)
    module: str  # dotted module whose main(argv) runs the job; its --out is WORK/<last part of the name>
    kind: str  # "train" or "eval"
    cost: str  # key of EPOCH_S (train: seconds per epoch) or EVAL_S (eval: seconds)
    args: tuple[str, ...] = ()
    run: str = ""  # the run folder (runs/<run>) a training job writes
    deps: tuple[str, ...] = ()  # the jobs whose runs an evaluation reads
    any_dep: bool = False  # run with whichever of ``deps`` finished (else all are needed)

    @property
    def out_name(self) -> str:
        return self.module.rsplit(".", 1)[-1]


def _train(name: str, study: str, group: str, module: str, cost: str, flag: str, run: str) -> Job:
    return Job(name, study, group, _S + module, "train", cost, (flag, run), run=run)


#: every job, in priority order (issue 16: studies 1, 4, 2, 3, then the evaluations that fit on the GPU)
JOBS: tuple[Job, ...] = (
    _train("s1-standard", "study1", "resnet20", "apr_cifar10", "resnet20/standard", "--runs", "standard"),
    _train("s1-apr_p", "study1", "resnet20", "apr_cifar10", "resnet20/apr_p", "--runs", "apr_p"),
    _train("s1-apr_sp", "study1", "resnet20", "apr_cifar10", "resnet20/apr_sp", "--runs", "apr_sp"),
    _train("s4-apr_sp_feature_apr", "study4", "resnet20", "apr_cifar10", "resnet20/apr_sp_feature_apr", "--runs",
           "apr_sp_feature_apr"),
    # study 2 on the GPU: the paper's headline configuration, LScat + skip (the ~3x: 22.5 vs 7.7 %)
    _train("s2-modulus", "study2", "phase_collapse", "phase_collapse", "phase_collapse/modulus_skip", "--runs",
           "modulus_skip"),
    _train("s2-soft_threshold", "study2", "phase_collapse", "phase_collapse", "phase_collapse/soft_threshold_skip",
           "--runs", "soft_threshold_skip"),
    _train("s3-gfnet_cifar", "study3", "transplant", "transplant_sweeps", "gfnet_cifar", "--models", "gfnet_cifar"),
    _train("s3-vit_tiny_p4", "study3", "transplant", "transplant_sweeps", "vit_tiny_p4", "--models", "vit_tiny_p4"),
    Job("e2-clean-error", "study2", "phase_collapse", _S + "phase_collapse", "eval", "eval/clean_error",
        ("--runs", "modulus_skip", "soft_threshold_skip", "--clean-only"), deps=("s2-modulus", "s2-soft_threshold")),
    Job("e3-transplant", "study3", "transplant", _S + "transplant_sweeps", "eval", "eval/transplant",
        deps=("s3-gfnet_cifar", "s3-vit_tiny_p4", "s2-modulus"), any_dep=True),
)

#: seconds per 50,000-image epoch at batch 128, bf16 autocast. MEASURED: the 12-epoch study-1 runs on one H200
#: (training wall time / epochs, eager APR; CUDA-graph APR, the default aug.compile=auto, is likely faster) and
#: studies 2 and 3 on one H100 (2026-12-05: 4 and 5 epochs); the others are guesses from FLOPs and kernel counts.
#: The driver replaces them as runs finish (update_costs).
EPOCH_S: dict[str, float] = {
    "resnet20/standard": 4.0, "resnet20/apr_p": 6.5, "resnet20/apr_sp": 7.0, "resnet20/apr_sp_feature_apr": 8.5,
    "phase_collapse/modulus_skip": 28.2, "phase_collapse/soft_threshold_skip": 30.6, "gfnet_cifar": 4.2,
    "vit_tiny_p4": 4.9,
}
# (apr_p's 4.4 s was APR-P alone; it now also trains on the clean batch: a 2B forward like APR-SP's, a guess)
MEASURED = frozenset({"resnet20/standard", "resnet20/apr_sp", "phase_collapse/modulus_skip",
                      "phase_collapse/soft_threshold_skip", "gfnet_cifar", "vit_tiny_p4"})
#: seconds per training job beyond its epochs: process start, imports, CUDA context, decoding the PNGs, saving
START_S = 15.0
#: the APR runs compile their APR core into a CUDA graph first (a guess)
COMPILE_S = {"resnet20/apr_p": 20.0, "resnet20/apr_sp": 20.0, "resnet20/apr_sp_feature_apr": 20.0}
#: evaluation jobs, seconds: the two phase-collapse nets on the 10,000 clean test images (measured on an H100,
#: 22 s with the process start); the transplant sweeps of up to three models (2,000 test images, 1,000 pairs per
#: site; a guess)
EVAL_S = {"eval/clean_error": 30.0, "eval/transplant": 150.0}
#: seconds per job with --smoke (one epoch on 256 images, on a CPU)
SMOKE_S = {"train": 30.0, "eval": 60.0}
UNPACK_S = 10.0  # one ~52 MiB WebP shard into PNGs (1.2 s with 8 processes on an H100 machine, 2026-12-05)
#: (fewest, most) epochs per group when not forced; the most is the target
EPOCH_RANGE = {"resnet20": (5, 30), "phase_collapse": (2, 15), "transplant": (2, 15)}
GROUP_STUDIES = {"resnet20": "studies 1, 4", "phase_collapse": "study 2", "transplant": "study 3"}


def lead_studies(groups: Iterable[str], jobs: Sequence[Job] = JOBS) -> frozenset[str]:
    """The study that fixes each group's epochs (the first in priority order): what ``--epochs`` forces."""
    return frozenset(next(j.study for j in jobs if j.group == g) for g in groups if any(j.group == g for j in jobs))


def select(jobs: Sequence[Job], only: Iterable[str] | None) -> list[Job]:
    """The jobs named in ``only`` (job names, studies, or ``evals``), in priority order; all without ``only``."""
    if not only:
        return list(jobs)
    names = set(only)
    known = {j.name for j in jobs} | {j.study for j in jobs} | {"evals"}
    if names - known:
        raise ValueError(f"unknown job(s) or study(ies) {sorted(names - known)}; valid: {', '.join(sorted(known))}")
    return [j for j in jobs if j.name in names or j.study in names or (j.kind == "eval" and "evals" in names)]


def job_args(job: Job, ok: set[str], work: Path) -> list[str]:
    """The study-specific arguments of ``job``; the transplant evaluation takes the trained models that exist."""
    if job.name != "e3-transplant":
        return list(job.args)
    models = [m for m, dep in (("gfnet_cifar", "s3-gfnet_cifar"), ("vit_tiny_p4", "s3-vit_tiny_p4")) if dep in ok]
    if "s2-modulus" not in ok:
        return ["--models", *models]
    ckpt = work / "phase_collapse" / "runs" / "modulus_skip" / "model.pt"
    return ["--models", *models, "phase_collapse", "--phase-collapse-checkpoint", str(ckpt)]


def update_costs(table: Mapping[str, float], measured: Mapping[str, float]) -> dict[str, float]:
    """``table`` with the measured seconds per epoch; an unmeasured key of a model with measured ones (the part
    before ``/``) is scaled by their mean measured / table ratio."""
    out = dict(table)
    ratios: dict[str, list[float]] = {}
    for key, sec in measured.items():
        if key in table and table[key] > 0:
            ratios.setdefault(key.split("/")[0], []).append(sec / table[key])
        out[key] = sec
    for key in table:
        r = ratios.get(key.split("/")[0])
        if key not in measured and r:
            out[key] = table[key] * sum(r) / len(r)
    return out


@dataclass
class PlanState:
    """What the planner needs: seconds left, when each lane frees up (seconds from now), the epochs already fixed
    per group (forced, or frozen when the group's first run started), finished jobs (name -> status) and the
    expected end of running ones."""

    budget_s: float
    lanes_free: list[float]
    costs: Mapping[str, float] = field(default_factory=lambda: dict(EPOCH_S))
    epochs: dict[str, int] = field(default_factory=dict)
    forced: frozenset[str] = frozenset()  # studies whose epochs were forced (lead_studies): planned past the budget too
    status: dict[str, str] = field(default_factory=dict)
    running_end: dict[str, float] = field(default_factory=dict)
    eval_ok: str | None = None  # why evaluations cannot run (None: they can)
    smoke: bool = False
    lane_slowdown: float = 0.5  # each further busy lane makes every job this much slower (an assumption)


@dataclass
class Planned:
    job: Job
    epochs: int | None
    est_s: float
    start_s: float | None = None  # seconds from now; None when skipped
    end_s: float | None = None
    skip: str | None = None
    note: str | None = None


def duration(job: Job, epochs: int | None, st: PlanState) -> float:
    """Estimated seconds of ``job`` at ``epochs`` (train jobs), slowed by the other lanes."""
    if st.smoke:
        base = SMOKE_S[job.kind]
    elif job.kind == "eval":
        base = EVAL_S[job.cost]
    else:
        base = START_S + COMPILE_S.get(job.cost, 0.0) + (epochs or 0) * st.costs[job.cost]
    return base * (1 + st.lane_slowdown * (len(st.lanes_free) - 1))


def plan(pending: Sequence[Job], st: PlanState) -> list[Planned]:
    """Schedule ``pending`` (priority order) on the lanes; fixes each group's epochs in ``st.epochs``."""
    lanes, ends = list(st.lanes_free), dict(st.running_end)
    done: dict[str, Planned] = {}
    for job in pending:
        if job.name in done:
            continue
        if job.kind == "train":
            for p in _plan_study([j for j in pending if j.study == job.study and j.kind == "train"], st, lanes):
                done[p.job.name] = p
                if p.end_s is not None:
                    ends[p.job.name] = p.end_s
        else:
            p = _plan_eval(job, st, lanes, ends, done)
            done[job.name] = p
            if p.end_s is not None:
                ends[job.name] = p.end_s
    return [done[j.name] for j in pending]


def _plan_study(runs: list[Job], st: PlanState, lanes: list[float]) -> list[Planned]:
    group = runs[0].group
    lo, hi = (1, 1) if st.smoke else EPOCH_RANGE[group]
    candidates = [st.epochs[group]] if group in st.epochs else list(range(hi, lo - 1, -1))
    forced = runs[0].study in st.forced
    for e in candidates:
        trial, out = list(lanes), []
        for job in runs:
            i = min(range(len(trial)), key=trial.__getitem__)
            d = duration(job, e, st)
            if trial[i] + d > st.budget_s and not forced:
                break
            over = trial[i] + d - st.budget_s
            note = f"forced epochs: ends ~{over:.0f} s past the budget" if over > 0 else None
            out.append(Planned(job, e, d, trial[i], trial[i] + d, note=note))
            trial[i] += d
        else:
            lanes[:] = trial
            st.epochs[group] = e
            return out
    e = candidates[-1]
    need = sum(duration(j, e, st) for j in runs)
    why = (f"would not fit: {len(runs)} run(s) of {e} epoch(s) need ~{need:.0f} s on {len(lanes)} lane(s), "
           f"{max(0.0, st.budget_s - min(lanes)):.0f} s left")
    return [Planned(j, e, duration(j, e, st), skip=why) for j in runs]


def _plan_eval(job: Job, st: PlanState, lanes: list[float], ends: dict[str, float],
               planned: dict[str, Planned]) -> Planned:
    epochs = st.epochs.get(job.group, 1 if st.smoke else EPOCH_RANGE[job.group][0])
    d = duration(job, epochs, st)
    if st.eval_ok is not None:
        return Planned(job, epochs, d, skip=st.eval_ok)
    ready = [dep for dep in job.deps if st.status.get(dep) == "ok" or dep in ends]
    missing = [dep for dep in job.deps if dep not in ready]
    if not ready or (missing and not job.any_dep):
        why = {dep: st.status.get(dep) or ("skipped" if planned.get(dep) else "not selected") for dep in missing}
        return Planned(job, epochs, d, skip="needs " + ", ".join(f"{k} ({v})" for k, v in why.items()))
    i = min(range(len(lanes)), key=lanes.__getitem__)
    start = max([lanes[i], *(ends.get(dep, 0.0) for dep in ready)])
    if start + d > st.budget_s:
        return Planned(job, epochs, d, skip=f"would not fit: ~{d:.0f} s, {st.budget_s - start:.0f} s left at its start")
    lanes[i] = start + d
    return Planned(job, epochs, d, start, start + d)


def format_plan(planned: Sequence[Planned], st: PlanState) -> str:
    """The plan as a Markdown table, with the epochs of each group."""
    rows = ["| job | study | epochs | est. s | start - end s | note |", "|---|---|---|---|---|---|"]
    for p in planned:
        when = "-" if p.start_s is None else f"{p.start_s:.0f} - {p.end_s:.0f}"
        cost = p.job.cost
        note = p.skip or p.note or ("" if p.job.kind == "eval" or st.smoke else
                          f"{st.costs[cost]:.1f} s/epoch ({'measured' if cost in MEASURED else 'guess'})")
        rows.append(f"| {p.job.name} | {p.job.study} | {p.epochs if p.epochs is not None else '-'} | {p.est_s:.0f} | "
                    f"{when} | {note} |")
    groups = ", ".join(f"{g} ({GROUP_STUDIES[g]}) {st.epochs.get(g, '-')}" for g in EPOCH_RANGE)
    return f"Epochs: {groups}; budget {st.budget_s:.0f} s on {len(st.lanes_free)} lane(s).\n\n" + "\n".join(rows)


def travel_bytes(root: Path, carry: Sequence[str]) -> tuple[int, int]:
    """What a device-tool call would send from the checkout ``root``: (bytes of tracked and untracked-not-ignored
    files, bytes of the carried paths)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((root / f).stat().st_size for f in dict.fromkeys(listed) if f and (root / f).is_file())
    carried = 0
    for c in carry:
        p = root / c
        if not p.exists():
            raise FileNotFoundError(f"carry path {c} does not exist under {root}")
        files = [p] if p.is_file() else [Path(d) / f for d, _, fs in os.walk(p) for f in fs]
        carried += sum(f.stat().st_size for f in files)
    return tree, carried
