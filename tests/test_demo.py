"""The demo: ``aprkit demo --quick`` end to end (every report section, every number finite), the
verdict logic, the synthetic cue-conflict suite and the demo's input checks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from aprkit.demo.summary import verdicts

SECTIONS = ("Summary", "Demo setup", "Corruption robustness", "Calibration", "OOD detection", "Shape bias (synthetic cue-conflict)",
            "Phase bias", "Transplant test")
SUITES = ("corruption", "calibration", "ood", "cue-conflict", "phase-bias", "transplant")


def _numbers(obj, path="$"):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield path, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from aprkit.cli import main

    out = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main(["demo", "--out", str(out), "--quick", "--no-progress"])
    # a first run said "no checkpoint at ...; starting a new run" for each model, even with --no-progress (reviewer)
    assert "no checkpoint" not in err.getvalue(), err.getvalue()
    return rc, out, buf.getvalue()


def test_quick_demo_writes_every_section(quick_run):
    rc, out, stdout = quick_run
    assert rc == 0
    for name in ("report.html", "report.md", "results.json"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for title in SECTIONS:
        assert f"## {title}" in md, f"section {title!r} missing from report.md"
        assert title.split(" (")[0] in html
    assert "data:image/png;base64," in html
    assert "report:" in stdout and "total time:" in stdout and "standard" in stdout and "APR-SP" in stdout


def test_quick_demo_numbers_present_and_finite(quick_run):
    _, out, _ = quick_run
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"standard", "apr-sp"}
    for model, suites in res["models"].items():
        assert set(SUITES) <= set(suites), f"{model}: missing {set(SUITES) - set(suites)}"
    bad = [(p, v) for p, v in _numbers(res) if not math.isfinite(v)]
    assert not bad, bad[:5]
    demo = res["meta"]["demo"]
    for row in demo["verdicts"]:
        assert row["standard"] is not None and row["apr_sp"] is not None, row["key"]
        assert row["verdict"] in ("helped", "hurt", "no clear difference")
    assert demo["timings"]["total"]["wall_s"] > 0
    # every (corruption, severity) cell of the grid was evaluated for both models
    for suites in res["models"].values():
        cells = suites["corruption"]["cells"]
        assert len(cells) == 15 and all(len(row) == len(demo["settings"]["severities"]) for row in cells.values())


@pytest.mark.slow
def test_demo_resumes_from_cache(quick_run, tmp_path):
    """A second run on the same folder reuses the trained models and the cached evaluation."""
    from aprkit.demo import run_demo

    _, out, _ = quick_run
    before = json.loads((out / "results.json").read_text())["meta"]["demo"]["headline"]
    res = run_demo(out, quick=True, progress=False)
    assert res.meta["demo"]["headline"] == before
    assert res.meta["demo"]["timings"]["train standard"]["wall_s"] < 30


def test_verdicts_follow_the_numbers():
    def h(v, n=1000, **kw):
        return {"value": v, "n": n, **kw}

    std = {"clean_accuracy": h(0.80), "mean_corruption_error": h(0.40), "ece": h(0.05, accuracy=0.8),
           "corrupted_ece": h(0.30, accuracy=0.5, bin_variance=0.2), "corrupted_rms": h(0.12, bin_variance=0.2),
           "ood_auroc": h(0.90, n_out=1000, se=0.009), "shape_bias": h(0.30), "phase_follow": h(0.30), "phase_bias": h(0.40, n=200)}
    apr = {"clean_accuracy": h(0.801), "mean_corruption_error": h(0.30), "ece": h(0.15, accuracy=0.8),
           "corrupted_ece": h(0.10, accuracy=0.7, bin_variance=0.15), "corrupted_rms": h(0.11, bin_variance=0.15),
           "ood_auroc": h(0.97, n_out=1000, se=0.005), "shape_bias": h(0.20), "phase_follow": h(None), "phase_bias": h(0.48, n=150)}
    rows = verdicts(std, apr)
    got = {r["key"]: r["verdict"] for r in rows}
    assert got == {"clean_accuracy": "no clear difference", "mean_corruption_error": "helped", "ece": "hurt",
                   "corrupted_ece": "helped", "corrupted_rms": "no clear difference", "ood_auroc": "helped",
                   "shape_bias": "hurt", "phase_follow": "not measured", "phase_bias": "no clear difference"}
    se = {r["key"]: r["se"] for r in rows}
    assert se["corrupted_ece"] == pytest.approx(math.sqrt(0.2 / 1000 + 0.15 / 1000))  # binned error, n images (not cells)
    assert se["phase_bias"] == pytest.approx(math.sqrt(0.4 * 0.6 / 200 + 0.48 * 0.52 / 150))  # n = pairs decided either way
    assert se["ood_auroc"] == pytest.approx(math.sqrt(0.009**2 + 0.005**2))  # the sets' mean DeLong errors
    same = verdicts({"ood_auroc": h(1.0, n_out=1000, se=0.0)}, {"ood_auroc": h(0.9995, n_out=1000, se=0.0)})
    assert same[[r["key"] for r in same].index("ood_auroc")]["verdict"] == "no clear difference"  # floored, never 0


def test_headline_numbers_read_corrupted_calibration_and_phase_bias():
    from aprkit.demo.summary import headline_numbers

    rel = {"count": [10, 30], "accuracy": [0.5, 0.9], "confidence": [0.6, 0.95]}
    suites = {"corruption": {"clean": {"n": 40, "accuracy": 0.8}, "mean_corruption_error": 0.4},
              "calibration": {"clean": {"n": 40, "ece": 0.05, "accuracy": 0.8, "reliability": rel},
                              "corrupted": {"ece": 0.2, "rms": 0.25, "accuracy": 0.6, "reliability": rel, "cells": 3}},
              "phase-bias": {"full": {"phase": 0.3, "amplitude": 0.5, "neither": 0.2, "phase_bias": 0.375, "n_pairs": 100}}}
    h = headline_numbers(suites)
    assert h["corrupted_ece"]["value"] == 0.2 and h["corrupted_rms"]["value"] == 0.25 and h["corrupted_ece"]["n"] == 40
    assert h["corrupted_ece"]["bin_variance"] == pytest.approx(0.25 * 0.25 + 0.75 * 0.09)
    assert h["phase_bias"] == {"value": 0.375, "n": 80, "n_pairs": 100}
    assert h["phase_follow"]["value"] == 0.3
    ood = {"n_in": 40, "mean": {"msp": {"auroc": 0.8}},
           "sets": {"a": {"n": 20, "msp": {"auroc": 0.7, "auroc_se": 0.04}}, "b": {"n": 30, "msp": {"auroc": 0.9, "auroc_se": 0.02}}}}
    assert headline_numbers({"ood": ood})["ood_auroc"] == {"value": 0.8, "n": 40, "n_out": 20, "se": pytest.approx(0.03)}
    empty = headline_numbers({})
    assert empty["corrupted_ece"]["value"] is None and empty["phase_bias"]["value"] is None


class _Constant(nn.Module):
    def __init__(self, k: int, cls: int) -> None:
        super().__init__()
        self.k, self.cls = k, cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.k)
        out[:, self.cls] = 1.0
        return out


def test_cue_conflict_suite_on_a_constant_model():
    from aprkit.eval import evaluate
    from aprkit.eval.suites.cue_conflict import synthetic_stimuli

    stim = synthetic_stimuli(120, seed=3)
    res = evaluate(_Constant(10, 2), suite="cue-conflict", data=stim, model_id="const", progress=False)["cue-conflict"]
    n_s, n_t = int((stim.shape_labels == 2).sum()), int((stim.texture_labels == 2).sum())
    assert res["counts"]["n_stimuli"] == 120 and bool((stim.shape_labels != stim.texture_labels).all())
    assert res["shape_match"] == pytest.approx(n_s / 120) and res["texture_match"] == pytest.approx(n_t / 120)
    assert res["shape_bias"] == pytest.approx(n_s / (n_s + n_t))
    assert res["neither"] == (120 - n_s - n_t) / 120  # counted, never a negative rounding residue

    class Pick(torch.nn.Module):  # decides the class written in pixel (0, 0, 0): all shape or texture, no neither
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 255).round().long(), 10).float()

    shapes, textures = torch.arange(5), torch.arange(5, 10)
    imgs = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    imgs[:, 0, 0, 0] = torch.tensor([0, 1, 2, 3, 9], dtype=torch.uint8)
    picked = evaluate({"pick": Pick()}, suite="cue-conflict", data={"cue-conflict": (imgs, shapes, textures)},
                      progress=False, device="cpu")["cue-conflict"]
    assert picked["neither"] == 0.0 and picked["shape_match"] + picked["texture_match"] == 1.0  # was -5.55e-17
    # "synthetic:N" generates the stimuli itself
    res2 = evaluate(_Constant(10, 2), suite="cue-conflict", data="synthetic:50", model_id="const", progress=False)
    assert res2["cue-conflict"]["counts"]["n_stimuli"] == 50


def test_synthetic_stimuli_are_keyed_by_the_generator_version(monkeypatch):
    """Another generator version draws other stimuli: a cache must not serve their shape bias."""
    import aprkit.data.synthetic as syn
    from aprkit.eval.suites.cue_conflict import synthetic_stimuli

    before = synthetic_stimuli(20, seed=3).cache_id
    monkeypatch.setattr(syn, "GENERATOR_VERSION", syn.GENERATOR_VERSION + 1)
    assert synthetic_stimuli(20, seed=3).cache_id != before


def test_bad_inputs_get_clear_errors(tmp_path):
    from aprkit.demo import demo_settings, load_demo_data, run_demo
    from aprkit.eval.suites.cue_conflict import CueConflictStimuli, resolve_cue_conflict

    with pytest.raises(ValueError, match="phase-bias"):
        resolve_cue_conflict("cifar10:/nowhere")
    with pytest.raises(TypeError, match="uint8"):
        CueConflictStimuli(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), torch.tensor([1, 0]), ["a", "b"])
    with pytest.raises(ValueError, match="one shape and one texture label"):
        CueConflictStimuli(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0]), torch.tensor([1, 0]), ["a", "b"])
    with pytest.raises(ValueError, match="unknown demo settings"):
        demo_settings(n_trian=5)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        demo_settings(epochs=0)
    with pytest.raises(ValueError, match="unknown --data .imagenett:/x.; the demo trains on"):
        load_demo_data("imagenett:/x", demo_settings(quick=True))
    with pytest.raises(ValueError, match="the demo brings images to its own size .*drop the"):
        load_demo_data(f"folder:{tmp_path}?resize=40", demo_settings(quick=True))
    with pytest.raises(FileNotFoundError):
        load_demo_data(f"folder:{tmp_path / 'missing'}", demo_settings(quick=True))
    with pytest.raises(ValueError, match="out_dir"):
        run_demo("", quick=True)


def test_folder_data_split_and_sizes(tmp_path, capsys):
    """``folder:PATH`` without train/test subfolders is split 80/20 (seeded) and resized."""
    from PIL import Image

    from aprkit.demo import demo_settings, load_demo_data

    g = torch.Generator().manual_seed(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            arr = torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(arr).save(tmp_path / c / f"{i}.png")
    s = demo_settings(quick=True, n_train=0, n_test=100)
    d = load_demo_data(f"folder:{tmp_path}", s)
    assert (len(d.train), len(d.test)) == (16, 4)
    assert d.num_classes == 2 and not d.synthetic
    assert tuple(d.train.images.shape[1:]) == (3, 32, 32) and d.train.images.dtype == torch.uint8
    again = load_demo_data(f"folder:{tmp_path}", s)
    assert torch.equal(again.test.images, d.test.images)
    # the report's data line says how the images were drawn (it said nothing of the split or a test subset)
    assert "a seeded 80/20 split of the 20 images of one folder tree" in d.description
    fewer = load_demo_data(f"folder:{tmp_path}", demo_settings(quick=True, n_train=10, n_test=3))
    assert "10 of the 16 training images, a seeded random subset" in fewer.description
    assert "3 of the 4 test images, a seeded random subset" in fewer.description
    from aprkit.cli import main  # a folder with too few images: more of them help, not --train-size

    out = str(tmp_path.with_name(tmp_path.name + "-run"))  # (inside the flat folder it would be a class)
    assert main(["demo", "--quick", "--data", f"folder:{tmp_path}", "--out", out, "--no-progress"]) == 2
    assert "folder:" in (err := capsys.readouterr().err) and "gives 16 (it holds no more: add images)" in err, err


def test_demo_setup_states_the_schedule_the_run_had() -> None:
    """At 4 epochs or fewer (every --quick run) there is no learning-rate step; the report said x0.2 after 80 %."""
    from aprkit.demo.report import _schedule

    assert _schedule({"epochs": 1, "lr_steps": (0.8,)}) == "constant: no step within 1 epoch"
    assert _schedule({"epochs": 6, "lr_steps": (0.8,)}) == "x0.2 after epoch 5 of 6"
    assert _schedule({"epochs": 8, "lr_steps": (0.5, 0.75)}) == "x0.2 after epochs 4, 6 of 8"


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--data", "synthetic:100"], r"needs at least 128 training images; synthetic:100 gives 100 \(raise synthetic:N\)"),
    (["--quick", "--data", "synthetic:abc"], r"synthetic:N takes a positive number of training images, got 'synthetic:abc'"),
    (["--quick", "--data", "synthetic:300", "--train-size", "100"], r"already sets the number of training images"),
    (["--quick", "--train-size", "0"], r"the synthetic one is generated: give a number"),
    (["--quick", "--seed", "-1"], r"seed \(--seed\) must be an integer in 0\.\.2\*\*31 - 1, got -1"),
    (["--quick", "--seed", str(2**32)], r"seed \(--seed\) must be an integer in 0\.\.2\*\*31 - 1"),
    (["--quick", "--device", "tpu"], r"tpu"),
])
def test_demo_refuses_what_it_cannot_run_in_one_line_and_leaves_no_folder(tmp_path, capsys, argv, message) -> None:
    from aprkit.cli import main

    out = tmp_path / "run"
    rc = main(["demo", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_difference_without_a_sample_size_gets_no_verdict() -> None:
    """With n missing the standard error was taken as 0: 'helped (±0.000)' instead of no verdict."""
    from aprkit.demo.summary import overall_sentence, summary_text

    a = {"clean_accuracy": {"value": 0.80, "n": None}}
    b = {"clean_accuracy": {"value": 0.81, "n": None}}
    row = {r["key"]: r for r in verdicts(a, b)}["clean_accuracy"]
    assert row["verdict"] == "not judged (no sample size)" and row["se"] is None
    assert "+1.00 pp" in summary_text(verdicts(a, b)) and "no verdict without a sample size on 1" in \
        overall_sentence(verdicts(a, b))


def _two_class_folder(root: Path, n: int = 10, classes: str = "ab", value: int | None = None) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8)
            Image.fromarray((arr if value is None else torch.full_like(arr, value)).numpy()).save(root / c / f"{i}.png")


def test_folder_data_is_keyed_by_content_and_checked_early(tmp_path):
    """Rewritten images give other cache ids (the models trained on the old files were reused); ``folder:`` without
    a path is an error (it read the working folder)."""
    from aprkit.demo import demo_settings, load_demo_data

    s = demo_settings(quick=True, n_train=0, n_test=100)
    _two_class_folder(tmp_path / "d")
    first = load_demo_data(f"folder:{tmp_path / 'd'}", s)
    _two_class_folder(tmp_path / "d", value=7)  # same names and counts, other pixels
    second = load_demo_data(f"folder:{tmp_path / 'd'}", s)
    assert first.train.cache_id != second.train.cache_id and first.test.cache_id != second.test.cache_id
    with pytest.raises(ValueError, match="folder needs a root folder"):
        load_demo_data("folder:", s)


def test_one_class_in_a_split_is_refused_before_training(tmp_path):
    from aprkit.demo import demo_settings, run_demo

    _two_class_folder(tmp_path / "one" / "train", n=70)
    _two_class_folder(tmp_path / "one" / "test", classes="a")
    with pytest.raises(ValueError, match="test images of one class only"):
        run_demo(tmp_path / "out", data=f"folder:{tmp_path / 'one'}", progress=False,
                 settings=demo_settings(quick=True, n_train=0, n_test=100))
    assert not (tmp_path / "out").exists()


def test_a_rerun_with_other_settings_removes_the_old_runs_results(tmp_path):
    """An interrupted rerun with other settings mixed two runs' numbers in results.json and left the old report
    saying 'complete': the outputs of another run are removed before this one evaluates; its own are kept."""
    from aprkit.demo.pipeline import _claim_out_dir

    for name in ("index.json", "results.json", "report.md"):
        (tmp_path / name).write_text("old")
    _claim_out_dir(tmp_path, "aaa")  # unknown origin: removed
    assert not (tmp_path / "index.json").exists() and (tmp_path / "demo-run.txt").read_text().strip() == "aaa"
    (tmp_path / "index.json").write_text("mine")
    _claim_out_dir(tmp_path, "aaa")  # the same run resumed: kept
    assert (tmp_path / "index.json").read_text() == "mine"
    (tmp_path / "figures" / "ood").mkdir(parents=True)
    _claim_out_dir(tmp_path, "bbb")
    assert not (tmp_path / "index.json").exists() and not (tmp_path / "figures").exists()


def test_devices_and_seeds_at_the_edges():
    from aprkit.data.noise import NoiseDataset
    from aprkit.data.synthetic import SyntheticShapes
    from aprkit.distributed import resolve_device

    assert resolve_device("cpu:0") == torch.device("cpu")
    for bad, message in (("meta", "not available here"), ("xpu", "not available here"), ("mps", "MPS")):
        if bad != "meta" and getattr(torch, bad).is_available():
            continue
        with pytest.raises(ValueError, match=message):
            resolve_device(bad)
    assert NoiseDataset("gaussian", 2, seed=2**45).get_batch([0, 1])[0].shape == (2, 3, 32, 32)
    assert SyntheticShapes(2, seed=2**63 - 1).tensors[0].shape[0] == 2


def test_the_demo_refuses_a_folder_with_results_it_did_not_write(tmp_path):
    """`aprkit demo --out DIR` deleted results.json, the report and figures/ of a folder it had not written."""
    from aprkit.demo import run_demo

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "paper.png").write_bytes(b"png")
    with pytest.raises(FileExistsError, match="figures that aprkit demo did not write"):
        run_demo(tmp_path, quick=True, progress=False)
    assert (tmp_path / "figures" / "paper.png").is_file()


def test_the_demo_refuses_an_output_folder_inside_its_data(tmp_path):
    """`aprkit demo --data folder:D --out D` wrote its runs into D/train, and the next demo trained on their figures
    as two more classes (demo tester)."""
    from aprkit.demo import run_demo

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
    with pytest.raises(ValueError, match="lies inside the input folder"):
        run_demo(tmp_path, data=f"folder:{tmp_path}", quick=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["a", "b"]
    from aprkit.demo.config import check_out_outside_data

    (tmp_path / "run" / "train").mkdir(parents=True)  # a demo run beside the splits, and its rerun (diff reviewer)
    check_out_outside_data(tmp_path / "run", f"folder:{tmp_path}")
    with pytest.raises(ValueError, match="lies inside the input folder"):
        check_out_outside_data(tmp_path / "train" / "run", f"folder:{tmp_path}")
    from aprkit.data.registry import check_outside_data

    (tmp_path / "LSUN" / "test").mkdir(parents=True)  # ODIN's layout: one folder of images, read as one class
    with pytest.raises(ValueError, match="lies inside the input folder"):
        check_outside_data([tmp_path / "LSUN" / "report"], f"folder:{tmp_path / 'LSUN'}")
    flat = tmp_path / "train"  # a folder of classes: nothing inside it
    with pytest.raises(ValueError, match="lies inside the input folder"):
        check_out_outside_data(flat / "run", f"folder:{flat}")


def test_the_committed_demo_report_rerenders_with_its_grid_and_total(tmp_path):
    """Corruptions given as a group ("benchmark") were counted as one corruption ("1 corruptions x 5 severities, not
    the full CIFAR grid"), and a report written again from results.json labelled the whole run's total "before this
    report" (report reviewer)."""
    from pathlib import Path

    from aprkit.demo.report import write_demo_report
    from aprkit.eval import Results

    res = Results.load(Path(__file__).parents[1] / "benchmarks/repro/results/demo_run/results.json")
    res.meta["demo"]["settings"]["corruptions"] = ["benchmark"]
    md = write_demo_report(res, tmp_path)["markdown"].read_text()
    assert "15 corruptions x 5 severities (the CIFAR convention)" in md
    assert "| total |" in md and "total before this report" not in md
