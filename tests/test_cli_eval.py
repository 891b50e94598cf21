"""``aprkit eval``: flags, YAML configs, --set overrides, output only where asked, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from aprkit.cli import main
from aprkit.cli.eval import _data_arg, apply_overrides, load_config
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
    rc = main(["eval", "--model", "resnet20", "--num-classes", "3", "--data", f"folder:{png_folder}", "--suite", "corruption",
               "--corruptions", "contrast", "--severities", "2", "--out", str(out), "--device", "cpu",
               "--batch-size", "5", "--no-progress", "--model-id", "r20"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "clean_accuracy" in printed and "report.html" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["models"]["r20"]["corruption"]["cells"]["contrast"]["2"]["n"] == 12
    assert (out / "report.html").is_file() and (out / "report.md").is_file() and any((out / "cache").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else in the cwd


def test_cli_without_out_writes_nothing(png_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["eval", "--model", "resnet20", "--num-classes", "3", "--data", f"folder:{png_folder}", "--suite", "corruption",
               "--corruptions", "none", "--device", "cpu", "--no-progress", "--limit", "6"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "nothing was written" in captured.err and "clean_accuracy" in captured.out
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_input_is_a_clear_error(png_folder, tmp_path, capsys):
    assert main(["eval", "--model", "resnet20", "--data", f"folder:{png_folder}", "--suite", "calibraton", "--device", "cpu"]) == 2
    assert "unknown suite 'calibraton'" in capsys.readouterr().err
    assert main(["eval", "--model", "resnet20", "--data", f"cifar10-c:{tmp_path}", "--device", "cpu", "--no-progress"]) == 2
    assert main(["eval", "--data", f"folder:{png_folder}"]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["eval", "--model", "resnet20", "--data", f"folder:{png_folder}", "--set", "novalue"]) == 2
    assert "key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--severities", "1,x"])


def test_config_loading_env_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("APRKIT_TEST_ROOT", "/data/x")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("model: resnet20\ndata: cifar10:${APRKIT_TEST_ROOT}\nsuite: [corruption]\n"
                        "out: ${APRKIT_NOPE:-runs/default}\nodin_temperature: 100\n")
    cfg = load_config(cfg_path)
    assert cfg["data"] == "cifar10:/data/x" and cfg["out"] == "runs/default" and cfg["suites"] == ["corruption"]
    assert cfg["options"] == {"odin_temperature": 100}
    cfg = apply_overrides(cfg, ["limit=100", "severities=[1, 2]", "options.knn_k=5", "fit=cifar10:/t"])
    assert cfg["limit"] == 100 and cfg["severities"] == [1, 2] and cfg["options"]["knn_k"] == 5 and cfg["fit"] == "cifar10:/t"
    with pytest.raises(FileNotFoundError, match="configs/eval"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "eval").glob("*.yaml")))
def test_shipped_configs_parse(name):
    cfg = load_config(REPO / "configs" / "eval" / name)
    assert (cfg.get("model") or cfg.get("models")) and cfg.get("data") and cfg.get("suites")


def test_per_suite_data_arguments():
    assert _data_arg(["cifar10:/a"], None) == "cifar10:/a"
    assert _data_arg(["cifar10:/a", "shape-bias=cue-conflict:/b"], None) == {"default": "cifar10:/a", "shape-bias": "cue-conflict:/b"}
    assert _data_arg(["folder:/x=y"], "cifar10:/a") == "folder:/x=y"  # '=' inside a spec is not a suite name
