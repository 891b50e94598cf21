"""One prepared GPU check: the CUDA tests and every GPU benchmark of issue 17 in one go (``make gpu-check``).

    make gpu-check GPU_PYTHON=python3 GPU_OUT=/some/dir        # on the GPU machine (about 5 minutes)
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc   # smoke run on a CPU (seconds)

Sections, each in its own process with a hard time cap (a failure or a kill is recorded and the next
section still runs): ``env`` (versions, GPU), ``tests`` (``pytest tests/test_cuda*.py``), ``augment``
(APR-P / APR-S / FACT / FDA img/s against the FFT-only limit and a batch copy, fp32 and AMP),
``corruptions`` (19 corruptions at 224 px, ImageNet-C projection), ``eval`` (``evaluate`` against a
robustbench-style loop), ``train`` (APR-SP step against standard steps) and ``compile`` (``torch.compile``
of the APR-P and APR-S hot paths). Writes ``gpu_check.json`` (every number, the environment, each section's
status, wall time and error) and ``gpu_check.md`` (summary tables and goals) to ``--out`` after every
section, every section's output appended to ``--out/gpu_check.log`` (three files in all), and prints the summary
(goals last). The compile section may also use the time the sections before it left of their caps: the whole run
still ends within the sum of the caps.

aprkit need not be installed: the repository root is put on ``sys.path`` (and ``PYTHONPATH`` of the
sections); kornia and albumentations are not needed. Images are synthetic and models randomly
initialised, which is enough for speed. Exit code 0 when every section finished without error.
"""

from __future__ import annotations

import argparse
import math
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes `benchmarks` and aprkit importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT  # noqa: E402
from benchmarks.gpu import compiling as _compiling  # noqa: E402,F401  (registers all sections, compile last)
from benchmarks.gpu.capped import CappedProcess, tail  # noqa: E402
from benchmarks.gpu.context import SECTIONS, Context, to_jsonable  # noqa: E402
from benchmarks.gpu.report import goals, markdown  # noqa: E402


def _write(out: Path, report: dict) -> None:
    from aprkit._io import atomic_write_text

    report["goals"] = goals(report)
    atomic_write_text(out / "gpu_check.json", json.dumps(to_jsonable(report), indent=1))
    atomic_write_text(out / "gpu_check.md", markdown(report, {n: s.title for n, s in SECTIONS.items()}))


def _append_log(out: Path, name: str, how: str, log: Path) -> None:
    """Append a section's output to ``out/gpu_check.log`` (one file: the device tool returns few files)."""
    with open(out / "gpu_check.log", "a", encoding="utf-8") as fh:
        fh.write(f"===== section {name} ({how}) =====\n")
        fh.write(log.read_text(errors="replace") if log.is_file() else "(no output)\n")
    log.unlink(missing_ok=True)


def run_section_process(name: str, cap: float, args: argparse.Namespace, out: Path, scratch: Path,
                        margin: float | None = None) -> dict:
    """Run one section in a child process (own session, killed with its children at ``cap`` seconds). Its soft
    deadline, ``margin`` seconds before the cap (default: 15 % of it, at least 4 s), counts from the launch, not
    from the end of the child's imports (torch, aprkit), so that work stopped there still ends before the cap."""
    # the running section writes to out/gpu_check.running.log (kept when the whole run is killed), which is moved
    # to the end of out/gpu_check.log once the section ends
    result, log = scratch / f"{name}.json", out / "gpu_check.running.log"
    soft = max(1.0, cap - (max(4.0, 0.15 * cap) if margin is None else margin))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--result", str(result), "--out", str(out),
           "--device", args.device, "--compile-backend", args.compile_backend, "--threads", str(args.threads),
           "--deadline", f"{time.time() + soft:.3f}"] + (["--quick"] if args.quick else [])
    child = CappedProcess(cmd, log, cap, cwd=REPO_ROOT)
    rc = child.wait()
    try:
        payload = json.loads(result.read_text())
    except (OSError, ValueError):
        payload = {}
    error = payload.get("error")
    if child.timed_out:
        status, error = "timeout", error or f"killed at the {cap:.0f} s cap; log tail:\n{tail(log)}"
    elif error or rc != 0 or not payload.get("done"):
        status, error = "error", error or f"exit code {rc}; log tail:\n{tail(log)}"
    elif payload.get("results", {}).get("section_problems"):  # the section ended, but some work failed or was cut
        status, error = "error", "; ".join(payload["results"]["section_problems"])
    else:
        status = "ok"
    _append_log(out, name, f"{status}, {child.wall:.1f} s", log)
    return {"status": status, "wall_s": child.wall, "cap_s": cap, "exit_code": rc, "error": error,
            "log": f"gpu_check.log, section {name}", "results": payload.get("results", {})}


