"""The shipped configs: inside the package (a pip install has them), named by file, by name or by the README's
``configs/<kind>/...`` path; ``--list-configs``; a closed output pipe ends the listing quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aprkit import configs
from aprkit.cli import main
from aprkit.eval.engine.config import load_eval_config
from aprkit.train.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_configs_live_inside_the_package_and_the_checkouts_configs_folder_is_them():
    assert configs.ROOT == (REPO / "aprkit" / "configs").resolve()
    for kind in configs.KINDS:
        assert configs.names(kind), kind
        assert sorted(p.stem for p in (REPO / "configs" / kind).glob("*.yaml")) == configs.names(kind)
    assert "_base" not in configs.names("train") and "cifar10_wrn40_2_apr_sp" in configs.names("train")
    assert configs.describe("train", "imagenet_resnet50").endswith("centre crop 224.")  # three lines, one sentence
    assert configs.describe("eval", "cifar10_resnet20").endswith("option-A shortcuts).")  # "et al." is no end


def test_the_package_data_patterns_take_every_shipped_config():
    """pyproject's package-data globs are what a wheel holds: every YAML file under aprkit/configs, bases included."""
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["aprkit"]
    package = REPO / "aprkit"
    taken = {p for pattern in patterns for p in package.glob(pattern)}
    shipped = set((package / "configs").rglob("*.yaml"))
    assert shipped and shipped <= taken
    assert (package / "configs" / "train" / "_base" / "cifar.yaml") in taken


def test_a_config_is_named_by_file_by_name_or_by_the_readme_path_outside_a_checkout(tmp_path, monkeypatch):
    by_file = load_config(REPO / "configs" / "train" / "cifar10_wrn40_2_apr_sp.yaml")
    assert load_config("cifar10_wrn40_2_apr_sp") == by_file
    monkeypatch.chdir(tmp_path)  # a pip install: no configs/ here
    with pytest.warns(UserWarning, match="reading the copy shipped with aprkit"):
        assert load_config("configs/train/cifar10_wrn40_2_apr_sp.yaml") == by_file
    assert load_eval_config("ood_synthetic") == load_eval_config(REPO / "configs" / "eval" / "ood_synthetic.yaml")
    (tmp_path / "cifar10_wrn40_2_apr_sp").write_text("model: {name: resnet20}\n")  # a file of that name wins
    assert load_config("cifar10_wrn40_2_apr_sp").model.name == "resnet20"


def test_an_unknown_name_is_refused_with_the_nearest_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no shipped train config of that name \(did you mean "
                                                r"'cifar10_wrn40_2_apr_sp'"):
        load_config("cifar10_wrn40_2_apr_spp")
    with pytest.raises(FileNotFoundError, match="shipped: cifar10_resnet20, cifar10_resnets"):
        load_eval_config("zzz")
    with pytest.raises(FileNotFoundError, match="--list-configs"):  # a configs/ path no shipped config has
        load_config("configs/train/nope.yaml")


@pytest.mark.parametrize("kind", list(configs.KINDS))
def test_list_configs_prints_every_shipped_config(kind, capsys):
    assert main([kind, "--list-configs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == configs.names(kind)
    assert f"{len(configs.names(kind))} {kind} configs" in out[-1]


def test_a_listing_read_by_head_ends_quietly():
    """``aprkit train --list-configs | head -1``: a failed write drops its buffer, so a second flush succeeded and
    the closed pipe was reported as an error ('aprkit train: error: [Errno 32] Broken pipe', exit 2)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "aprkit", "train", "--list-configs"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "error" not in err


def test_a_users_file_may_name_a_shipped_config_as_its_base_and_kinds_do_not_mix(tmp_path, monkeypatch):
    """README: "name it as the base: of your own file"; base: resolved paths only, so outside a checkout a shipped
    name failed. A configs/eval/... path given to train read the eval file as a recipe (review)."""
    monkeypatch.chdir(tmp_path)
    reference = load_config("cifar10_wrn40_2_apr_sp", ["optim.lr=0.05"])
    for base in ("cifar10_wrn40_2_apr_sp", "configs/train/cifar10_wrn40_2_apr_sp.yaml"):
        (tmp_path / "mine.yaml").write_text(f"base: {base}\noptim: {{lr: 0.05}}\n")
        mine = load_config(tmp_path / "mine.yaml")
        assert mine.to_dict() | {"name": None} == reference.to_dict() | {"name": None}
    assert configs.shipped("configs/eval/cifar10_resnet20.yaml", "train") is None
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("configs/eval/cifar10_resnet20.yaml")


def test_the_apr_table_configs_normalise_as_the_apr_reference():
    """The APR-table recipes trained with the models' default mean = std = 0.5 (AugMix's), where the APR reference
    normalises with the CIFAR-10 mean and its std (training-recipe reviewer); AugMix's own recipe keeps 0.5."""
    from aprkit import configs
    from aprkit.models.base import APR_CIFAR_STD, CIFAR10_MEAN, HALF_MEAN
    from aprkit.train.config import load_config

    table = [n for n in configs.names("train") if n.startswith(("cifar10_", "cifar100_")) and "augmix" not in n]
    assert len(table) == 40
    for name in table:
        kwargs = load_config(name).model.kwargs
        assert (tuple(kwargs["mean"]), tuple(kwargs["std"])) == (CIFAR10_MEAN, APR_CIFAR_STD), name
    assert "mean" not in load_config("cifar10_wrn40_2_augmix_jsd").model.kwargs  # the model's default: 0.5
    from aprkit.models import create_model

    assert tuple(create_model("wrn40_2").mean.flatten().tolist()) == HALF_MEAN


def test_a_description_goes_on_into_a_parenthesis_on_the_next_line():
    """--list-configs cut descriptions before a line opening a parenthesis (CLI tester)."""
    from aprkit.configs import describe

    assert "(phase collapse) in the paper's configuration" in describe("train", "repro_cifar10_phase_collapse_modulus")
    assert describe("eval", "ood_synthetic").endswith("(Gaussian, uniform, Rademacher noise, blobs), scores "
                                                      "MSP/MaxLogit/Energy/ODIN/Mahalanobis/KNN.")


def test_config_names_that_miss_say_what_they_are(tmp_path):
    """A folder read 'not found', a shipped name with .yaml and another tool's shipped config got did-you-means of
    this tool's configs, and --set base=x a Python hint or another key (CLI tester)."""
    import pytest

    from aprkit.eval.engine.config import load_eval_config
    from aprkit.train.config import load_config

    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder; expected a YAML file"):
        load_config(tmp_path / "d.yaml")
    with pytest.raises(FileNotFoundError, match="given without its suffix: --config cifar10_wrn40_2_apr_sp$"):
        load_config("cifar10_wrn40_2_apr_sp.yaml")
    with pytest.raises(FileNotFoundError, match="is a shipped eval config, which aprkit train does not read"):
        load_config("cifar10_resnet20")
    with pytest.raises(ValueError, match="base: belongs in a config file"):
        load_config(None, ["base=x.yaml"])
    with pytest.raises(ValueError, match="base: belongs in a config file"):
        load_eval_config(None, ["base=x.yaml"])
