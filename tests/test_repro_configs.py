"""The reproduction scripts' network variants (``benchmarks/repro``), without training: fast."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["gfnet_cifar", "vit_tiny_p4", "phase_collapse"])
def test_reduced_overrides_build_smaller_networks(model: str) -> None:
    """``--reduced`` (the CPU-budget variants of studies 2 / 3): each override set is a valid training config and
    builds a network with fewer parameters than the full one."""
    sys.path.insert(0, str(REPO))
    from aprkit.train.config import load_config
    from aprkit.train.loop import build_model
    from benchmarks.repro.common import CONFIGS
    from benchmarks.repro.transplant_sweeps import REDUCED, TRAINED

    def n_params(ov: list[str]) -> int:
        return sum(p.numel() for p in build_model(load_config(CONFIGS / TRAINED[model], ov)).parameters())

    assert n_params(REDUCED[model]) < 0.6 * n_params([])



@contextlib.contextmanager
def _older_recipe(run: str) -> Iterator[None]:
    """The committed runs were trained before recipe version 5 (bins without phase left at 0) and 7 (the device
    path's per-image crop and flip draws, which the standard run's recipe has too): reusing them warns that their
    numbers are the older recipe's."""
    now = 9 if run.startswith("apr_sp") else 7  # 9: APR-S on the device tests its warps' points in float64
    with pytest.warns(RuntimeWarning, match=rf"trained before recipe version 5, the methods now train version {now} "):
        yield  # their configs' version (recipe_version), not RECIPE_VERSION


def _recipe_args(epochs: int) -> list[str]:
    from benchmarks.repro.common import scaled_milestones

    return [f"optim.epochs={epochs}", f"optim.milestones=[{', '.join(map(str, scaled_milestones(epochs)))}]",
            "data.pad_fill=0"]


@pytest.mark.parametrize("run", ["standard", "apr_p", "apr_p_only", "apr_sp", "apr_sp_feature_apr"])
def test_committed_runs_pass_their_own_recipe_check(run: str) -> None:
    """The committed 30-epoch runs are reused by ``--resume`` with their recipe (black crop padding, FeatureAPR's
    sites in study.json), whatever machine or thread count they trained with; another recipe is refused."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.apr_cifar10 import RUNS
    from benchmarks.repro.common import CONFIGS, check_same_recipe

    out = REPO / "benchmarks/repro/results/apr_cifar10_e30/runs" / run
    config = CONFIGS / RUNS["apr_sp" if run == "apr_sp_feature_apr" else run]
    study = {"feature_apr": {"layers": ["layer2"], "p": 0.5, "seed": 0}} if run == "apr_sp_feature_apr" else {}
    ov = ["data.dataset=cifar10:/elsewhere/cifar10", "train.threads=2", "train.device=cpu", *_recipe_args(30)]
    with _older_recipe(run):
        check_same_recipe(out, config, ov, study)
    with pytest.raises(ValueError, match="pad_fill: 0 there, 128 asked"):
        check_same_recipe(out, config, [*ov, "data.pad_fill=128"], study)
    with pytest.raises(ValueError, match="epochs: 30 trained there, 12 asked"):
        check_same_recipe(out, config, [*ov, *_recipe_args(12)], study)
    with pytest.raises(ValueError, match="study.json"):
        check_same_recipe(out, config, ov, {"feature_apr": {"layers": ["layer3"], "p": 0.5, "seed": 0}})


@pytest.mark.parametrize("run", ["standard", "apr_p", "apr_sp"])
def test_committed_12_epoch_runs_pass_their_own_recipe_check(run: str) -> None:
    """The 12-epoch runs were written before aug.sp_forward and aug.compile existed: the saved config is read with
    today's defaults (the old behaviour), so their own recipe passes."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.apr_cifar10 import RUNS
    from benchmarks.repro.common import CONFIGS, check_same_recipe

    out = REPO / "benchmarks/repro/results/apr_cifar10_e12/runs" / run
    with _older_recipe(run):
        check_same_recipe(out, CONFIGS / RUNS["apr_p_only" if run == "apr_p" else run], _recipe_args(12), {})


