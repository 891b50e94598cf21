"""``aprkit eval``: flags, YAML configs, --set overrides, output only where asked, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from aprkit.cli import main
from aprkit.cli.eval import _data_arg
from aprkit.eval import evaluate
from aprkit.eval.engine.config import load_eval_config
from conftest import natural_images

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory) -> Path:
    """An ImageFolder tree root/<class>/<i>.png with 12 images in 3 classes."""
    root = tmp_path_factory.mktemp("folder")
    imgs = natural_images(12, seed=7)
    for i, img in enumerate(imgs):
        d = root / f"class{i % 3}"
        d.mkdir(exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    return root


def test_cli_writes_report_only_to_out(png_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    rc = main(["eval", "--model", "resnet20", "--random-init", "--num-classes", "3", "--data", f"folder:{png_folder}", "--suite", "corruption",
               "--corruptions", "contrast", "--severities", "2", "--out", str(out), "--device", "cpu",
               "--batch-size", "5", "--no-progress", "--model-id", "r20"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "clean_accuracy" in printed and "report.html" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["models"]["r20"]["corruption"]["cells"]["contrast"]["2"]["n"] == 12
    assert (out / "report.html").is_file() and (out / "report.md").is_file() and any((out / "cache").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else in the cwd
    assert "cache:" not in printed
    args = ["eval", "--model", "resnet20", "--random-init", "--num-classes", "3", "--data", f"folder:{png_folder}",
            "--suite", "corruption", "--corruptions", "contrast", "--severities", "2", "--out", str(out), "--device",
            "cpu", "--batch-size", "5", "--no-progress", "--model-id", "r20"]
    assert main(args) == 0  # again: every unit comes from the cache, and the output says so
    assert f"cache: 2 result units reused from {out / 'cache'}, 0 computed (--no-resume recomputes them)" in capsys.readouterr().out
    assert main([*args, "--no-resume"]) == 0
    assert "cache:" not in capsys.readouterr().out


def test_cli_without_out_writes_nothing(png_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["eval", "--model", "resnet20", "--random-init", "--num-classes", "3", "--data", f"folder:{png_folder}", "--suite", "corruption",
               "--corruptions", "none", "--device", "cpu", "--no-progress", "--limit", "6"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "nothing was written" in captured.err and "clean_accuracy" in captured.out
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_input_is_a_clear_error(png_folder, tmp_path, capsys):
    assert main(["eval", "--model", "resnet20", "--random-init", "--data", f"folder:{png_folder}", "--suite", "calibraton", "--device", "cpu"]) == 2
    assert "unknown suite 'calibraton'" in capsys.readouterr().err
    assert main(["eval", "--model", "resnet20", "--random-init", "--data", f"cifar10-c:{tmp_path}", "--device", "cpu", "--no-progress"]) == 2
    assert main(["eval", "--data", f"folder:{png_folder}"]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["eval", "--model", "resnet20", "--random-init", "--data", f"folder:{png_folder}", "--set", "novalue"]) == 2
    assert "key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--severities", "1,x"])
    with pytest.raises(SystemExit):  # a value left out (it read as 1,3); a trailing comma is fine
        main(["eval", "--severities", "1,,3"])
    assert "got '1,,3' (an empty item between commas)" in capsys.readouterr().err
    from aprkit.cli.eval import _int_list

    assert _int_list("1,3,") == [1, 3]
    with pytest.raises(SystemExit):  # as aprkit demo and train.seed: a seed is >= 0
        main(["eval", "--seed", "-1"])
    assert "expected a seed in 0..2**63-1, got '-1'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"seed must be an integer in 0..2\*\*63 - 1"):
        evaluate("resnet20", data=f"folder:{png_folder}", random_init=True, seed=-1)


def test_config_loading_env_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("APRKIT_TEST_ROOT", "/data/x")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("model: resnet20\ndata: cifar10:${APRKIT_TEST_ROOT}\nsuites: [corruption, ood]\n"
                        "out: ${APRKIT_NOPE:-runs/default}\nodin_temperature: 100\n")
    cfg = load_eval_config(cfg_path)
    assert cfg["data"] == "cifar10:/data/x" and cfg["out_dir"] == "runs/default" and cfg["suite"] == ["corruption", "ood"]
    assert cfg["options"] == {"odin_temperature": 100}
    cfg = load_eval_config(cfg_path, ["limit=100", "severities=[1, 2]", "options.knn_k=5", "fit=cifar10:/t", "suites=ood",
                                      "batch_size=64.0"])
    assert cfg["limit"] == 100 and cfg["severities"] == [1, 2] and cfg["options"]["knn_k"] == 5 and cfg["fit"] == "cifar10:/t"
    assert cfg["suite"] == ["ood"] and cfg["batch_size"] == 64 and isinstance(cfg["batch_size"], int)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_eval_config(tmp_path / "missing.yaml")


def test_eval_config_base_inheritance_and_flags(tmp_path):
    """The train loader's semantics: base:, several files left to right, flags over files, --set over flags."""
    (tmp_path / "base.yaml").write_text("model: resnet20\ndata: synthetic:8\nbatch_size: 16\nsuites: [ood]\nknn_k: 3\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nbatch_size: 32\n")
    (tmp_path / "more.yaml").write_text("limit: 5\n")
    cfg = load_eval_config([tmp_path / "child.yaml", tmp_path / "more.yaml"], ["limit=7"], {"batch_size": 8, "limit": 6})
    assert cfg["batch_size"] == 8 and cfg["limit"] == 7 and cfg["options"] == {"knn_k": 3} and cfg["model"] == "resnet20"


