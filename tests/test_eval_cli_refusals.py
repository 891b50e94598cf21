"""What a failed or impossible ``aprkit eval`` leaves behind: a model that cannot be loaded leaves a results file that
says the run is not complete and why; a clean folder that is not there fails before any download; a centre crop
larger than the image is refused (torchvision's crop padded it with black)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from aprkit.cli import main
from aprkit.data.folder import resize_center_crop


def test_a_model_that_cannot_be_loaded_leaves_an_incomplete_results_file(tmp_path, capsys) -> None:
    rc = main(["eval", "--model", "resnet20", "--checkpoint", str(tmp_path / "none.th"), "--data", "synthetic:8",
               "--suite", "calibration", "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc != 0 and "none.th" in capsys.readouterr().err
    meta = json.loads((tmp_path / "run" / "results.json").read_text())["meta"]
    assert meta["complete"] is False
    assert "none.th" in next(iter(meta["load_failed"].values()))


def test_a_model_that_cannot_be_loaded_into_a_finished_folder_is_named_in_its_report(tmp_path, capsys) -> None:
    """Into a folder holding another model's finished results, the report's status read "complete (every requested
    suite finished)" and never named the model that failed to load (report tester)."""
    common = ["--data", "synthetic:8", "--suite", "calibration", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(["eval", "--model", "small_cnn", "--random-init", "--model-id", "good", *common]) == 0
    rc = main(["eval", "--model", "resnet20", "--checkpoint", str(tmp_path / "none.th"), "--model-id", "broken",
               *common])
    assert rc != 0
    report = (tmp_path / "run" / "report.md").read_text()
    status = next(line for line in report.splitlines() if "Status:" in line)
    assert "complete for the models loaded (failed to load: broken (" in status and "none.th" in status


def test_a_missing_clean_folder_fails_before_any_download(tmp_path, monkeypatch, capsys) -> None:
    import aprkit.data.registry as registry

    def no_download(*args, **kw):
        raise AssertionError("a download started before the clean folder was checked")

    monkeypatch.setattr(registry, "resolve_spec", no_download)
    rc = main(["eval", "--model", "resnet20", "--random-init", "--data", f"folder:{tmp_path / 'val'}?resize=36&crop=32",
               "--corrupted", "imagenet-c", "--download", "--suite", "corruption", "--no-progress"])
    assert rc != 0 and f"no folder {tmp_path / 'val'}" in capsys.readouterr().err


def test_a_crop_larger_than_the_image_is_refused(tmp_path) -> None:
    img = torch.zeros(3, 32, 40, dtype=torch.uint8)
    assert resize_center_crop(img, None, 32).shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"crop=48 is larger than the image \(32x40\)"):
        resize_center_crop(img, None, 48)
    with pytest.raises(ValueError, match=r"crop=64 is larger than the image \(32x40 after resize=32\)"):
        resize_center_crop(img, 32, 64)
    root = tmp_path / "f" / "a"
    root.mkdir(parents=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / "0.png")
    rc = main(["eval", "--model", "resnet20", "--random-init", "--num-classes", "1", "--data",
               f"folder:{tmp_path / 'f'}?crop=64", "--suite", "calibration", "--set", "calibration_corrupted=false",
               "--no-progress"])
    assert rc != 0


def test_data_root_is_restored_after_the_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("APRKIT_DATA", str(tmp_path / "mine"))
    main(["eval", "--model", "resnet20", "--checkpoint", str(tmp_path / "none.th"), "--data", "synthetic:8",
          "--suite", "calibration", "--data-root", str(tmp_path / "other"), "--no-progress"])
    assert os.environ["APRKIT_DATA"] == str(tmp_path / "mine")


def test_a_crop_larger_than_resize_is_refused_before_reading_and_a_small_image_is_named(tmp_path) -> None:
    from aprkit.data.folder import ImageListDataset

    with pytest.raises(ValueError, match="crop=64 is larger than resize=32"):
        ImageListDataset([(tmp_path / "x.png", 0)], resize=32, crop=64)
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png: crop=32 is larger than the image \(20x20\)"):
        ImageListDataset([(tmp_path / "small.png", 0)], crop=32)[0]


