"""The bad-input table (issue 12 item 13): every bad input gives one clear line naming what was expected.

Each CLI case runs ``aprkit.cli.main([...])`` in-process and checks the exit code (2: bad input), the
``aprkit <cmd>: error: ...`` line (a regular expression naming the file or key and what was expected) and
that no traceback is printed; API cases check the exception type and message. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from aprkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of broken inputs: images, arrays, checkpoints, YAML files."""
    from aprkit.models import create_model, save_checkpoint
    from aprkit.train.state import CHECKPOINT_FORMAT

    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    for name, sizes in (("good", [(8, 8)] * 4), ("mixed", [(8, 8)] * 2 + [(12, 10)] * 2)):
        for i, (h, w) in enumerate(sizes):
            (d / name / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / name / f"c{i % 2}" / f"{i}.png")
    for name in ("trunc", "junkpng"):
        for f in (d / "good").rglob("*.png"):
            (d / name / f.parent.name).mkdir(parents=True, exist_ok=True)
            (d / name / f.parent.name / f.name).write_bytes(f.read_bytes())
    png = d / "trunc" / "c0" / "0.png"
    png.write_bytes(png.read_bytes()[:60])
    (d / "junkpng" / "c1" / "1.png").write_bytes(bytes(range(256)))
    (d / "emptyfolder").mkdir()
    np.save(d / "ok.npy", rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    np.save(d / "empty.npy", np.zeros((0, 8, 8, 3), np.uint8))
    (d / "trunc.npy").write_bytes((d / "ok.npy").read_bytes()[:200])
    (d / "c10c").mkdir()
    (d / "c10c" / "fog.npy").write_bytes((d / "ok.npy").read_bytes()[:200])
    np.save(d / "c10c" / "labels.npy", np.zeros(20, np.int64))
    save_checkpoint(d / "c100.pt", create_model("resnet20", num_classes=100))
    save_checkpoint(d / "c3.pt", create_model("resnet20", num_classes=3))
    save_checkpoint(d / "r20.pt", create_model("resnet20"))
    (d / "trunc.pt").write_bytes((d / "r20.pt").read_bytes()[:5000])
    (d / "rand.pt").write_bytes(bytes(rng.integers(0, 256, 2000, dtype=np.uint8)))
    (d / "empty.pt").write_bytes(b"")
    torch.save(torch.nn.Linear(2, 2), d / "module.pt")
    (d / "afile").write_text("not a folder\n")
    texts = {"syntax.yaml": "model: resnet20\ndata: [unclosed\n", "list.yaml": "- a\n- b\n", "typo.yaml": "limt: 20\n",
             "cyc.yaml": "base: cyc.yaml\n", "missingbase.yaml": "base: nope.yaml\n", "alias.yaml": "suite: ood\nsuites: [ood]\n"}
    for name, text in texts.items():
        (d / name).write_text(text)
    (d / "run_r20").mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "config": {"model": {"name": "resnet20", "num_classes": 10}}},
               d / "run_r20" / "last.pt")
    (d / "run_junk").mkdir()
    (d / "run_junk" / "last.pt").write_bytes(b"\x80\x04junk")
    return d


E = ["eval", "--device", "cpu", "--no-progress", "--corruptions", "none"]
T = ["--set", "data.dataset=synthetic:32", "optim.batch_size=8", "train.max_steps=1", "train.progress=false",
     "data.num_workers=0", "train.eval_every=0", "train.tensorboard=false", "model.name=resnet20"]


def _m(d: Path) -> list[str]:
    return ["--model", str(d / "r20.pt")]


