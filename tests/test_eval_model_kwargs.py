"""Builder arguments of a model given as a spec: ``evaluate(model_kwargs=)``, ``--set model_kwargs.KEY=V`` and a
config's ``models.NAME.kwargs`` (a timm ViT whose plain state_dict was trained at 32 px could not be evaluated by the
CLI: the spec built the 224-px model and the checkpoint did not fit)."""

from __future__ import annotations

import json

import pytest
import torch

from aprkit.cli import main
from aprkit.eval import evaluate
from aprkit.eval.engine.config import load_eval_config

pytestmark = pytest.mark.usefixtures("one_thread")

VIT = "timm:vit_tiny_patch16_224"
SMALL = {"img_size": 32, "patch_size": 4, "depth": 1}


@pytest.fixture(scope="module")
def vit_state_dict(tmp_path_factory):
    """A plain state_dict (no builder arguments recorded) of a one-block ViT-Tiny at 32 px with 4-px patches."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **SMALL)
    path = tmp_path_factory.mktemp("vit") / "vit32.pt"
    torch.save(net.state_dict(), path)
    return path


ARGS = ["--data", "synthetic:8", "--suite", "calibration", "--corruptions", "none", "--device", "cpu",
        "--no-progress"]


def test_the_cli_passes_builder_arguments_to_a_spec(vit_state_dict, tmp_path, capsys):
    base = ["eval", "--model", VIT, "--checkpoint", str(vit_state_dict), *ARGS]
    assert main(base) == 2  # the 224-px model does not fit the 32-px weights, and the error says how to build it
    assert "model_kwargs" in capsys.readouterr().err
    out = tmp_path / "o"
    sets = [f"model_kwargs.{k}={v}" for k, v in SMALL.items()]
    assert main([*base, "--out", str(out), "--set", *sets]) == 0
    meta = json.loads((out / "results.json").read_text())["meta"]
    source = meta["models"]["vit_tiny_patch16_224"]
    assert "img_size=32" in source and "patch_size=4" in source and str(vit_state_dict) in source


def test_a_configs_models_entry_takes_kwargs(vit_state_dict, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"models:\n  small: {{model: '{VIT}', checkpoint: '{vit_state_dict}', kwargs: {json.dumps(SMALL)}}}\n"
                   "  r20: {model: resnet20}\nrandom_init: false\n")
    settings = load_eval_config([cfg], flags={"data": "synthetic:8"})
    assert settings["models"]["small"]["kwargs"] == SMALL and "kwargs" not in settings["models"]["r20"]
    out = tmp_path / "o"
    cfg.write_text(f"models:\n  small: {{model: '{VIT}', checkpoint: '{vit_state_dict}', kwargs: {json.dumps(SMALL)}}}\n")
    assert main(["eval", "--config", str(cfg), *ARGS, "--out", str(out)]) == 0
    assert "small" in json.loads((out / "results.json").read_text())["models"]


def test_a_configs_models_use_the_runs_seed_for_drawn_weights(monkeypatch, tmp_path):
    """The models: path drew random weights (random_init, a new head) from seed 0 whatever the run's seed."""
    import aprkit.eval.engine.models as models

    seen = []
    real = models.load_eval_model

    def spy(*args, **kwargs):
        seen.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_eval_model", spy)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("models: {a: resnet20}\n")
    assert main(["eval", "--config", str(cfg), *ARGS, "--random-init", "--seed", "5"]) == 0
    assert seen and set(seen) == {5}


def test_builder_arguments_are_checked_at_the_boundary(tmp_path):
    from aprkit.models import create_model

    net = create_model("resnet20", num_classes=10)
    with pytest.raises(ValueError, match="ResNet is an nn.Module, built already"):
        evaluate(net, "calibration", "synthetic:8", model_kwargs={"width": 2}, device="cpu", progress=False)
    with pytest.raises(ValueError, match="model_kwargs sets num_classes: a setting of the evaluation"):
        evaluate("resnet20", "calibration", "synthetic:8", model_kwargs={"num_classes": 3}, random_init=True,
                 device="cpu", progress=False)
    with pytest.raises(ValueError, match="model_kwargs must be a mapping of builder arguments"):
        evaluate("resnet20", "calibration", "synthetic:8", model_kwargs=[("img_size", 32)], random_init=True,
                 device="cpu", progress=False)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("models: {a: {model: resnet20, kwargs: 3}}\n")
    with pytest.raises(ValueError, match="models.a.kwargs must be a mapping"):
        load_eval_config([cfg], flags={"data": "synthetic:8"})
    cfg.write_text("models: {a: {model: resnet20, kwarg: {}}}\n")
    with pytest.raises(ValueError, match="did you mean 'kwargs'"):
        load_eval_config([cfg], flags={"data": "synthetic:8"})


def test_model_kwargs_belong_to_one_model(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("models: {a: resnet20}\nmodel_kwargs: {width: 2}\n")
    assert main(["eval", "--config", str(cfg), *ARGS, "--random-init"]) == 2
    assert "give each entry its own {model: SPEC, kwargs: {...}}" in capsys.readouterr().err
    cfg.write_text("model: resnet20\nmodel_kwargs: {width: 2}\ndata: synthetic:8\n")
    with pytest.warns(UserWarning, match="and its model_kwargs"):  # they were the config's model's arguments
        out = load_eval_config([cfg], flags={"model": "resnet32"})
    assert "model_kwargs" not in out