def test_eval_config_typos_are_errors(tmp_path, png_folder, capsys):
    """Issue 12 item 6: eval used to turn unknown keys into suite options and run with neither."""
    base = ["eval", "--model", "resnet20", "--random-init", "--data", f"folder:{png_folder}", "--device", "cpu",
            "--no-progress", "--corruptions", "none"]
    assert main(base + ["--set", "batchsize=16"]) == 2
    assert "unknown config key 'batchsize' (did you mean 'batch_size'" in capsys.readouterr().err
    bad = tmp_path / "typo.yaml"
    bad.write_text("limt: 20\n")
    assert main(base + ["--config", str(bad)]) == 2
    assert "unknown config key 'limt' (did you mean 'limit'" in capsys.readouterr().err
    assert main(base + ["--set", "knn_k=5"]) == 2  # an OOD option while only the corruption suite runs
    assert "option 'knn_k' is read by suite 'ood', which is not selected" in capsys.readouterr().err
    assert main(base + ["--set", "batch_size=abc"]) == 2
    assert "config key 'batch_size' must be an int, got 'abc'" in capsys.readouterr().err
    assert main(base + ["--set", "options.n_binz=3"]) == 2
    assert "unknown config key 'n_binz' (did you mean 'n_bins'" in capsys.readouterr().err
    from aprkit.eval import evaluate

    with pytest.raises(ValueError, match="unknown suite option 'limt'"):
        evaluate(nn_model(), suite="corruption", data=f"folder:{png_folder}", options={"limt": 3}, progress=False)


def nn_model():
    from aprkit.models import create_model

    return create_model("resnet20", num_classes=3)


def test_eval_keys_come_from_evaluate_signature():
    import inspect

    from aprkit.eval import evaluate
    from aprkit.eval.engine.config import eval_schema

    assert set(inspect.signature(evaluate).parameters) | {"models"} == set(eval_schema())


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "eval").glob("*.yaml")))
def test_shipped_configs_load_and_validate(name):
    cfg = load_eval_config(REPO / "configs" / "eval" / name)
    assert (cfg.get("model") or cfg.get("models")) and cfg.get("data") and cfg.get("suite")


def test_per_suite_data_arguments():
    from aprkit.eval.suites import load_suites

    assert _data_arg(["cifar10:/a"]) == {"default": "cifar10:/a"}
    assert _data_arg(["cifar10:/a", "shape-bias=cue-conflict:/b"]) == {"default": "cifar10:/a", "shape-bias": "cue-conflict:/b"}
    assert _data_arg(["folder:/x=y"]) == {"default": "folder:/x=y"}  # '=' inside a spec is not a suite name
    for name in load_suites():  # issue 12 item 7: every registered suite, not a hand-written list (cue-conflict was missing)
        assert _data_arg(["cifar10:/a", f"{name}=synthetic:9"]) == {"default": "cifar10:/a", name: "synthetic:9"}
    with pytest.raises(ValueError, match="'cue_conflict' is not a suite .*did you mean 'cue-conflict'"):
        _data_arg(["cue_conflict=synthetic"])