def test_recipe_check_refuses_another_method_and_dataset() -> None:
    """The committed "apr_p_only" folder holds APR-P alone: asking for the reference's APR-P (or another dataset
    kind) in it is refused, naming the keys."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.apr_cifar10 import RUNS
    from benchmarks.repro.common import CONFIGS, check_same_recipe

    out = REPO / "benchmarks/repro/results/apr_cifar10_e30/runs/apr_p_only"
    with _older_recipe("apr_p_only"):
        check_same_recipe(out, CONFIGS / RUNS["apr_p_only"], _recipe_args(30), {})
    with pytest.raises(ValueError, match="aug.method: 'apr_p_only' there, 'apr_p' asked"):
        check_same_recipe(out, CONFIGS / RUNS["apr_p"], _recipe_args(30), {})
    with pytest.raises(ValueError, match="data.dataset kind"):
        check_same_recipe(out, CONFIGS / RUNS["apr_p_only"], [*_recipe_args(30), "data.dataset=cifar100:/x"], {})


def test_recipe_check_passes_a_new_folder(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.apr_cifar10 import RUNS
    from benchmarks.repro.common import CONFIGS, check_same_recipe

    check_same_recipe(tmp_path / "new", CONFIGS / RUNS["apr_p"], _recipe_args(30), {})


def test_phase_collapse_verdict_needs_more_than_the_sampling_noise() -> None:
    """A ratio above 1 is "same direction" only when the error gap exceeds two standard errors of the test set."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.phase_collapse import render

    def line(soft: float) -> str:
        rows = {"modulus": {"clean_error": 0.10, "n": 10000, "train_s": 1.0},
                "soft_threshold": {"clean_error": soft, "n": 10000, "train_s": 1.0}}
        text = render(rows, soft / 0.10, {"epochs": 8, "smoke": False})
        return next(t for t in text.splitlines() if t.startswith("Error ratio"))

    assert "no clear difference" in line(0.105) and "same direction" in line(0.2)
    assert "modulus net is worse" in line(0.08)


def test_a_refused_run_keeps_its_study_json(tmp_path: Path) -> None:
    """Asking for other FeatureAPR settings in a folder that holds a run (without --resume) is refused by fit, and
    leaves the run's study.json as it was (a later --resume with the new settings must still be refused)."""
    import argparse
    import shutil

    sys.path.insert(0, str(REPO))
    from benchmarks.repro.common import STUDY_FILE, train_run

    run = tmp_path / "runs" / "apr_sp_feature_apr"
    shutil.copytree(REPO / "benchmarks/repro/results/apr_cifar10_e30/runs/apr_sp_feature_apr", run)
    (tmp_path / "shared" / "data" / "cifar10").mkdir(parents=True)
    before = (run / STUDY_FILE).read_text()
    args = argparse.Namespace(resume=False, shared=str(tmp_path / "shared"), smoke=False, epochs=30, device="cpu",
                              progress=False, threads=None, overrides=["data.pad_fill=0"])
    with pytest.raises((Exception, SystemExit), match="resume"):  # the scripts' one-line exit
        train_run("repro_cifar10_resnet20_apr_sp.yaml", run, args, study={"feature_apr": {"layers": ["layer3"]}})
    assert (run / STUDY_FILE).read_text() == before
    with pytest.raises(ValueError, match="study.json"):
        train_run("repro_cifar10_resnet20_apr_sp.yaml", run, argparse.Namespace(**{**vars(args), "resume": True}),
                  study={"feature_apr": {"layers": ["layer3"]}})


