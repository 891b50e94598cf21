"""What ``gpu_studies.py`` brings back from the GPU machine: ``gpu_studies.json`` / ``.md`` (rewritten after every
change), ``gpu_studies.log`` and one tar per study script, all kept within the device tool's limits on returned
files (at most 8 files, each under 16 MiB, 64 MiB together, at most two folders down).

A study's tar holds ``runs/<run>/`` (config.yaml, metrics.json, metrics.csv, then model.pt) and its results and
eval report, never ``last.pt`` or the eval cache (those stay in the work folder). A file that would take the
archive past ``FILE_MAX`` or the output past ``--max-out-mb`` is left out and listed (the phase-collapse nets,
GFNet and the ViT have checkpoints of 20-47 MiB).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FILE_MAX", "write_archive", "render", "dumps", "append_log"]

FILE_MAX = 15 * 2**20  # per returned file (the tool's limit: 16 MiB)
RESERVE = 3 * 2**20  # room kept for the growing JSON, Markdown and log
LOG_TAIL = 64 * 1024  # characters of each job's log appended to gpu_studies.log
_SKIP_PARTS = {"cache", "tb"}


def _candidates(root: Path) -> list[Path]:
    """Files worth returning under ``root``: small ones first, checkpoints last; never last.pt or caches."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "last.pt" and not p.name.endswith(".tmp")
             and not _SKIP_PARTS & set(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: (p.suffix == ".pt", str(p.relative_to(root))))


def write_archive(root: Path, out: Path, max_out: int) -> dict[str, Any]:
    """Write ``out/<root name>.tar`` from ``root``; return its size, members and the files left out (with why)."""
    from aprkit._io import atomic_write

    dest = out / f"{root.name}.tar"
    others = sum(p.stat().st_size for p in out.iterdir() if p.is_file() and p != dest)
    limit = min(FILE_MAX, max_out - others - RESERVE)
    members, left, size = [], [], 1024  # the tar's closing blocks
    for p in _candidates(root):
        n = p.stat().st_size
        block = 512 + -(-n // 512) * 512
        if size + block > limit:
            why = f"{n / 2**20:.1f} MiB would take the archive past {limit / 2**20:.1f} MiB"
            left.append({"file": str(p.relative_to(root)), "bytes": n, "why": why})
            continue
        members.append(p)
        size += block

    def write(fh: Any) -> None:
        with tarfile.open(fileobj=fh, mode="w") as tar:
            for p in members:
                tar.add(p, arcname=str(p.relative_to(root)), recursive=False)

    atomic_write(dest, write, durable=False)
    return {"file": dest.name, "bytes": dest.stat().st_size, "members": [str(p.relative_to(root)) for p in members],
            "left_out": left}


def append_log(log: Path, name: str, job_log: Path) -> None:
    """Append the tail of a job's log to the combined log under a header."""
    from benchmarks.gpu.capped import tail

    text = tail(job_log, LOG_TAIL)
    if not text.strip():
        return
    with open(log, "a") as fh:
        fh.write(f"\n===== {name} ({job_log.name}, last {len(text)} characters) =====\n{text}\n")


def _fmt(v: Any, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def _note(job: Mapping[str, Any]) -> str:
    """Why a job was skipped, the last line of its error, or its progress."""
    if job.get("reason"):
        return str(job["reason"])
    if job.get("error"):
        return (str(job["error"]).strip().splitlines() or [""])[-1]
    return "finished in an earlier call (--resume)" if job.get("resumed") else str(job.get("progress") or "")


def render(report: Mapping[str, Any]) -> str:
    """``gpu_studies.md``: the environment, each job's outcome, the returned files, the plan and the studies'
    results written on the GPU."""
    meta, env = report["meta"], report.get("env") or {}
    lines = [
        "# GPU studies (issue 16)", "",
        f"{env.get('gpu_name', env.get('device', meta.get('device')))}; torch {env.get('torch', '-')}, commit "
        f"{env.get('git_commit', '-')}; {'SMOKE RUN (tiny data, numbers meaningless); ' if meta.get('smoke') else ''}"
        f"budget {meta['budget_s']:.0f} s on {meta['lanes']} lane(s); wall {_fmt(meta.get('wall_s'))} s"
        f"{'' if meta.get('finished') else ' (still running or killed)'}.", "",
        "Epochs: " + (", ".join(f"{g} {e}" for g, e in (report.get("epochs") or {}).items()) or "none fixed"),
    ]
    lines += [""] if report.get("unpack") or report.get("data_error") else []
    for step in report.get("unpack", []):
        lines.append(f"- unpack {step['shard']}: {step['status']}, {step.get('files', '-')} files in "
                     f"{_fmt(step.get('wall_s'), '.1f')} s{(' -- ' + step['error']) if step.get('error') else ''}")
    if report.get("data_error"):
        lines.append(f"- data: {report['data_error']}")
    lines += ["", "| job | status | epochs | est. s | cap s | wall s | s/epoch (table) | test error % | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, j in report["jobs"].items():
        final = j.get("final") or {}
        err = None if final.get("test_acc") is None else 100 * (1 - final["test_acc"])
        spe = f"{_fmt(j.get('s_per_epoch'), '.2f')} ({_fmt(j.get('table_s_per_epoch'), '.1f')})"
        note = _note(j)
        lines.append(f"| {name} | {j['status']} | {_fmt(j.get('epochs'), 'd')} | {_fmt(j.get('est_s'))} | "
                     f"{_fmt(j.get('cap_s'))} | {_fmt(j.get('wall_s'))} | {spe} | {_fmt(err, '.2f')} | "
                     f"{note[:160].replace('|', '/')} |")
    lines += ["", "## Returned archives", ""]
    for a in (report.get("archives") or {}).values():
        lines.append(f"- `{a['file']}` ({a['bytes'] / 2**20:.1f} MiB, {len(a['members'])} files)"
                     + "".join(f"; left out {x['file']} ({x['why']})" for x in a["left_out"]))
    for name, md in (report.get("study_results") or {}).items():
        demoted = "\n".join("##" + x if x.startswith("#") else x for x in md.strip().splitlines())
        lines += ["", f"## {name}: results.md written on the GPU", "", demoted]
    if report.get("initial_plan"):
        lines += ["", "## Plan at the start", "", report["initial_plan"]]
    return "\n".join(lines) + "\n"


def dumps(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=1, default=str)