def run_all(args: argparse.Namespace) -> int:
    names = ["env"] + [n for n in (args.sections or SECTIONS) if n != "env"]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:  # before anything in --out is touched: a typo must not wipe the last run's log
        raise SystemExit(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").write_text("")  # this run's sections are appended
    scratch = Path(tempfile.mkdtemp(prefix="aprkit-gpu-check-"))
    try:
        return _run_sections(args, out, names, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # per-section result files and stand-in frost textures


def unused_time(entries: dict[str, dict]) -> float:
    """Seconds the finished sections left of their own caps (an overrun counts against it): a section registered
    with ``takes_unused`` may add them to its cap, so the whole run still ends within the sum of the caps."""
    return max(0.0, sum(e.get("own_cap_s", e["cap_s"]) - e["wall_s"] for e in entries.values()))


def _run_sections(args: argparse.Namespace, out: Path, names: list[str], scratch: Path) -> int:
    from benchmarks.gpu.env import frost_dir_or_synthetic

    frost_dir, frost_kind = frost_dir_or_synthetic(scratch / "frost")
    os.environ.update(APRKIT_FROST_DIR=frost_dir, APRKIT_GPU_CHECK_FROST=frost_kind,
                      PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    started = time.perf_counter()
    report: dict = {"meta": {"started": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:],
                             "device": args.device, "quick": args.quick, "cap_scale": args.cap_scale},
                    "sections": {}, "goals": []}
    for name in names:
        sec = SECTIONS[name]
        own = (sec.quick_cap_s if args.quick else sec.cap_s) * args.cap_scale
        extra = unused_time(report["sections"]) if sec.takes_unused else 0.0
        print(f"[gpu-check] {name}: running (cap {own + extra:.0f} s"
              + (f": its own {own:.0f} s + {extra:.0f} s the sections before it left unused)" if extra >= 1 else ")"),
              flush=True)
        # the margin for stopping follows the section's own cap: its longest step does not grow with the borrowed time
        entry = run_section_process(name, own + extra, args, out, scratch, margin=max(4.0, 0.15 * own))
        entry.update(own_cap_s=own, borrowed_s=extra)
        report["sections"][name] = entry
        report["meta"]["wall_s"] = time.perf_counter() - started
        _write(out, report)
        first = (entry["error"] or "").strip().splitlines()
        print(f"[gpu-check] {name}: {entry['status']} in {entry['wall_s']:.1f} s"
              + (f" -- {first[-1][:200]}" if first else ""), flush=True)
    report["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    _write(out, report)
    print()
    print((out / "gpu_check.md").read_text())
    print("[gpu-check] goals (again, last, so that a cut output tail keeps them):")  # the tail of a device call
    for g in report["goals"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        if g.get("unjudged"):  # e.g. a quick run: one call at tiny sizes, its ratios are noise
            verdict = f"not measured ({g['unjudged']})"
        print(f"[gpu-check]   {g['goal']}: {g['shown']} (target {g['target']}): {verdict}")
    print(f"[gpu-check] wrote {out / 'gpu_check.json'}, {out / 'gpu_check.md'} and {out / 'gpu_check.log'} "
          f"in {report['meta']['wall_s']:.0f} s", flush=True)
    return 0 if all(s["status"] == "ok" for s in report["sections"].values()) else 1


def run_child(args: argparse.Namespace) -> int:
    """``--section NAME``: run one section in this process and save its results to ``--result``."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # --deadline is wall-clock time (time.time()) set by the parent at the launch; perf_counter() from here on
    soft = 60.0 if args.deadline is None else args.deadline - time.time()
    ctx = Context(device=torch.device(args.device), quick=args.quick, deadline=time.perf_counter() + soft,
                  result_path=Path(args.result), out_dir=Path(args.out), compile_backend=args.compile_backend)
    ctx.save()
    try:
        if ctx.is_cuda and not torch.cuda.is_available():
            raise RuntimeError(f"--device {args.device} but torch.cuda.is_available() is False "
                               f"(torch {torch.__version__})")
        SECTIONS[args.section].fn(ctx)
    except BaseException:  # recorded for the parent; the next section still runs
        ctx.save(error=traceback.format_exc(limit=-8))
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        return 1
    ctx.save(done=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gpu-check", help="output folder (default: runs/gpu-check)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (for testing the script)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: a smoke run of every section")
    ap.add_argument("--sections", nargs="+", default=None, metavar="NAME",
                    help=f"run only these sections (env always runs); default: all of {', '.join(SECTIONS)}")
    ap.add_argument("--cap-scale", type=float, default=1.0, help="multiply every section's time cap (default 1)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads in the sections (0: torch's choice)")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default: inductor; eager with --quick: Dynamo tracing only)")
    ap.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this process
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)  # time.time() of the soft deadline
    args = ap.parse_args(argv)
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.quick else "inductor"
    if not (args.cap_scale > 0 and math.isfinite(args.cap_scale)):  # (nan passed "<= 0": every cap 0 s)
        ap.error(f"--cap-scale must be a positive number, got {args.cap_scale}")
    if args.threads < 0:
        ap.error(f"--threads must be 0 (torch's choice) or more, got {args.threads}")
    import torch

    try:  # a misspelt device is refused once, here; an unavailable one is each section's recorded error (env says why)
        torch.device(args.device)
    except (RuntimeError, TypeError):
        ap.error(f"--device {args.device!r} is not a torch device; expected cuda, cuda:N or cpu")
    return run_child(args) if args.section else run_all(args)


if __name__ == "__main__":
    sys.exit(main())