def test_cue_conflict_data_does_not_replace_clean_data(tmp_path):
    """Issue 12 item 7: ``--data cue-conflict=SPEC`` used to become the clean data of every suite."""
    rc = main(["eval", "--model", "resnet20", "--random-init", "--data", "synthetic:16", "--data", "cue-conflict=synthetic:12",
               "--suite", "corruption", "--suite", "cue-conflict", "--corruptions", "none", "--device", "cpu",
               "--no-progress", "--out", str(tmp_path / "o"), "--model-id", "m"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())["models"]["m"]
    assert res["corruption"]["clean"]["n"] == 16 and res["cue-conflict"]["stimuli"].startswith("synthetic-cue-conflict@v") and ":n=12," in res["cue-conflict"]["stimuli"]


def test_random_weights_are_refused(png_folder, tmp_path, capsys):
    """Issue 12 item 5: no checkpoint used to evaluate random weights (10 %) and exit 0."""
    args = ["eval", "--data", f"folder:{png_folder}", "--corruptions", "none", "--device", "cpu", "--no-progress"]
    assert main(args + ["--model", "resnet20", "--num-classes", "3"]) == 2
    err = capsys.readouterr().err
    assert "no trained weights" in err and "--checkpoint" in err and "--random-init" in err
    from aprkit.models import create_model, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "c100.pt", create_model("resnet20", num_classes=100))
    assert main(args + ["--model", str(ckpt), "--num-classes", "3"]) == 2
    assert "has 100 classes but the model was built with 3" in capsys.readouterr().err
    assert main(args + ["--model", str(ckpt), "--num-classes", "3", "--drop-head"]) == 0


def test_every_flag_is_an_evaluate_setting():
    """Flags map onto evaluate's parameters (or their aliases) without a hand-written list."""
    import argparse

    from aprkit.cli.eval import _NOT_SETTINGS, add_parser
    from aprkit.eval.engine.config import ALIASES, eval_schema

    sub = argparse.ArgumentParser().add_subparsers()
    dests = {a.dest for a in add_parser(sub)._actions if a.dest != "help"} - set(_NOT_SETTINGS)
    assert {ALIASES.get(d, d) for d in dests} <= set(eval_schema())


def test_data_given_twice_is_refused():
    with pytest.raises(ValueError, match="--data given twice for the default data"):
        _data_arg(["synthetic:40", "synthetic:80"])
    with pytest.raises(ValueError, match="given twice for 'ood'"):
        _data_arg(["ood=noise:gaussian", "ood=noise:uniform"])


def test_a_model_flag_over_a_configs_models_says_it_replaces_them(tmp_path):
    cfg = tmp_path / "two.yaml"
    cfg.write_text("models: {a: resnet20, b: resnet56}\ndata: synthetic:8\n")
    with pytest.warns(UserWarning, match=r"--model replaces the config's models: \(a, b\); only 'resnet32'"):
        out = load_eval_config([cfg], flags={"model": "resnet32"})
    assert out["model"] == "resnet32" and "models" not in out
    cfg.write_text("models: null\ndata: synthetic:8\n")  # an emptied models: is replaced without a word
    assert load_eval_config([cfg], flags={"model": "resnet32"})["model"] == "resnet32"


def test_a_model_override_replaces_a_configs_models_as_the_flag_does(tmp_path):
    """--set model=X over a config's models: evaluated the config's four models and not X, without a word; two
    config files with 'models' and 'model' kept the models silently (CLI tester)."""
    cfg = tmp_path / "two.yaml"
    cfg.write_text("models: {a: resnet20, b: resnet56}\ndata: synthetic:8\n")
    with pytest.warns(UserWarning, match=r"--set model=resnet32 replaces the config's models: \(a, b\)"):
        out = load_eval_config([cfg], ["model=resnet32"])
    assert out["model"] == "resnet32" and "models" not in out
    one = tmp_path / "one.yaml"
    one.write_text("model: resnet32\n")
    with pytest.raises(ValueError, match=r"sets both 'model' \('resnet32'\) and 'models' \(a, b\); keep one"):
        load_eval_config([cfg, one])


