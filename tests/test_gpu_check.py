"""benchmarks/gpu_check.py on the CPU: the quick smoke run writes every section, failures are recorded, not fatal.

The runs simulate the GPU machine: kornia, albumentations, scikit-learn, torchmetrics and OpenCV cannot be
imported (stub modules that raise ImportError come first on PYTHONPATH) and the script is started from
another working directory, so it must find aprkit and the benchmarks through its own path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ABSENT_ON_GPU_MACHINE = ("kornia", "albumentations", "sklearn", "torchmetrics", "cv2")
if str(REPO) not in sys.path:  # `benchmarks` is imported from the repository, not installed
    sys.path.insert(0, str(REPO))


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict, str]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for mod in ABSENT_ON_GPU_MACHINE:
        (stubs / f"{mod}.py").write_text(f"raise ImportError('{mod} is not installed on the GPU machine')\n")
    env = dict(os.environ, PYTHONPATH=str(stubs), OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--threads", "1", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)
    report = json.loads((out / "gpu_check.json").read_text())
    return proc, report, (out / "gpu_check.md").read_text()


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section(tmp_path: Path) -> None:
    proc, report, md = _run(tmp_path, "--device", "cpu", "--quick")
    from benchmarks.gpu_check import SECTIONS

    assert list(report["sections"]) == list(SECTIONS)
    bad = {n: s["error"] for n, s in report["sections"].items() if s["status"] != "ok"}
    assert not bad, bad
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = {n: s["results"] for n, s in report["sections"].items()}
    assert res["env"]["torch"] and "kornia" in res["env"]["optional_packages"]
    assert res["tests"]["total"] > 50 and res["tests"]["failed"] == 0 and res["tests"]["errors"] == 0
    assert {r["mode"] for r in res["augment"]["rows"]} == {"fp32", "amp_fp16", "amp_bf16", "fp16_input"}
    assert all("vs_fft_limit" in r["candidates"]["apr_pair"] for r in res["augment"]["rows"])
    assert len(res["corruptions"]["img_s"]["items_generator"]) == 19 and res["corruptions"]["imagenet_c_hours"]
    assert res["eval"]["rows"]["small_cnn"]["ratio"] > 0 and res["eval"]["rows"]["small_cnn"]["max_accuracy_diff"] < 1e-6
    assert res["train"]["rows"]["8, float32"]["apr_sp_step_s"] > 0
    assert res["compile"]["rows"] and "graph_breaks" in res["compile"]["rows"][0]
    assert all(s["wall_s"] > 0 and s["cap_s"] > 0 for s in report["sections"].values())
    for heading in ("## Goals", "## 1. CUDA tests", "## 2. Augmentations", "## 3. Corruptions", "## 4. Evaluation",
                    "## 5. Training", "## 6. torch.compile"):
        assert heading in md and heading in proc.stdout
    assert report["meta"]["wall_s"] < 120


def test_failing_sections_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    proc, report, md = _run(tmp_path, "--device", "cuda:99", "--quick", "--sections", "augment", timeout=120)
    assert proc.returncode == 1
    assert list(report["sections"]) == ["env", "augment"]  # env failed, augment still ran (and failed too)
    for sec in report["sections"].values():
        assert sec["status"] == "error" and sec["error"] and sec["wall_s"] > 0
    assert "| env | error |" in md and "| augment | error |" in md


def test_a_section_past_its_cap_is_killed_and_reported(tmp_path: Path) -> None:
    proc, report, _ = _run(tmp_path, "--device", "cpu", "--quick", "--sections", "tests", "--cap-scale", "0.01", timeout=60)
    assert proc.returncode == 1
    sec = report["sections"]["tests"]
    assert sec["status"] == "timeout" and "cap" in sec["error"] and sec["wall_s"] < 5


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    from benchmarks.gpu_check import main

    (tmp_path / "gpu_check.log").write_text("the last run's log")
    with pytest.raises(SystemExit, match=r"unknown section\(s\) \['augmnt'\]; valid: env, tests, augment"):
        main(["--out", str(tmp_path), "--sections", "augmnt"])
    assert (tmp_path / "gpu_check.log").read_text() == "the last run's log"  # refused before --out is touched
    for bad, message in ((["--threads", "-1"], "--threads must be 0"), (["--device", "cdua"], "not a torch device")):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path), *bad])


def test_a_section_whose_work_failed_is_an_error(tmp_path: Path) -> None:
    """Compile errors in every row (or a test run cut at the cap) left the section 'ok' and the exit code 0."""
    proc, report, md = _run(tmp_path, "--device", "cpu", "--quick", "--sections", "compile", "--compile-backend",
                            "bogus", timeout=180)
    sec = report["sections"]["compile"]
    assert proc.returncode == 1 and sec["status"] == "error" and "InvalidBackend" in sec["error"], sec
    assert report["sections"]["env"]["status"] == "ok"


def test_report_renders_partial_results() -> None:
    from benchmarks.gpu.report import goals, markdown

    report = {"meta": {"quick": False, "wall_s": 12.0},
              "sections": {"env": {"status": "ok", "results": {"gpu_name": "X"}},
                           "augment": {"status": "timeout", "error": "killed at the 40 s cap",
                                       "results": {"rows": [{"batch": 4, "size": 32, "mode": "fp32", "output_dtype": "f32",
                                                             "max_diff_vs_fp32": 0.0,
                                                             "candidates": {"apr_pair": {"img_s": 10.0, "vs_fft_limit": 0.85}}}],
                                                   "skipped_for_time": ["amp_fp16 4x3x32x32"]}},
                           "eval": {"status": "error", "error": "Traceback\nValueError: boom", "results": {}}}}
    report["goals"] = goals(report)
    apr = [g for g in report["goals"] if g["goal"].startswith("APR-P core")]
    assert apr and apr[0]["met"] is True
    md = markdown(report, {})
    assert "ValueError: boom" in md and "not measured (time cap): amp_fp16" in md and "| timeout |" in md


def test_apr_p_goal_is_the_best_of_eager_and_compiled() -> None:
    from benchmarks.gpu.report import goals

    aug = {"rows": [{"batch": 4, "size": s, "mode": "fp32", "candidates": {"apr_pair": {"vs_fft_limit": r}}}
                    for s, r in ((32, 0.3), (224, 0.9))]}
    comp = {"backend": "inductor", "rows": [{"target": "APRPair compile_core", "mode": "reduce-overhead", "batch": 4, "size": 32,
                                             "vs_fft_limit": 0.99},  # graph replay against the eager limit: left out
                                            {"target": "apr_pair", "mode": "reduce-overhead", "batch": 4, "size": 32,
                                             "vs_fft_limit": 0.97, "vs_fft_limit_same_mode": 0.95},
                                            {"target": "APRPair compile_core", "mode": "max-autotune-no-cudagraphs",
                                             "batch": 4, "size": 224, "vs_fft_limit": 0.85},  # no graphs: counts
                                            {"target": "apr_pair", "batch": 4, "size": 224,
                                                                     "vs_fft_limit": 0.5}, {"target": "x", "batch": 4, "size": 224},
                                            {"target": "APRSingleBatch compile_core", "mode": "default", "batch": 4,
                                             "size": 224, "vs_fft_limit": 0.99},  # APR-S: not an APR-P figure
                                            {"target": "apr_pair strided scale", "mode": "reduce-overhead", "batch": 4,
                                             "size": 224, "vs_fft_limit_same_mode": 0.99}]}  # the old scaling: neither
    report = {"sections": {"augment": {"results": aug}, "compile": {"results": comp}}}
    apr = {g["goal"].split(",")[1].split()[2]: g for g in goals(report) if g["goal"].startswith("APR-P core")}
    assert apr["3x32x32"]["value"] == 0.95 and "reduce-overhead" in apr["3x32x32"]["shown"] and apr["3x32x32"]["met"]
    assert "limit in that mode" in apr["3x32x32"]["shown"]
    assert apr["3x224x224"]["value"] == 0.9 and "eager apr_pair" in apr["3x224x224"]["shown"]  # 0.9 > 0.85


def test_frost_fallback_writes_stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aprkit.corruptions import _frost, corrupt
    from benchmarks.gpu.env import frost_dir_or_synthetic

    monkeypatch.delenv("APRKIT_FROST_DIR", raising=False)
    monkeypatch.setattr(_frost, "_installed_dir", lambda: None)
    directory, kind = frost_dir_or_synthetic(tmp_path / "frost")
    assert kind.startswith("synthetic") and Path(directory) == tmp_path / "frost"
    import torch

    x = torch.zeros(2, 3, 224, 224, dtype=torch.uint8)
    y = corrupt(x, "frost", 3, "imagenet", torch.Generator().manual_seed(0), frost_dir=directory)
    assert y.shape == x.shape and y.float().mean() > 10


def test_failing_tests_and_section_problems_render_side_by_side(tmp_path: Path) -> None:
    """The failing tests (junit ``problems``) and the section's own ``section_problems`` live under separate keys:
    sharing one list crashed both the status line and the report when a CUDA test failed."""
    import torch

    from benchmarks.gpu.context import Context
    from benchmarks.gpu.report import goals, markdown

    ctx = Context(device=torch.device("cpu"), quick=True, deadline=0.0, result_path=tmp_path / "r.json")
    ctx.results.update(exit_code=1, passed=3, failed=1, errors=0, skipped=0, total=4,
                       problems=[{"kind": "failure", "test": "tests/test_cuda.py::t", "message": "boom"}])
    ctx.problem("pytest exit code 1: 3 passed, 1 failed")
    saved = json.loads((tmp_path / "r.json").read_text())["results"]
    assert saved["section_problems"] == ["pytest exit code 1: 3 passed, 1 failed"]
    report = {"meta": {}, "goals": [], "sections": {"tests": {"status": "error", "error": "; ".join(
        saved["section_problems"]), "wall_s": 1.0, "cap_s": 2.0, "results": saved}}}
    report["goals"] = goals(report)
    md = markdown(report, {"tests": "CUDA tests"})
    assert "- failure: tests/test_cuda.py::t: boom" in md and "| tests | error |" in md


def test_the_cuda_tests_pass_with_the_cpu_standing_in() -> None:
    """``make gpu-check`` runs ``tests/test_cuda*.py`` on a GPU that is lent only now and then: run here with the CPU
    as their device (``APRKIT_TEST_DEVICE=cpu``), so that a test gone stale fails in CI, not in those minutes (one
    called a checked API with a made-up corruption name and failed on every GPU run)."""
    from benchmarks.gpu.sections import CUDA_TESTS

    assert "tests/test_cuda.py" in CUDA_TESTS and "tests/test_cuda_suites.py" in CUDA_TESTS
    env = {**os.environ, "APRKIT_TEST_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *CUDA_TESTS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " skipped" not in proc.stdout.splitlines()[-1]


def test_two_input_ops_are_measured_against_their_own_fft_limit():
    """APR-S, the amplitude mix and the low-frequency swap run two rfftn and one irfftn: their ratio is against that
    limit (against rfftn + irfftn of one input they were capped near 0.67 by construction)."""
    from benchmarks.bench_augment import throughput

    rows = throughput({"fft_limit": 1.0, "fft2_limit": 1.5, "apr_pair": 2.0, "mix_amplitude": 3.0, "copy": 0.5}, 10)
    assert rows["apr_pair"]["vs_fft_limit"] == 0.5 and rows["apr_pair"]["limit"] == "fft_limit"
    assert rows["mix_amplitude"]["vs_fft_limit"] == 0.5 and rows["mix_amplitude"]["limit"] == "fft2_limit"
    assert "vs_fft_limit" not in rows["fft2_limit"] and rows["copy"]["img_s"] == 20


def _stand_in_pytest(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """``run_tests`` starts ``script`` (Python source; pytest's arguments follow) instead of pytest."""
    from benchmarks.gpu import sections

    monkeypatch.setattr(sections, "PYTEST", (sys.executable, "-c", script))


def test_tests_section_keeps_partial_counts_when_pytest_is_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """pytest gets the section's time left minus a margin, so it is stopped (not the section killed) and the result
    lines seen so far count; its output goes to the section's log; the junit report's folder is removed."""
    import time

    import torch

    from benchmarks.gpu.context import Context
    from benchmarks.gpu.sections import TESTS_MARGIN_S, run_tests

    _stand_in_pytest(monkeypatch, "import time\nfor w in ('PASSED', 'PASSED', 'FAILED'):\n"
                                  "    print(f'tests/test_cuda.py::test_x {w} [ 1%]', flush=True)\ntime.sleep(60)")
    ctx = Context(device=torch.device("cpu"), quick=True, deadline=time.perf_counter() + TESTS_MARGIN_S + 2.0,
                  result_path=tmp_path / "r.json")
    t0 = time.perf_counter()
    run_tests(ctx)
    assert time.perf_counter() - t0 < 10
    r = json.loads((tmp_path / "r.json").read_text())["results"]
    assert r["exit_code"] == "timeout" and r["incomplete"] and (r["passed"], r["failed"], r["total"]) == (2, 1, 3)
    assert r["section_problems"] == ["pytest killed at the section's time cap: 2 passed, 1 failed, 0 errors of 3 run"]
    assert "tests/test_cuda.py::test_x FAILED" in capsys.readouterr().out  # streamed to the section's log
    assert not list(tmp_path.glob("aprkit-cuda-tests-*"))


def test_tests_section_shows_why_pytest_failed_without_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest that cannot run (no module named pytest) is not 'killed': its last lines reach the status line and the md."""
    import time

    import torch

    from benchmarks.gpu.context import Context
    from benchmarks.gpu.report import goals, markdown
    from benchmarks.gpu.sections import run_tests

    _stand_in_pytest(monkeypatch, "import sys\nprint('starting')\nsys.exit('/usr/bin/python3: No module named pytest')")
    ctx = Context(device=torch.device("cpu"), quick=True, deadline=time.perf_counter() + 60,
                  result_path=tmp_path / "r.json")
    run_tests(ctx)
    r = json.loads((tmp_path / "r.json").read_text())["results"]
    assert r["exit_code"] == 1 and r["no_report"] and "incomplete" not in r
    assert r["section_problems"] == ["pytest exit code 1 and no test report (0 passed, 0 failed, 0 errors of 0 run); "
                                     "its output ends: starting / /usr/bin/python3: No module named pytest"]
    report = {"meta": {}, "sections": {"tests": {"status": "error", "error": r["section_problems"][0], "results": r}}}
    report["goals"] = goals(report)
    md = markdown(report, {})
    assert "No module named pytest |" in md  # the sections table (the console prints the same last line)
    assert "```\nstarting\n/usr/bin/python3: No module named pytest\n```" in md and "incomplete" not in md
    assert report["goals"][0]["met"] is False


def test_quick_run_goals_are_not_judged() -> None:
    """One call at tiny sizes: a stall reverses a ratio, so a quick run prints no met / NOT met for the timing goals."""
    from benchmarks.gpu.report import goals, markdown

    res = {"tests": {"passed": 3, "failed": 0, "errors": 0, "skipped": 0, "total": 3, "exit_code": 0},
           "augment": {"rows": [{"batch": 8, "size": 32, "mode": "fp32",
                                 "candidates": {"apr_pair": {"vs_fft_limit": 4.96}}}]},
           "eval": {"rows": {"small_cnn": {"ratio": 0.7}}}}
    for quick in (True, False):
        report = {"meta": {"quick": quick}, "sections": {n: {"status": "ok", "results": r} for n, r in res.items()}}
        report["goals"] = gs = goals(report)
        assert gs[0]["goal"] == "CUDA tests pass" and gs[0]["met"] is True  # the same tests run in a quick run
        if quick:
            assert all(g["met"] is None and g["unjudged"] == "quick" for g in gs[1:]) and len(gs) == 4
            assert "| - (quick) |" in markdown(report, {})
        else:
            assert [g["met"] for g in gs[1:]] == [True, None, False] and not any("unjudged" in g for g in gs)
    # --device cpu: the tests ran, but not on CUDA (it said "CUDA tests pass: met"; reproduction tester)
    report["sections"]["env"] = {"status": "ok", "results": {"device": "cpu"}}
    assert goals(report)[0]["goal"] == "CUDA tests pass (run on cpu)"


def test_compile_plan_runs_an_apr_s_row_second() -> None:
    """The APR-S rows came after the six APR-P rows, and the cold APR-S compile (54 s on an H200) left them all to
    the cap; one (in CUDA graphs where there are some) now comes second. Building the plan touches no device."""
    import torch

    from benchmarks.gpu.compiling import compile_plan
    from benchmarks.gpu.context import Context

    full = compile_plan(Context(device=torch.device("cuda"), quick=False, deadline=0.0))
    assert full[:2] == [("APRPair compile_core", "default", 256, 32),
                        ("APRSingleBatch compile_core", "reduce-overhead", 256, 32)]
    assert len(full) == len(set(full)) == 15 and ("APRSingleBatch compile_core", "default", 256, 32) in full
    assert full[-1][1] == "max-autotune-no-cudagraphs"
    cpu = compile_plan(Context(device=torch.device("cpu"), quick=True, deadline=0.0, compile_backend="eager"))
    assert cpu[1] == ("APRSingleBatch compile_core", "default", 8, 32) and len(cpu) == len(set(cpu)) == 4


def test_compile_section_takes_the_time_others_left() -> None:
    """The compile section's cap grows by what the sections before it left of their own caps (an overrun counts
    against it), so the whole run stays within the sum of the caps."""
    from benchmarks.gpu.report import markdown
    from benchmarks.gpu_check import SECTIONS, unused_time

    assert SECTIONS["compile"].takes_unused and not any(s.takes_unused for n, s in SECTIONS.items() if n != "compile")
    done = {"env": {"own_cap_s": 30, "cap_s": 30, "wall_s": 10}, "tests": {"own_cap_s": 90, "cap_s": 90, "wall_s": 92},
            "train": {"own_cap_s": 100, "cap_s": 100, "wall_s": 70}}
    assert unused_time(done) == 48 and unused_time({}) == 0
    assert unused_time({"tests": {"own_cap_s": 9, "cap_s": 9, "wall_s": 12}}) == 0
    entry = {"status": "ok", "wall_s": 120.0, "cap_s": 138.0, "own_cap_s": 90.0, "borrowed_s": 48.0, "results": {}}
    md = markdown({"sections": {"compile": entry}}, {})
    assert "| compile | ok | 120.0 | 138 (90 + 48 left unused before) |" in md
