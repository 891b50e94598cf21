"""Smoke runs of the issue-16 reproduction scripts (``benchmarks/repro``): each runs end to end on a few hundred
real CIFAR-10 images, writes results.json / results.md with the paper's direction, and resumes from its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about 30-60 s per script on one CPU thread


def _run(script: str, out: Path, shared: Path | None, *extra: str) -> dict:
    """The script with ``--smoke`` on the CPU (``shared=None``: a script that reads no shared data, which refuses
    ``--shared``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "repro" / script), "--out", str(out), "--smoke", "--threads", "1",
           "--device", "cpu", *(["--shared", str(shared)] if shared is not None else []), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "results.md").is_file()
    return json.loads((out / "results.json").read_text())


def test_apr_cifar10_smoke_and_resume(cifar10_dir: Path, shared_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "s1"
    res = _run("apr_cifar10.py", out, shared_root)
    assert set(res["rows"]) == {"standard", "apr_p", "apr_sp", "apr_sp_feature_apr"}
    for row in res["rows"].values():
        for key in ("clean_error", "mean_error", "corrupted_rms", "auroc_synthetic", "auroc_natural", "phase_bias", "patch_shuffle_acc"):
            assert row[key] is not None, key
    assert "lower" in res["directions"]["mean_error"]
    assert "paper's direction" in (out / "results.md").read_text() and res["meta"]["curves"]
    assert (out / "eval" / "report.md").is_file() and (out / "runs" / "apr_p" / "model.pt").is_file()
    assert (out / "figures" / "training_curves.png").is_file()
    again = _run("apr_cifar10.py", out, shared_root, "--resume")  # finished runs and cached cells are reused
    assert again["rows"] == res["rows"]


def test_apr_cifar10_refuses_existing_run_without_resume(cifar10_dir: Path, shared_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "s1"
    _run("apr_cifar10.py", out, shared_root, "--runs", "standard")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/repro/apr_cifar10.py"), "--out", str(out), "--smoke",
                           "--runs", "standard", "--shared", str(shared_root)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "resume" in proc.stderr


def test_phase_collapse_smoke(cifar10_dir: Path, shared_root: Path, tmp_path: Path) -> None:
    res = _run("phase_collapse.py", tmp_path / "s2", shared_root)
    assert set(res["rows"]) == {"modulus_skip", "soft_threshold_skip"}  # the paper's headline pair by default
    assert res["error_ratio_skip"] is not None
    assert res["meta"]["curves"] and (tmp_path / "s2" / "figures" / "training_curves.png").is_file()
    assert "training_curves.png" in (tmp_path / "s2" / "results.md").read_text()


def test_transplant_sweeps_smoke(cifar10_dir: Path, shared_root: Path, tmp_path: Path) -> None:
    if not (shared_root / "models" / "resnet20-12fca82f.th").is_file():
        pytest.skip("shipped ResNet checkpoints are not present")
    res = _run("transplant_sweeps.py", tmp_path / "s3", shared_root)
    models = {s["model"] for s in res["summary"]}
    assert models == {"resnet20", "resnet56", "gfnet_cifar", "vit_tiny_p4", "vit_tiny_p4-cls-sign", "phase_collapse"}
    sign_out = [s for s in res["summary"] if s["model"] == "resnet20" and s["site"] == "output" and s["code"] == "sign"]
    assert sign_out and "inert" in sign_out[0]["finding"]
    assert sign_out[0]["controls"]["dc_only_agreement"]["last"] == 1.0  # the average-pool readout reads DC only
    pc = [s for s in res["summary"] if s["model"] == "phase_collapse"]
    assert {(s["site"], s["code"]) for s in pc} == {("output", "phase"), ("output", "sign")}
    assert all(s["complex"] for s in pc)
    for s in res["summary"]:
        assert s["controls"]["identity_agreement"] == {"last": 1.0, "mean": 1.0}, s["model"]
        assert {"deletion_agreement", "dc_only_agreement", "deletion_accuracy"} <= set(s["controls"])
    md = (tmp_path / "s3" / "results.md").read_text()
    assert "## Controls" in md and "| phase_collapse | output | sign (complex phase) |" in md
    assert res["meta"]["curves"] and (tmp_path / "s3" / "figures" / "training_curves.png").is_file()
    cls_sign = [s for s in res["summary"] if s["model"] == "vit_tiny_p4-cls-sign"]
    assert {s["site"] for s in cls_sign} == {"output", "input"} and all("donor" in s["finding"] for s in cls_sign)


def test_demo_ablation_smoke_and_resume(tmp_path: Path) -> None:
    """The demo ablation runs on the built-in synthetic data (no shared folder needed) and resumes from its files."""
    out = tmp_path / "s5"
    res = _run("demo_ablation.py", out, None)
    assert list(res["rows"]) == ["standard", "apr_sp", "apr_p", "apr_sp_p1", "apr_sp_separate", "apr_sp_long"]
    settings = {name: row["settings"] for name, row in res["rows"].items()}
    assert settings["apr_sp_p1"]["pair_p"] == 1.0 and settings["apr_sp_separate"]["sp_forward"] == "separate"
    assert settings["apr_sp_long"]["epochs"] == 2 * settings["apr_sp"]["epochs"]
    for row in res["rows"].values():
        assert row["phase"]["phase"] is not None and row["headline"]["mean_corruption_error"]["value"] is not None
    assert set(res["vs_standard"]) == set(res["rows"]) - {"standard"}
    assert {c["reference"] for c in res["vs_standard"].values()} == {"standard"}  # no standard run of another budget
    assert "phase-follow" in (out / "results.md").read_text()
    again = _run("demo_ablation.py", out, None, "--resume", "--variants", "apr_sp_separate")  # reloads, cached cells
    assert again["rows"]["apr_sp_separate"]["headline"] == res["rows"]["apr_sp_separate"]["headline"]
    assert list(again["rows"]) == list(res["rows"])
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/repro/demo_ablation.py"), "--out", str(out), "--smoke",
                           "--resume", "--seed", "1", "--variants", "standard"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "another seed" in proc.stderr  # rows of seed 0 are not mixed with seed 1's