def test_a_model_trained_at_another_size_records_it(tmp_path) -> None:
    from aprkit.models import load_model, save_checkpoint
    from aprkit.train import build_model
    from aprkit.train.config import config_from_dict

    model = build_model(config_from_dict({"model": {"name": "resnet20"}, "data": {"image_size": 64}}))
    assert model.input_size == (3, 64, 64)
    save_checkpoint(tmp_path / "m.pt", model, arch="resnet20")
    assert load_model(str(tmp_path / "m.pt")).input_size == (3, 64, 64)  # no warning when evaluated at 64 px


def test_stimuli_scored_by_a_model_of_other_classes_are_refused(tmp_path) -> None:
    from aprkit.eval import evaluate
    from aprkit.models import create_model

    from aprkit.data.cue_conflict import write_synthetic_cue_conflict

    write_synthetic_cue_conflict(tmp_path / "cc", per_shape=1, size=32)
    with pytest.raises(ValueError, match="16"):  # the model's 10 outputs against the stimuli's 16 categories
        evaluate(create_model("resnet20"), "calibration", f"cue-conflict:{tmp_path / 'cc'}", random_init=True,
                 progress=False, options={"calibration_corrupted": False})


def test_evaluate_gives_the_model_back_in_its_train_modes_and_weight_layout() -> None:
    """... and its 4-d weights contiguous as they were (channels_last, on by default for a CNN, left them converted)."""
    from aprkit.eval import evaluate
    from aprkit.models import create_model

    net = create_model("resnet20").train()
    net.bn1.eval()  # a frozen batch norm stays frozen
    weight = net.conv1.weight
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    res = evaluate(net, "calibration", (images, torch.arange(4) % 2), random_init=True, progress=False,
                   options={"calibration_corrupted": False})
    assert net.training and not net.bn1.training and net.layer1.training
    assert res.meta["channels_last"] == [True]  # converted for the run
    assert all(t.is_contiguous() for t in net.parameters()) and net.conv1.weight is weight
    cl = create_model("resnet20").to(memory_format=torch.channels_last)
    evaluate(cl, "calibration", (images, torch.arange(4) % 2), random_init=True, progress=False,
             options={"calibration_corrupted": False})
    assert cl.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # a channels-last model stays one


def test_a_run_folder_given_as_model_names_its_checkpoint(tmp_path) -> None:
    from aprkit.models import load_model

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match=r"is a folder; expected a checkpoint file in it, e.g. .*model\.pt"):
        load_model(str(tmp_path / "run"))


def test_list_settings_as_comma_text_and_none_beside_corruptions(tmp_path, capsys) -> None:
    """--set severities=1,3 and a config's 'corruptions: fog, snow' were refused or read as one unknown corruption
    'fog,snow' (the flags and the Python API take such text); 'none' beside a corruption was an unknown corruption
    'none', and repeated a refusal too (eval reviewer)."""
    import warnings

    from aprkit.eval import evaluate
    from aprkit.eval.engine.config import load_eval_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: small_cnn\nrandom_init: true\ndata: synthetic:8\ncorruptions: contrast, fog\n")
    loaded = load_eval_config(cfg, ["severities=1,3"])
    assert loaded["severities"] == [1, 3]
    common = ["--model", "small_cnn", "--random-init", "--data", "synthetic:8", "--no-progress", "--device", "cpu"]
    assert main(["eval", *common, "--set", "severities=2", "--set", "corruptions=contrast,fog",
                 "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["meta"]["options"]["corruptions"] == ["fog", "contrast"]
    assert main(["eval", *common, "--corruptions", "none", "--corruptions", "none"]) == 0
    assert main(["eval", *common, "--corruptions", "none,fog"]) == 2
    assert "'none' (or 'clean') means clean accuracy only" in capsys.readouterr().err
    assert main(["eval", "--model", "resnet20", "--data", "synthetic:8", "--set", "checkpoint=None"]) == 2
    assert "(no checkpoint is written null or ~" in capsys.readouterr().err
    with warnings.catch_warnings(record=True) as seen:  # a suite's data with the suite not selected: a word
        warnings.simplefilter("always")
        evaluate("small_cnn", random_init=True, suite="calibration", device="cpu", progress=False,
                 data={"default": "synthetic:8", "shape-bias": "cue-conflict:/nowhere"})
    assert any("the data of 'shape-bias' is not read" in str(w.message) for w in seen)
