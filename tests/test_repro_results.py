"""The committed reproduction results (``benchmarks/repro/results/``) can be re-evaluated: every checkpoint
loads with ``aprkit.load_model``, every trained run in study 1's and study 2's ``results.json`` has its checkpoint
committed, and (slow, ../shared) those checkpoints give the clean error their ``results.json`` reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "repro" / "results"
CHECKPOINTS = sorted(RESULTS.glob("*/runs/*/model.pt"))
STUDY1 = sorted(p.parent for p in RESULTS.glob("apr_cifar10*/results.json"))
# the studies whose checkpoints are all committed (study 3's GFNet and ViT, 3.4 and 11 MB, are not)
TRAINED = STUDY1 + sorted(p.parent for p in RESULTS.glob("phase_collapse*/results.json"))


def _rel(p: Path) -> str:
    return str(p.relative_to(RESULTS))


def test_results_have_checkpoints():
    assert CHECKPOINTS, f"no committed checkpoints under {RESULTS}"
    assert STUDY1, f"no study-1 results under {RESULTS}"


@pytest.mark.parametrize("path", CHECKPOINTS, ids=_rel)
def test_committed_checkpoint_loads(path):
    from aprkit.models import load_model

    model = load_model(path)
    params = list(model.parameters())
    assert params and all(torch.isfinite(p).all() for p in params)
    assert not model.training


@pytest.mark.parametrize("study", TRAINED, ids=_rel)
def test_every_trained_row_has_its_checkpoint(study):
    rows = json.loads((study / "results.json").read_text())["rows"]
    missing = [run for run in rows if not (study / "runs" / run / "model.pt").is_file()]
    assert not missing, f"{_rel(study)}: results for {missing} but no runs/<run>/model.pt committed"


@pytest.mark.slow
@pytest.mark.parametrize("study", TRAINED, ids=_rel)
def test_checkpoints_reproduce_clean_error(study, cifar10_dir, tmp_path):
    from aprkit.eval import evaluate

    rows = json.loads((study / "results.json").read_text())["rows"]
    for run, row in rows.items():
        res = evaluate(str(study / "runs" / run / "model.pt"), suite="corruption", data=f"cifar10:{cifar10_dir}",
                       corruptions="none", device="cpu", batch_size=500, progress=False, out_dir=tmp_path / run)
        clean = res["corruption"]["clean"]
        assert clean["n"] == 10000
        # fp32 on the CPU like the committed evaluation; 2 images of slack for a different thread count's sums
        assert clean["error"] == pytest.approx(row["clean_error"], abs=2e-4), f"{_rel(study)}/{run}"