def test_the_study_scripts_check_their_inputs_before_training(tmp_path: Path) -> None:
    """A missing shipped checkpoint (transplant sweeps), a layer FeatureAPR cannot attach to (study 1) or --shared
    given to the ablation (it reads none) failed after every run had trained."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro import apr_cifar10, demo_ablation, transplant_sweeps

    shared = tmp_path / "shared"
    (shared / "data" / "cifar10").mkdir(parents=True)
    with pytest.raises(SystemExit, match="checkpoint\\(s\\) not found: .*resnet20"):
        transplant_sweeps.main(["--smoke", "--out", str(tmp_path / "t"), "--shared", str(shared)])
    with pytest.raises(ValueError, match="no layer named 'layer9'"):
        apr_cifar10.main(["--smoke", "--out", str(tmp_path / "a"), "--shared", str(shared), "--feature-layers",
                          "layer9"])
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):  # the probability too (tester)
        apr_cifar10.main(["--smoke", "--out", str(tmp_path / "a"), "--shared", str(shared), "--feature-p", "1.5"])
    for flag in (["--shared", str(shared)], ["--set", "optim.lr=0.5"]):  # it reads neither: refused, not ignored
        with pytest.raises(SystemExit):
            demo_ablation.main(["--smoke", "--out", str(tmp_path / "d"), *flag])
    with pytest.raises(SystemExit):
        apr_cifar10.main(["--smoke", "--out", str(tmp_path / "a"), "--threads", "0"])
    assert not (tmp_path / "t" / "runs").exists() and not (tmp_path / "a" / "runs").exists()


@pytest.mark.parametrize("run", ["modulus", "soft_threshold", "modulus_noskip"])
def test_committed_phase_collapse_runs_pass_their_recipe_check_with_boolean_skip(run: str) -> None:
    """The eighth-width study-2 runs recorded skip: true / false, which the configs now spell lowpass / none (the same
    networks): the documented re-evaluation command was refused."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.common import CONFIGS, check_same_recipe
    from benchmarks.repro.phase_collapse import RUNS, reduced_widths, widths_override

    out = REPO / "benchmarks/repro/results/phase_collapse_r8/runs" / run
    ov = [widths_override(reduced_widths(8)), *_recipe_args(8)]
    check_same_recipe(out, CONFIGS / RUNS[run], ov, {})
    with pytest.raises(ValueError, match="skip"):
        check_same_recipe(out, CONFIGS / RUNS[run], [*ov, "model.kwargs.skip=linear"], {})


def test_study_2_trains_with_the_authors_recipe_and_the_committed_runs_need_the_shared_one() -> None:
    """The phase-collapse authors train with lr 0.01, plain momentum, weight decay 1e-4 and lr x0.1 every 70 of 300
    epochs (their run.py); the committed quarter-width runs had aprkit's shared CIFAR recipe: ``--recipe shared``
    reuses them, the default (the authors') refuses them."""
    sys.path.insert(0, str(REPO))
    from aprkit.train.config import load_config
    from benchmarks.repro.common import CONFIGS, check_same_recipe, scaled_milestones
    from benchmarks.repro.phase_collapse import RECIPES, RUNS, reduced_widths, widths_override

    ov, fractions = RECIPES["authors"]
    cfg = load_config(str(CONFIGS / RUNS["modulus_skip"]), [*ov, "optim.epochs=300",
                                                             f"optim.milestones={scaled_milestones(300, fractions)}"])
    o = cfg.optim
    assert (o.lr, o.nesterov, o.weight_decay, o.gamma, o.batch_size, o.milestones, cfg.data.pad_fill) == \
        (0.01, False, 1e-4, 0.1, 128, [70, 140, 210, 280], 0)
    for run in ("modulus_skip", "soft_threshold_skip"):
        out = REPO / "benchmarks/repro/results/phase_collapse_skip_r4/runs" / run
        shared = [widths_override(reduced_widths(4)), *_recipe_args(8)[:2]]
        check_same_recipe(out, CONFIGS / RUNS[run], shared, {})
        authors = [widths_override(reduced_widths(4)), "optim.epochs=8",
                   f"optim.milestones={scaled_milestones(8, fractions)}", *ov]
        with pytest.raises(ValueError):
            check_same_recipe(out, CONFIGS / RUNS[run], authors, {})