# (id, argv builder, expected message pattern); exit code 2 unless the argv starts with "exit1"
CLI: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # output folder, checked before any work
    ("eval-out-is-file", lambda d: E + _m(d) + ["--data", "synthetic:8", "--out", str(d / "afile")], r"--out .*afile is a file; expected a folder"),
    ("eval-out-under-file", lambda d: E + _m(d) + ["--data", "synthetic:8", "--out", str(d / "afile" / "x")], r"cannot be created: .*afile is a file"),
    ("eval-out-before-work", lambda d: E + _m(d) + ["--data", f"folder:{d}/nope", "--out", str(d / "afile")], r"--out .*afile is a file"),
    # checkpoints and weights
    ("eval-truncated-checkpoint", lambda d: E + ["--model", str(d / "trunc.pt"), "--data", "synthetic:8"], r"trunc\.pt is not a valid checkpoint .*truncated"),
    ("eval-random-bytes-checkpoint", lambda d: E + ["--model", "resnet20", "--checkpoint", str(d / "rand.pt"), "--data", "synthetic:8"], r"rand\.pt is not a valid checkpoint"),
    ("eval-empty-checkpoint", lambda d: E + ["--model", "resnet20", "--checkpoint", str(d / "empty.pt"), "--data", "synthetic:8"], r"empty\.pt is not a valid checkpoint \(empty file"),
    ("eval-missing-checkpoint", lambda d: E + ["--model", "resnet20", "--checkpoint", str(d / "nope.pt"), "--data", "synthetic:8"], r"checkpoint file not found: .*nope\.pt"),
    ("eval-checkpoint-is-folder", lambda d: E + ["--model", "resnet20", "--checkpoint", str(d), "--data", "synthetic:8"], r"checkpoint file is a folder"),
    ("eval-pickled-module-checkpoint", lambda d: E + ["--model", "resnet20", "--checkpoint", str(d / "module.pt"), "--data", "synthetic:8"], r"pickled Python objects \(torch\.nn\.modules\.linear\.Linear\)"),
    ("eval-no-weights", lambda d: E + ["--model", "resnet20", "--data", "synthetic:8"], r"no trained weights.*--checkpoint.*--random-init"),
    ("eval-head-mismatch", lambda d: E + ["--model", str(d / "c100.pt"), "--num-classes", "10", "--data", "synthetic:8"], r"has 100 classes but the model was built with 10.*--drop-head"),
    ("eval-random-init-and-checkpoint", lambda d: E + ["--model", "resnet20", "--random-init", "--checkpoint", str(d / "r20.pt"), "--data", "synthetic:8"], r"random_init=True .*checkpoint= was given too"),
    ("eval-unknown-model", lambda d: E + ["--model", "resnet21", "--data", "synthetic:8"], r"unknown model spec 'resnet21' \(did you mean"),
    ("eval-negative-workers", lambda d: E + ["--model", "resnet20", "--random-init", "--data", "synthetic:8", "--workers", "-1"], r"num_workers must be an integer >= 0"),
    ("eval-unknown-library", lambda d: E + ["--model", "keras:resnet", "--data", "synthetic:8"], r"unknown model library 'keras'.*expected"),
    ("eval-unknown-timm-model", lambda d: E + ["--model", "timm:resnet_nope", "--data", "synthetic:8"], r"unknown timm model 'resnet_nope'"),
    ("eval-model-given-twice", lambda d: E + ["--model", "resnet20", "--model", "resnet56", "--data", "synthetic:8"], r"--model given 2 times \(resnet20, resnet56\); one --model per run"),
    ("eval-model-classes-below-labels", lambda d: E + ["--model", str(d / "c3.pt"), "--data", "synthetic:8"], r"model outputs 3 classes but the data has 10"),
    # suites and data
    ("eval-unknown-suite", lambda d: E + _m(d) + ["--data", "synthetic:8", "--suite", "calibraton"], r"unknown suite 'calibraton' \(did you mean 'calibration'"),
    ("eval-data-prefix-not-a-suite", lambda d: E + _m(d) + ["--data", "cue_conflict=synthetic"], r"'cue_conflict' is not a suite \(did you mean 'cue-conflict'"),
    ("eval-data-suite-without-spec", lambda d: E + _m(d) + ["--data", "synthetic:8", "--data", "ood="], r"no data spec after '='; expected ood=SPEC"),
    ("eval-no-data-for-suite", lambda d: E + _m(d) + ["--data", "ood=noise:gaussian"], r"no data for suite 'corruption'"),
    ("eval-unknown-data-kind", lambda d: E + _m(d) + ["--data", "nosuch:/x"], r"unknown dataset kind 'nosuch'.*valid kinds"),
    ("eval-missing-folder", lambda d: E + _m(d) + ["--data", f"folder:{d}/nope"], r"image folder .*nope does not exist; expected the ImageFolder layout"),
    ("eval-empty-folder", lambda d: E + _m(d) + ["--data", f"folder:{d}/emptyfolder"], r"no images found under .*emptyfolder"),
    ("eval-truncated-png", lambda d: E + _m(d) + ["--data", f"folder:{d}/trunc"], r"cannot decode image .*trunc/c0/0\.png"),
    ("eval-random-bytes-png", lambda d: E + _m(d) + ["--data", f"folder:{d}/junkpng"], r"junkpng/c1/1\.png"),
    ("eval-mixed-image-sizes", lambda d: E + _m(d) + ["--data", f"folder:{d}/mixed"], r"images differ in size \(.*\.png is 8x8; .*\.png is 12x10\).*resize"),
    ("eval-synthetic-count", lambda d: E + _m(d) + ["--data", "synthetic:abc"], r"synthetic spec takes an image count"),
    ("eval-truncated-c-npy", lambda d: E[:-2] + _m(d) + ["--data", "synthetic:8", "--corruptions", "fog", "--corrupted", f"cifar10-c:{d}/c10c"], r"fog\.npy is not a readable \.npy array"),
    ("eval-missing-c-folder", lambda d: E[:-2] + _m(d) + ["--data", "synthetic:8", "--corruptions", "fog", "--corrupted", f"cifar10-c:{d}/nope"], r"nope does not exist; expected the CIFAR-C layout"),
    ("eval-unknown-corruption", lambda d: E[:-2] + _m(d) + ["--data", "synthetic:8", "--corruptions", "fgo"], r"unknown corruption 'fgo' \(did you mean 'fog'"),
    ("eval-severity-out-of-range", lambda d: E[:-2] + _m(d) + ["--data", "synthetic:8", "--corruptions", "fog", "--severities", "7"], r"severities must be integers in 1\.\.5"),
    ("eval-batch-size-zero", lambda d: E + _m(d) + ["--data", "synthetic:8", "--batch-size", "0"], r"batch_size must be a positive integer, got 0"),
    ("eval-limit-zero", lambda d: E + _m(d) + ["--data", "synthetic:8", "--limit", "0"], r"limit must be a positive number of images"),
    ("eval-no-model", lambda d: E + ["--data", "synthetic:8"], r"no model given: pass --model"),
    ("eval-no-data", lambda d: E + _m(d), r"no data given: pass --data"),
    ("eval-device-tpu", lambda d: E + _m(d) + ["--data", "synthetic:8", "--device", "tpu"], r"unknown device 'tpu'; expected auto, cpu, cuda"),
    # settings: the config loader shared with train
    ("eval-set-typo", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "batchsize=16"], r"unknown config key 'batchsize' \(did you mean 'batch_size'"),
    ("eval-config-typo", lambda d: E + _m(d) + ["--data", "synthetic:8", "--config", str(d / "typo.yaml")], r"unknown config key 'limt' \(did you mean 'limit'"),
    ("eval-set-not-an-int", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "batch_size=abc"], r"config key 'batch_size' must be an int, got 'abc'"),
    ("eval-set-not-a-bool", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "amp=maybe"], r"config key 'amp' must be bool or null, got 'maybe'"),
    ("eval-set-seed-list", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "seed=[1, 2]"], r"config key 'seed' must be an int, got \[1, 2\]"),
    ("eval-set-without-equals", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "novalue"], r"override 'novalue' must look like key=value"),
    ("eval-option-of-unselected-suite", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "knn_k=5"], r"option 'knn_k' is read by suite 'ood', which is not selected"),
    ("eval-unknown-suite-option", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "options.n_binz=3"], r"unknown config key 'n_binz' \(did you mean 'n_bins'"),
    ("eval-suite-option-type", lambda d: E + _m(d) + ["--data", "synthetic:8", "--suite", "ood", "--set", "knn_k=many"], r"option 'knn_k' of suite 'ood': input should be a valid integer.*got 'many'"),
    ("eval-nested-suite-option", lambda d: E + _m(d) + ["--data", "synthetic:8", "--suite", "phase-bias", "--set", "phase-bias.pairs=3"], r"unknown phase-bias option 'phase-bias\.pairs' \(did you mean 'n_pairs'"),
    ("eval-data-mapping-key", lambda d: E + _m(d) + ["--data", "synthetic:8", "--set", "data.shape_bias=x"], r"'data\.shape_bias': not a suite \(did you mean 'shape-bias'"),
    ("eval-models-and-checkpoint", lambda d: E + ["--data", "synthetic:8", "--set", f"models={{a: {d}/r20.pt}}", "--checkpoint", str(d / "r20.pt")], r"checkpoint applies to one --model"),
    ("eval-models-entry-key", lambda d: E + ["--data", "synthetic:8", "--set", f"models={{a: {{model: {d}/r20.pt, ckpt: x}}}}"], r"unknown config key 'models\.a\.ckpt' \(did you mean 'checkpoint'"),
    ("eval-config-missing", lambda d: E + ["--config", str(d / "nope.yaml")], r"config file not found: .*nope\.yaml"),
    ("eval-config-yaml-syntax", lambda d: E + ["--config", str(d / "syntax.yaml")], r"syntax\.yaml is not valid YAML at line 3, column 1"),
    ("eval-config-not-a-mapping", lambda d: E + ["--config", str(d / "list.yaml")], r"list\.yaml must hold a mapping of settings"),
    ("eval-config-base-cycle", lambda d: E + ["--config", str(d / "cyc.yaml")], r"config inheritance cycle"),
    ("eval-config-missing-base", lambda d: E + ["--config", str(d / "missingbase.yaml")], r"nope\.yaml \(named as base: in .*missingbase\.yaml\)"),
    ("eval-config-key-and-alias", lambda d: E + _m(d) + ["--data", "synthetic:8", "--config", str(d / "alias.yaml")], r"sets both 'suite' and its alias 'suites'"),
    # train
    ("train-unknown-key", lambda d: ["train", "--set", "optim.learning_rate=1"], r"unknown config key 'optim\.learning_rate'; valid keys in optim: lr"),
    ("train-unknown-section", lambda d: ["train", "--set", "optimizer.lr=1"], r"unknown config key 'optimizer' \(did you mean 'optim'"),
    ("train-set-not-an-int", lambda d: ["train", "--set", "optim.batch_size=abc"], r"config key 'optim\.batch_size' must be an int, got 'abc'"),
    ("train-yaml-syntax", lambda d: ["train", "--config", str(d / "syntax.yaml")], r"syntax\.yaml is not valid YAML at line 3"),
    ("train-out-is-file", lambda d: ["train", "--out", str(d / "afile")] + T, r"--out .*afile is a file; expected a folder"),
    ("train-device-tpu", lambda d: ["train", "--set", "train.device=tpu"], r"train\.device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("train-unknown-model", lambda d: ["train", "--set", "model.name=resnet21"], r"unknown model\.name 'resnet21' \(did you mean"),
    ("train-unknown-method", lambda d: ["train", "--set", "aug.method=apr-sp"], r"aug\.method.*did you mean 'apr_sp'"),
    ("train-no-out", lambda d: ["train", "--set", "train.max_steps=1"], r"no output directory: give --out DIR"),
    ("train-classes-below-labels", lambda d: ["train", "--out", str(d / "t_cls")] + T + ["model.num_classes=5"], r"model\.num_classes=5 but the training data synthetic:32 has 10 classes"),
    ("train-resume-other-arch", lambda d: ["train", "--out", str(d / "run_r20"), "--resume"] + T + ["model.name=resnet32"], r"cannot resume: .*last\.pt is a run of model\.name='resnet20'.*not 'resnet32'"),
    ("train-resume-junk-state", lambda d: ["train", "--out", str(d / "run_junk"), "--resume"] + T, r"last\.pt is not a valid training checkpoint"),
    ("train-init-checkpoint-junk", lambda d: ["train", "--out", str(d / "t_init")] + T + [f"model.checkpoint={d}/rand.pt"], r"rand\.pt is not a valid checkpoint"),
    ("train-missing-data", lambda d: ["train", "--out", str(d / "t_data")] + T + [f"data.dataset=folder:{d}/nope"], r"image folder .*nope does not exist"),
    ("eval-timm-image-size", lambda d: E + ["--model", "timm:vit_tiny_patch16_224", "--random-init", "--data", "synthetic:4", "--suite", "calibration"], r"the model takes images 224 px in height and these are 32 px: .*model_kwargs\.img_size=32"),
    # demo, corrupt
    ("demo-out-is-file", lambda d: ["demo", "--out", str(d / "afile"), "--quick", "--no-progress"], r"--out .*afile is a file; expected a folder"),
    ("corrupt-missing-input", lambda d: ["corrupt", str(d / "nope.npy"), str(d / "c_out")], r"nope\.npy.*does not exist"),
    ("corrupt-empty-array", lambda d: ["corrupt", str(d / "empty.npy"), str(d / "c_out"), "--corruptions", "fog", "--no-progress"], r"empty\.npy.*holds no images"),
    ("corrupt-unknown-corruption", lambda d: ["corrupt", str(d / "ok.npy"), str(d / "c_out"), "--corruptions", "fgsm", "--no-progress"], r"unknown corruption 'fgsm'"),
]
CUDA_CLI = [
    ("eval-device-cuda-without-gpu", lambda d: E + _m(d) + ["--data", "synthetic:8", "--device", "cuda"], r"CUDA is not available; use --device cpu"),
    ("corrupt-device-cuda-without-gpu", lambda d: ["corrupt", str(d / "ok.npy"), str(d / "c_cuda"), "--corruptions", "fog",
                                                  "--severities", "1", "--no-progress", "--device", "cuda"], r"CUDA .*not available.*--device cpu"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CLI + [pytest.param(c, marks=NO_CUDA) for c in CUDA_CLI], ids=lambda c: c[0])
def test_cli_bad_input(case, bad, capsys):
    _, build, pattern = case
    argv = build(bad)
    rc, err = _run(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and re.match(rf"aprkit {argv[0]}: error: ", lines[0]), err
    assert re.search(pattern, lines[0]), lines[0]


def test_argparse_errors_are_one_line(capsys):
    rc, err = _run(["eval", "--severities", "1,x"], capsys)
    assert rc == 2 and "expected comma-separated integers such as 1,3,5, got '1,x'" in err and "Traceback" not in err
    for flag in ("--corruptions", "--severities"):  # an empty list read as "not given" ran every default value
        rc, err = _run(["eval", flag, ""], capsys)
        assert rc == 2 and f"argument {flag}: expected comma-separated" in err and "got an empty list" in err


def test_debug_adds_the_traceback(bad, capsys):
    argv = E + ["--model", str(bad / "trunc.pt"), "--data", "synthetic:8"]
    for debug in (["--debug"] + argv, argv + ["--debug"]):
        rc, err = _run(debug, capsys)
        assert rc == 2 and "Traceback" in err and "trunc.pt is not a valid checkpoint" in err.splitlines()[-1]


def test_unexpected_errors_are_one_line_exit_1(monkeypatch, capsys):
    import aprkit.cli.train as train_cli

    def boom(args: Any) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(train_cli, "run", boom)
    rc, err = _run(["train"], capsys)
    assert rc == 1 and err.strip() == ("aprkit train: error: unexpected ZeroDivisionError: division by zero "
                                       "(run with --debug for the traceback)")


def _api_cases() -> list[tuple[str, Callable[[Path], Any], type[BaseException], str]]:
    from aprkit.cli._common import check_out_dir
    from aprkit.config import read_config_files
    from aprkit.data import get_dataset
    from aprkit.data.arrays import load_npy
    from aprkit.data.folder import read_image
    from aprkit.data.loading import subset
    from aprkit.eval import evaluate
    from aprkit.eval.engine.config import check_suite_options, load_eval_config
    from aprkit.distributed import resolve_device
    from aprkit.eval.engine.inference import predict
    from aprkit.eval.suites.base import EvalContext
    from aprkit.eval.suites.corruption import CorruptionOptions, evaluate_cell
    from aprkit.hidden.capture import predict_intervened
    from aprkit.models import create_model, load_model
    from aprkit.train.config import load_config

    tiny = lambda: create_model("resnet20", num_classes=10)  # noqa: E731
    stream = type("Stream", (torch.utils.data.IterableDataset,), {"__iter__": lambda self: iter(())})  # no __len__
    return [
        ("load-model-no-weights", lambda d: load_model("resnet20"), ValueError, r"no trained weights.*random_init=True"),
        ("load-model-head-mismatch", lambda d: load_model(d / "c100.pt", num_classes=10), ValueError, r"100 classes .*drop_head=True"),
        ("load-model-junk", lambda d: load_model(d / "rand.pt"), ValueError, r"rand\.pt is not a valid checkpoint"),
        ("read-image-truncated", lambda d: read_image(d / "trunc" / "c0" / "0.png"), ValueError, r"cannot decode image .*0\.png"),
        ("load-npy-truncated", lambda d: load_npy(d / "trunc.npy"), ValueError, r"trunc\.npy is not a readable \.npy array"),
        ("get-dataset-no-root", lambda d: get_dataset("folder:"), ValueError, r"folder needs a root folder"),
        ("evaluate-option-typo", lambda d: evaluate(tiny(), data="synthetic:8", options={"limt": 3}, progress=False), ValueError, r"unknown suite option 'limt'"),
        ("evaluate-no-suite", lambda d: evaluate(tiny(), suite=[], data="synthetic:8", progress=False), ValueError, r"no suite given; choose from"),
        ("evaluate-random-spec", lambda d: evaluate("resnet20", data="synthetic:8", progress=False), ValueError, r"no trained weights"),
        ("evaluate-option-bad-value", lambda d: evaluate(tiny(), suite="ood", data="synthetic:8", options={"knn_k": 0}, progress=False), ValueError, r"option 'knn_k' of suite 'ood': input should be greater than or equal to 1, got 0"),
        ("check-suite-options-unselected", lambda d: check_suite_options(["corruption"], {"knn_k": 3}), ValueError, r"read by suite 'ood'"),
        ("evaluate-cell-no-severity", lambda d: evaluate_cell(EvalContext(tiny()), "synthetic:8", CorruptionOptions(), "fog"),
         ValueError, r"corruption 'fog' needs a severity"),
        ("predict-dataset-without-len", lambda d: predict(tiny(), stream()), TypeError,
         r"map-style with a length .*got Stream without __len__"),
        ("eval-config-yaml", lambda d: load_eval_config(d / "syntax.yaml"), ValueError, r"not valid YAML at line 3"),
        ("train-config-unknown", lambda d: load_config(None, ["data.limt=3"]), ValueError, r"unknown config key 'data\.limt' \(did you mean 'limit'"),
        ("config-files-cycle", lambda d: read_config_files(d / "cyc.yaml"), ValueError, r"inheritance cycle"),
        ("resolve-device-tpu", lambda d: resolve_device("tpu"), ValueError, r"unknown device 'tpu'"),
        ("check-out-dir-file", lambda d: check_out_dir(d / "afile"), ValueError, r"afile is a file; expected a folder"),
        ("create-model-typo", lambda d: create_model("resnet21"), ValueError, r"unknown model 'resnet21' \(did you mean"),
        ("load-model-kwarg-typo", lambda d: load_model("small_cnn", random_init=True, widht=8), TypeError,
         r"model 'small_cnn' takes no argument 'widht' \(.*model\.kwargs\.widht\)"),
        ("subset-bool", lambda d: subset(get_dataset("synthetic:8"), True), TypeError, r"n must be a count .*got True"),
        ("capture-predict-no-replace", lambda d: predict_intervened(tiny(), torch.zeros(2, 3, 32, 32), 2,
                                                                     torch.device("cpu"), site=("layer1", "output")),
         ValueError,
         r"predict with a site needs replace"),
    ]


API = _api_cases()


@pytest.mark.parametrize("case", API, ids=lambda c: c[0])
def test_api_bad_input(case, bad):
    _, call, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        call(bad)


def test_the_table_is_large_enough():
    ids = [c[0] for c in CLI + CUDA_CLI] + [c[0] for c in API]
    assert len(set(ids)) == len(ids) >= 60
    assert os.environ.get("APRKIT_DEBUG") is None


@pytest.mark.parametrize("seed, exc", [(1.5, TypeError), ("3", TypeError), (True, TypeError), (-1, ValueError),
                                       (2**64, ValueError)])
def test_transform_seeds_are_integers_in_range(seed, exc) -> None:
    """``seed=1.5`` ran as 1, ``"3"`` as 3 and ``True`` as 1; -1 became 2**64 - 1 and 2**64 overflowed in torch."""
    from aprkit.augment import APRSP, APRPair, APRSingleBatch
    from aprkit.augment.adapters import APRMixup

    for cls in (APRPair, APRSingleBatch, APRSP, APRMixup):
        with pytest.raises(exc, match="seed must be an integer"):
            cls(seed=seed)