def test_a_model_override_keeps_the_flags_checkpoint_and_the_configs_own_model(tmp_path):
    """--set model=X dropped a --checkpoint given as a flag, and a quoted 'resnet20' or a later model=resnet20 (the
    config's own model) dropped the config's checkpoint (diff reviewer)."""
    cfg = tmp_path / "one.yaml"
    cfg.write_text("model: resnet20\ncheckpoint: r20.th\ndata: synthetic:8\n")
    assert load_eval_config([cfg], ["model=resnet32"], {"checkpoint": "mine.pt"})["checkpoint"] == "mine.pt"
    with pytest.warns(UserWarning, match="replaces the config's model 'resnet20' and its checkpoint"):
        assert "checkpoint" not in load_eval_config([cfg], ["model=resnet32"])
    for ov in (["model='resnet20'"], ["model=resnet32", "model=resnet20"]):
        assert load_eval_config([cfg], ov)["checkpoint"] == "r20.th"


def test_data_flags_over_a_configs_data(tmp_path):
    """--data SUITE=SPEC over a config's one spec dropped the config's data (the run then found no default data);
    --data SPEC over a config's per-suite data only added a default nobody read, without a word (CLI tester)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\ndata: synthetic:8\nsuite: [corruption, calibration]\n")
    out = load_eval_config([cfg], flags={"data": {"calibration": "synthetic:16"}})
    assert out["data"] == {"default": "synthetic:8", "calibration": "synthetic:16"}
    assert load_eval_config([cfg], ["data.calibration=synthetic:16"])["data"] == out["data"]
    cfg.write_text("model: resnet20\ndata: {corruption: 'synthetic:8', calibration: 'synthetic:8'}\n"
                   "suite: [corruption, calibration]\n")
    with pytest.warns(UserWarning, match=r"the config's own data stays for corruption \(synthetic:8\), calibration"):
        out = load_eval_config([cfg], flags={"data": {"default": "synthetic:4"}})
    assert out["data"] == {"corruption": "synthetic:8", "calibration": "synthetic:8", "default": "synthetic:4"}


def test_a_model_flag_over_a_configs_model_takes_its_checkpoint_and_label_along(tmp_path):
    """Tester: ``--config cifar10_resnet20 --model resnet32 --checkpoint F`` printed resnet32's accuracy under the
    label resnet20 (the config's model_id), and ``--model FILE`` was refused for the config's checkpoint too."""
    cfg = tmp_path / "one.yaml"
    cfg.write_text("model: resnet20\ncheckpoint: r20.th\nmodel_id: resnet20\ndata: synthetic:8\n")
    with pytest.warns(UserWarning, match=r"replaces the config's model 'resnet20' and its checkpoint and model_id"):
        out = load_eval_config([cfg], flags={"model": "r56.th"})
    assert out["model"] == "r56.th" and "checkpoint" not in out and "model_id" not in out
    with pytest.warns(UserWarning, match="and its model_id"):
        out = load_eval_config([cfg], flags={"model": "resnet32", "checkpoint": "r32.th"})
    assert (out["checkpoint"], out.get("model_id")) == ("r32.th", None)
    same = load_eval_config([cfg], flags={"model": "resnet20"})  # the config's own model keeps its weights and label
    assert (same["checkpoint"], same["model_id"]) == ("r20.th", "resnet20")


def test_the_weights_file_read_with_an_architecture_is_recorded(tmp_path, capsys) -> None:
    """--model ARCH --checkpoint FILE: the report and meta name the file evaluated, not only the architecture."""
    from aprkit.models import create_model, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "mine.pt", create_model("resnet20", num_classes=10))
    out = tmp_path / "out"
    assert main(["eval", "--model", "resnet20", "--checkpoint", str(ckpt), "--data", "synthetic:8", "--suite",
                 "calibration", "--corruptions", "none", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["models"] == {"resnet20": f"resnet20, checkpoint {ckpt}"}
    assert f"checkpoint {ckpt}" in (out / "report.md").read_text()


def test_print_config_shows_the_resolved_settings(capsys):
    """`aprkit eval --print-config` was an unknown flag (only aprkit train had it)."""
    import yaml

    from aprkit.cli import main

    assert main(["eval", "--model", "resnet20", "--random-init", "--data", "synthetic:8", "--print-config",
                 "--set", "batch_size=7"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"] == "resnet20" and cfg["batch_size"] == 7 and cfg["data"] == "synthetic:8"
    # --download is a setting too: a config saved from this output lost it (docs follower)
    assert main(["eval", "--model", "resnet20", "--data", "cifar10:x", "--download", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["download"] is True



def test_repeated_corruption_and_severity_flags_add_up(capsys):
    """``--corruptions fog --corruptions contrast`` kept the last flag only (one cell of the 2 x 2 asked for, without
    a word), while aprkit corrupt, --ood and --suite add repeats up."""
    import yaml

    assert main(["eval", "--model", "resnet20", "--random-init", "--data", "synthetic:8", "--print-config",
                 "--corruptions", "fog", "--corruptions", "contrast", "--severities", "1", "--severities", "5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["corruptions"] == ["fog", "contrast"] and cfg["severities"] == [1, 5]

def test_sigterm_stops_a_command_as_ctrl_c_does(monkeypatch, capsys):
    """SIGTERM (a scheduler, kill) is raised as an interrupt: the command's own cleanup runs, the message says so, the
    exit code is 143; a closed output pipe (| head) ends quietly with 141 (it was an error line and 2) (tester)."""
    import os
    import signal

    import aprkit.cli.eval as cli_eval

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli_eval, "run", terminated)
    assert main(["eval", "--model", "resnet20", "--data", "synthetic:8"]) == 143
    assert "terminated (SIGTERM); finished results are kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # restored

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_eval, "run", broken)  # another pipe (a worker's): an error line as any other
    assert main(["eval", "--model", "resnet20", "--data", "synthetic:8"]) not in (0, 141)
    assert "aprkit eval: error:" in capsys.readouterr().err

    class ClosedStdout:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise ValueError("no descriptor")

    monkeypatch.setattr("sys.stdout", ClosedStdout())  # stdout's reader went away (| head): quiet, 141
    assert main(["eval", "--model", "resnet20", "--data", "synthetic:8"]) == 141
    assert "error" not in capsys.readouterr().err


def test_an_unknown_flag_gets_the_subcommands_usage_and_the_nearest_options(capsys):
    """argparse printed the top-level usage and no suggestion for a mistyped subcommand flag."""
    from aprkit.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--model", "resnet20", "--suites", "calibration", "--limt", "3"])
    err = capsys.readouterr().err
    assert err.startswith("usage: aprkit eval") and "--suites: did you mean --suite" in err
    assert "--limt: did you mean --limit" in err
    with pytest.raises(SystemExit):  # before the subcommand: the top-level usage, not eval's (whose --out it offered)
        main(["--bogus", "eval", "--model", "resnet20"])
    err = capsys.readouterr().err
    assert err.startswith("usage: aprkit [-h]") and "unrecognized arguments: --bogus" in err and "--out" not in err
    with pytest.raises(SystemExit):
        main(["--debg", "eval", "--model", "resnet20"])
    assert "--debg: did you mean --debug?" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # aprkit train's flag, which the demo has no need of (demo tester)
        main(["demo", "--out", "x", "--resume"])
    assert "--resume: the demo resumes by itself: rerun the same command" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option after '--' is a file name: it read "--labels: did you mean --labels?"
        main(["corrupt", "--corruptions", "fog", "--", "imgs.npy", "out", "--labels", "labs.npy"])
    assert "--labels comes after '--', after which every word is a file name" in capsys.readouterr().err
    for argv in (["evl", "--model", "resnet20"], ["--debug", "evl"]):  # a mistyped subcommand: the nearest one
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert "invalid choice: 'evl' (choose from demo, train, eval, corrupt) (did you mean 'eval'?)" in err


def test_overrides_apply_in_order_options_mapping_too():
    """--set 'options={knn_k: 9}' knn_k=3 gave 9 (the mapping was applied after every other override)."""
    base = ["model=resnet20", "data=synthetic:8", "suite=ood"]
    assert load_eval_config(None, [*base, "options={knn_k: 9}", "knn_k=3"])["options"]["knn_k"] == 3
    assert load_eval_config(None, [*base, "knn_k=3", "options={knn_k: 9}"])["options"]["knn_k"] == 9


def test_a_configs_options_for_suites_not_selected_are_left_out_with_a_warning(tmp_path):
    """A shipped OOD config run with --suite calibration was refused for its fit_limit, which neither editing (a
    shipped file) nor --set could undo (CLI tester). Options from files that only unselected suites read are left
    out, with a warning; typed ones (a flag, --set) for such a suite are still refused."""
    cfg = tmp_path / "ood.yaml"
    cfg.write_text("model: resnet20\ndata: synthetic:8\nsuite: ood\nknn_k: 7\n")
    with pytest.warns(UserWarning, match=r"the config's option knn_k is left out: only suites this run does not "
                                         r"select read it \(suites: calibration\)"):
        out = load_eval_config([cfg], flags={"suite": ["calibration"]})
    assert out["suite"] == ["calibration"] and "knn_k" not in out["options"]
    assert load_eval_config([cfg])["options"]["knn_k"] == 7
    with pytest.raises(ValueError, match="option 'knn_k' is read by suite 'ood', which is not selected"):
        load_eval_config([cfg], ["knn_k=3"], flags={"suite": ["calibration"]})


def test_ood_scores_left_out_are_said_where_it_happens(png_folder):
    """Mahalanobis/KNN on a folder without a training split vanished from the console output without a word (the
    reason was in the report only; docs follower)."""
    import torch

    from aprkit.models import create_model

    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match=r"OOD scores mahalanobis, knn left out: .*aprkit eval --fit"):
        evaluate(create_model("small_cnn", num_classes=3), suite="ood", data=f"folder:{png_folder}", device="cpu",
                 progress=False, model_id="m", options={"ood": "noise:gaussian"})


def test_save_checkpoint_with_torch_saves_argument_order_says_so(tmp_path):
    from aprkit.models import create_model, save_checkpoint

    with pytest.raises(TypeError, match=r"the arguments are \(path, model\)"):
        save_checkpoint(create_model("small_cnn"), tmp_path / "m.pt")


@pytest.mark.parametrize("given, error", [
    (["--batch-size", "0"], "batch_size must be a positive integer"), (["--workers", "-1"], "num_workers must be"),
    (["--device", "gpu"], "unknown device 'gpu'"), (["--num-classes", "0"], "num_classes must be a positive"),
    (["--set", "seed=-1"], "seed must be an integer")])
def test_print_config_refuses_what_the_run_would(given, error, capsys):
    """--print-config said 'validated' and printed settings the run then refused (CLI tester)."""
    from aprkit.cli import main

    assert main(["eval", "--model", "resnet20", "--data", "synthetic:8", "--print-config", *given]) == 2
    assert error in capsys.readouterr().err


def test_a_models_entry_that_cannot_load_is_named(tmp_path, capsys):
    """Two resnet20 entries could not be told apart in the error, whose --checkpoint models: refuses (CLI tester)."""
    from aprkit.cli import main

    cfg = tmp_path / "mm.yaml"
    cfg.write_text("models: {a: resnet20, b: resnet20}\ndata: synthetic:8\nsuite: calibration\n")
    assert main(["eval", "--config", str(cfg)]) == 2
    assert "models.a (its weights: models: {a: {model: SPEC, checkpoint: FILE}})" in capsys.readouterr().err


def test_an_ood_set_that_cannot_be_opened_is_named_as_one(tmp_path, capsys):
    """--ood folder:/nonexistent said only 'image folder ... does not exist' (CLI tester)."""
    from aprkit.cli import main

    rc = main(["eval", "--model", "small_cnn", "--random-init", "--data", "synthetic:80", "--suite", "ood",
               "--ood", f"folder:{tmp_path / 'none'}", "--set", "ood_scores=[msp]", "--no-progress"])
    assert rc == 2 and f"OOD set folder:{tmp_path / 'none'} (--ood): image folder" in capsys.readouterr().err