def test_phase_collapse_pairs_follow_the_papers_configurations() -> None:
    """The modulus / soft-threshold runs come in the paper's two configurations: LScat (skip: lowpass) and the
    headline LScat + skip (skip: linear), whose ratio is the one the paper reports (22.5 / 7.7 %)."""
    sys.path.insert(0, str(REPO))
    from aprkit.train.config import load_config
    from benchmarks.repro.phase_collapse import PAIRS, RUNS, pair_ratios, render

    skips = {name: load_config(REPO / "configs" / "train" / cfg).model.kwargs["skip"] for name, cfg in RUNS.items()}
    assert skips == {"modulus": "lowpass", "soft_threshold": "lowpass", "modulus_noskip": "none",
                     "modulus_skip": "linear", "soft_threshold_skip": "linear"}
    assert set(PAIRS["skip"]) | set(PAIRS["lscat"]) <= set(RUNS)
    rows = {n: {"clean_error": e, "n": 10000, "train_s": 1.0}
            for n, e in (("modulus_skip", 0.10), ("soft_threshold_skip", 0.30))}
    assert pair_ratios(rows) == {"skip": pytest.approx(3.0)}
    text = render(rows, None, {"epochs": 8, "smoke": False})
    assert "with skip connection (the paper's 22.5 / 7.7 %): **3.00x" in text and "without skip" not in text


def test_a_study_scripts_refusal_is_one_line(capsys, monkeypatch) -> None:
    """Recipe mismatches and missing data ended in a Python traceback; Ctrl-C too (tester)."""
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.common import run_main

    def refuse() -> None:
        raise ValueError("cannot resume X: it holds a run of another recipe")

    monkeypatch.setattr(sys, "argv", ["apr_cifar10.py"])
    with pytest.raises(SystemExit) as stop:
        run_main(refuse)
    assert stop.value.code == 2 and capsys.readouterr().err == "apr_cifar10.py: error: cannot resume X: it holds a run of another recipe\n"

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        run_main(interrupted)
    assert stop.value.code == 130 and "--resume goes on" in capsys.readouterr().err

    def swallowed() -> None:  # Ctrl-C inside a finaliser: Python prints and drops the KeyboardInterrupt
        import gc
        import os
        import signal
        import weakref

        class Box:
            pass

        box = Box()
        weakref.finalize(box, lambda: os.kill(os.getpid(), signal.SIGINT))
        del box
        gc.collect()

    import signal

    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stop:  # it exited 0 after going on with the next run (reproduction tester)
            run_main(swallowed)
    finally:
        signal.signal(signal.SIGINT, before)
    assert stop.value.code == 130 and "--resume goes on" in capsys.readouterr().err
    from benchmarks.repro import common

    common._INTERRUPTED.append(True)  # ... and no further run starts after it (it trained every remaining one)
    try:
        with pytest.raises(KeyboardInterrupt):
            common.train_run("x.yaml", Path("unused"), None)  # type: ignore[arg-type]
    finally:
        common._INTERRUPTED.clear()


def test_study1_options_follow_the_selected_suites(tmp_path: Path) -> None:
    """Study 1's evaluation gave every suite's options whatever --suites said: evaluate refused them (an option no
    selected suite reads), and the OOD set's cue-conflict stimuli were read even without the OOD suite (a GPU
    machine's data has none: ``--cifar10-only``)."""
    import argparse

    sys.path.insert(0, str(REPO))
    from benchmarks.repro.apr_cifar10 import eval_options

    missing = tmp_path / "no-shared"  # no stimuli: reading them would fail
    assert eval_options(argparse.Namespace(smoke=True, suites=["corruption", "calibration"]), missing) == {}
    assert eval_options(argparse.Namespace(smoke=True, suites=["phase-bias"]), missing) == {"n_pairs": 64}
    assert eval_options(argparse.Namespace(smoke=False, suites=["phase-bias"]), missing) == {}


def test_device_meta_names_where_and_in_what_precision() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.repro.common import device_meta

    assert device_meta("cpu") == {"device": "cpu", "train_autocast": None, "eval_autocast": None}
