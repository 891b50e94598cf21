"""benchmarks/repro/gpu_studies.py (the prepared GPU command of issue 16): the plan fits the budget in priority
order, the driver isolates failing and over-long jobs, reports after every job, resumes, and its --smoke run
goes through the whole plan on the CPU (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmarks.repro import gpu_plan, gpu_studies
from benchmarks.repro.gpu_plan import JOBS, Job, PlanState, plan, select, update_costs

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "repro" / "gpu_studies.py"


def _plan(budget: float, lanes: int = 1, **kw) -> tuple[dict[str, gpu_plan.Planned], PlanState]:
    st = PlanState(budget_s=budget, lanes_free=[0.0] * lanes, **kw)
    return {p.job.name: p for p in plan(JOBS, st)}, st


def test_budget_picks_study1_epochs_then_skips_what_does_not_fit() -> None:
    p, st = _plan(500)
    e = st.epochs["resnet20"]
    assert 5 <= e < 30 and all(p[n].epochs == e and p[n].skip is None for n in ("s1-standard", "s1-apr_p", "s1-apr_sp"))
    assert max(p[n].end_s for n in ("s1-standard", "s1-apr_p", "s1-apr_sp")) <= 500
    assert p["s4-apr_sp_feature_apr"].epochs == e and "would not fit" in p["s4-apr_sp_feature_apr"].skip
    assert "needs s2-modulus (skipped)" in p["e2-clean-error"].skip


def test_large_budget_runs_everything_at_the_targets_in_order() -> None:
    p, st = _plan(5000)
    assert st.epochs == {"resnet20": 30, "phase_collapse": 15, "transplant": 15}
    assert all(x.skip is None for x in p.values())
    ends = [p[j.name].end_s for j in JOBS]
    assert ends == sorted(ends)  # one lane: priority order
    assert p["e3-transplant"].start_s >= p["s2-modulus"].end_s


def test_forced_epochs_lanes_and_missing_pydantic() -> None:
    p, st = _plan(5000, epochs={"resnet20": 40, "transplant": 3})
    assert p["s4-apr_sp_feature_apr"].epochs == 40 and st.epochs["transplant"] == 3
    p, st = _plan(300, epochs={"resnet20": 30}, forced=gpu_plan.lead_studies(["resnet20"]))  # study 1 past the budget
    assert p["s1-apr_sp"].skip is None and "past the budget" in p["s1-apr_sp"].note
    assert "would not fit" in p["s4-apr_sp_feature_apr"].skip
    p, st = _plan(800, lanes=3, lane_slowdown=0.0)
    assert {p[n].start_s for n in ("s1-standard", "s1-apr_p", "s1-apr_sp")} == {0.0}
    p, _ = _plan(5000, eval_ok="pydantic is not importable")
    assert p["e2-clean-error"].skip == "pydantic is not importable" and p["s2-modulus"].skip is None


def test_evaluations_use_finished_and_running_runs() -> None:
    st = PlanState(budget_s=400, lanes_free=[0.0], status={"s2-modulus": "ok", "s3-gfnet_cifar": "error"})
    p = {x.job.name: x for x in plan([j for j in JOBS if j.name == "e3-transplant"], st)}
    assert p["e3-transplant"].skip is None  # any of its runs will do
    args = gpu_plan.job_args(JOBS[-1], {"s2-modulus"}, Path("/w"))
    ckpt = "/w/phase_collapse/runs/modulus_skip/model.pt"
    assert args == ["--models", "phase_collapse", "--phase-collapse-checkpoint", ckpt]
    st = PlanState(budget_s=400, lanes_free=[0.0], status={"s2-modulus": "error"})
    assert "s2-modulus (error)" in plan([j for j in JOBS if j.name == "e2-clean-error"], st)[0].skip


def test_select_and_measured_costs() -> None:
    assert [j.name for j in select(JOBS, ["study2"])] == ["s2-modulus", "s2-soft_threshold", "e2-clean-error"]
    assert {j.kind for j in select(JOBS, ["evals"])} == {"eval"}
    with pytest.raises(ValueError, match="unknown job"):
        select(JOBS, ["study9"])
    costs = update_costs(gpu_plan.EPOCH_S, {"resnet20/apr_sp": 3.5})
    assert costs["resnet20/apr_sp"] == 3.5 and costs["resnet20/standard"] == 2.0
    assert costs["gfnet_cifar"] == gpu_plan.EPOCH_S["gfnet_cifar"]  # another model: unscaled


def test_dry_run_prints_the_plan_without_torch(tmp_path: Path) -> None:
    code = ("import sys; sys.argv[0] = 'x'; from benchmarks.repro import gpu_studies; "
            "gpu_studies.main(['--dry-run', '--budget-s', '540', '--unpack', 'p.npz', '--carry']); "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| s1-apr_sp | study1 |" in proc.stdout and "would not fit" in proc.stdout
    assert "MiB of 64 MiB" in proc.stdout
    with pytest.raises(SystemExit, match="GROUP=E"):
        gpu_studies.main(["--dry-run", "--epochs", "bogus=3"])
    with pytest.raises(SystemExit, match="--only: unknown job"):
        gpu_studies.main(["--dry-run", "--only", "bogus"])
    for bad in (["--lane-slowdown", "-3"], ["--cap-scale", "0"], ["--budget-s", "nan"]):
        with pytest.raises(SystemExit):
            gpu_studies.main(["--dry-run", *bad])


FAKE = '''
import json, time
from pathlib import Path

def main(argv):
    out, mode = Path(argv[argv.index("--out") + 1]), argv[argv.index("--mode") + 1]
    (out / "calls").mkdir(parents=True, exist_ok=True)
    (out / "calls" / f"{mode}-{time.time_ns()}").write_text("")
    if mode == "raise":
        raise RuntimeError("boom")
    if mode == "sleep":
        time.sleep(60)
    run = out / "runs" / mode
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps([{"epoch": 1, "test_acc": 0.75}]))
    (run / "model.pt").write_bytes(b"x" * 1000)
    (run / "last.pt").write_bytes(b"x" * 1000)
    return {"runs": {mode: {"epochs": 1, "train_s": 2.0, "final": {"test_acc": 0.75}}}}
'''


def _fake_jobs() -> list[Job]:
    def train(name: str, mode: str) -> Job:
        return Job(name, "study1", "resnet20", "fakejobs", "train", "resnet20/standard", ("--mode", mode), run=mode)

    return [train("a-ok", "ok"), train("b-raise", "raise"), train("c-sleep", "sleep"), train("d-ok2", "ok2"),
            Job("e-eval", "study1", "resnet20", "fakejobs", "eval", "eval/clean_error", ("--mode", "ev"),
                deps=("b-raise",))]


def test_failures_and_caps_are_recorded_and_later_jobs_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "fakejobs.py").write_text(FAKE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mods"))
    shared = tmp_path / "shared"
    for split in ("train", "test"):
        (shared / "data" / "cifar10" / split / "cat").mkdir(parents=True)
        (shared / "data" / "cifar10" / split / "cat" / "0.png").write_bytes(b"")
    (shared / "data" / "cifar10" / "test_order.csv").write_text("path\n")
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--out", str(out), "--work", str(work), "--shared", str(shared), "--smoke", "--cap-scale", "0.04"]
    rc = gpu_studies.run(gpu_studies.parse_args(argv), jobs=_fake_jobs())
    rep = json.loads((out / "gpu_studies.json").read_text())
    status = {n: j["status"] for n, j in rep["jobs"].items()}
    assert rc == 1 and status == {"a-ok": "ok", "b-raise": "error", "c-sleep": "timeout", "d-ok2": "ok",
                                  "e-eval": "skipped"}
    assert "boom" in rep["jobs"]["b-raise"]["error"] and "b-raise (error)" in rep["jobs"]["e-eval"]["reason"]
    assert rep["jobs"]["a-ok"]["final"]["test_acc"] == 0.75 and rep["meta"]["finished"]
    with tarfile.open(out / "fakejobs.tar") as tar:
        names = tar.getnames()
    assert "runs/ok/model.pt" in names and "runs/ok2/metrics.json" in names and not any("last.pt" in n for n in names)
    returned = sorted(p.name for p in out.iterdir())
    assert returned == ["fakejobs.tar", "gpu_studies.json", "gpu_studies.log", "gpu_studies.md"]
    assert "| b-raise | error |" in (out / "gpu_studies.md").read_text()
    with pytest.raises(SystemExit, match="--resume"):
        gpu_studies.run(gpu_studies.parse_args(argv), jobs=_fake_jobs())
    calls = len(list((work / "fakejobs" / "calls").iterdir()))
    gpu_studies.run(gpu_studies.parse_args([*argv, "--resume", "--only", "a-ok", "d-ok2"]), jobs=_fake_jobs())
    assert len(list((work / "fakejobs" / "calls").iterdir())) == calls  # finished jobs are not run again
    rep = json.loads((out / "gpu_studies.json").read_text())
    assert rep["jobs"]["a-ok"]["resumed"] and rep["epochs"] == {"resnet20": 1}
    real = [a for a in argv if a != "--smoke"]  # a real call must not take the smoke jobs as finished
    with pytest.raises(SystemExit, match="smoke: True there, False now"):
        gpu_studies.run(gpu_studies.parse_args([*real, "--resume"]), jobs=_fake_jobs())
    with pytest.raises(SystemExit, match="overrides"):
        gpu_studies.run(gpu_studies.parse_args([*argv, "--resume", "--set", "train.amp_dtype=float16"]), jobs=_fake_jobs())


def test_unpack_skips_a_shard_unpacked_before_and_checks_the_data(tmp_path: Path) -> None:
    from PIL import Image

    from benchmarks.repro import shared_pack

    src = tmp_path / "src"
    for split in ("train", "test"):
        (src / "data" / "cifar10" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(src / "data" / "cifar10" / split / "cat" / "0.png")
    (src / "data" / "cifar10" / "test_order.csv").write_text("path\ncat/0.png\n")
    (shard,) = shared_pack.pack(src, tmp_path / "packed", parts=1, workers=1)
    dest = tmp_path / "dest"
    assert "incomplete" in shared_pack.incomplete(dest, smoke=True)
    first = shared_pack.unpack_once([str(shard)], dest, workers=1)
    again = shared_pack.unpack_once([str(shard)], dest, workers=1)
    assert first[0]["status"] == "ok" and first[0]["files"] == 3 and again[0]["status"] == "ok (unpacked before)"
    assert shared_pack.incomplete(dest, smoke=True) is None
    assert "train: 1 of 50000" in shared_pack.incomplete(dest, smoke=False)


@pytest.mark.slow
def test_smoke_runs_the_whole_plan_on_cpu(cifar10_dir: Path, shared_root: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(work), "--smoke", "--threads",
                           "1", "--shared", str(shared_root), "--budget-s", "1200", "--lanes", "2"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1500)
    rep = json.loads((out / "gpu_studies.json").read_text())
    assert proc.returncode == 0, {n: j.get("error") for n, j in rep["jobs"].items()}
    assert {j["status"] for j in rep["jobs"].values()} == {"ok"} and list(rep["jobs"]) == [j.name for j in JOBS]
    assert set(rep["archives"]) == {"apr_cifar10", "phase_collapse", "transplant_sweeps"}
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() and p.stat().st_size < 15 * 2**20 for p in out.iterdir())
    with tarfile.open(out / "apr_cifar10.tar") as tar:
        names = set(tar.getnames())
    for run in ("standard", "apr_p", "apr_sp", "apr_sp_feature_apr"):
        assert {f"runs/{run}/{f}" for f in ("model.pt", "config.yaml", "metrics.json")} <= names
    assert not any(n.endswith("last.pt") for n in names)
    md = (out / "gpu_studies.md").read_text()
    assert "phase_collapse: results.md" in md and "transplant_sweeps: results.md" in md


def test_a_returned_run_without_last_pt_is_reused_not_retrained(tmp_path: Path) -> None:
    import argparse

    from benchmarks.repro.common import train_run

    (tmp_path / "shared" / "data" / "cifar10").mkdir(parents=True)
    run = tmp_path / "runs" / "standard"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"not a checkpoint: fit must not be called")
    (run / "metrics.json").write_text(json.dumps([{"epoch": 1, "step": 3, "time_s": 1.5},
                                                  {"epoch": 2, "step": 6, "time_s": 2.0, "test_acc": 0.5}]))
    args = argparse.Namespace(resume=True, shared=str(tmp_path / "shared"), smoke=False, epochs=2, device="auto",
                              progress=False, threads=None)
    res = train_run("repro_cifar10_resnet20_standard.yaml", run, args)
    assert res["checkpoint"] == str(run / "model.pt") and res["train_s"] == 3.5 and res["final"]["test_acc"] == 0.5
    with pytest.raises(ValueError, match="--epochs 2"):
        train_run("repro_cifar10_resnet20_standard.yaml", run, argparse.Namespace(**{**vars(args), "epochs": 30}))
