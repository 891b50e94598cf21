"""Training configs: YAML + base inheritance, overrides with type coercion, validation errors, shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from aprkit.train.config import Config, apply_overrides, config_from_dict, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_validate():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.optim.nesterov and cfg.optim.milestones == [60, 120, 160, 190]


def test_base_inheritance_and_overrides(tmp_path):
    _write(tmp_path, "base.yaml", "model: {name: resnet20}\noptim: {lr: 0.1, epochs: 200}\n")
    child = _write(tmp_path, "child.yaml", "base: base.yaml\noptim: {epochs: 3}\naug: {method: apr_sp}\n")
    cfg = load_config(child, ["optim.lr=0.05", "train.max_steps=5", "data.limit=256", "optim.milestones=[1,2]",
                              "train.amp=false", "data.test_limit=null"])
    assert cfg.name == "child"
    assert cfg.optim.epochs == 3 and cfg.optim.lr == 0.05 and cfg.aug.method == "apr_sp"
    assert cfg.train.max_steps == 5 and isinstance(cfg.train.max_steps, int)
    assert cfg.data.limit == 256 and cfg.optim.milestones == [1, 2] and cfg.train.amp is False
    assert cfg.data.test_limit is None


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    """``5e-4`` (YAML 1.2, JSON, Python) was a string to PyYAML: 'must be a number, got '5e-4''."""
    path = _write(tmp_path, "sci.yaml", "optim: {weight_decay: 5e-4, lr: 1E-1}\n")
    cfg = load_config(path, ["optim.momentum=9e-1"])
    assert (cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.momentum) == (5e-4, 0.1, 0.9)


def test_type_coercion():
    cfg = config_from_dict(apply_overrides({}, ["optim.lr=1", "optim.epochs=2.0", "model.name=resnet20"]))
    assert isinstance(cfg.optim.lr, float) and cfg.optim.epochs == 2 and isinstance(cfg.optim.epochs, int)
    with pytest.raises(TypeError, match="optim.epochs.*int"):
        config_from_dict(apply_overrides({}, ["optim.epochs=2.5"]))
    with pytest.raises(TypeError, match="train.amp.*bool"):
        config_from_dict(apply_overrides({}, ["train.amp=maybe"]))
    with pytest.raises(TypeError, match=r"'data.limit' must be int or null, got 'None' \(YAML writes none as null"):
        config_from_dict(apply_overrides({}, ["data.limit=None"]))  # Python's spelling (tester)
    assert config_from_dict(apply_overrides({}, ["data.limit=null"])).data.limit is None


def test_amp_dtype_choices():
    assert load_config(None, ["train.amp_dtype=bfloat16"]).train.amp_dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"train.amp_dtype must be one of auto, float16, bfloat16, got 'fp8'"):
        load_config(None, ["train.amp_dtype=fp8"])


def test_unknown_key_lists_valid_keys(tmp_path):
    path = _write(tmp_path, "bad.yaml", "optim: {learning_rate: 0.1}\n")
    with pytest.raises(ValueError, match=r"unknown config key 'optim.learning_rate'.*valid keys in optim: lr, momentum"):
        load_config(path)
    with pytest.raises(ValueError, match=r"unknown config key 'optimizer'.*did you mean 'optim'.*model, data, aug, feature_apr, optim, train"):
        load_config(None, ["optimizer.lr=0.1"])


def test_unknown_choice_lists_valid_ones():
    with pytest.raises(ValueError, match=r"aug.method.*'standard', 'apr_p', 'apr_p_only', 'apr_s', 'apr_sp', 'augmix_jsd'.*did you mean 'apr_sp'"):
        load_config(None, ["aug.method=apr-sp"])


def test_unknown_model_lists_valid_models():
    with pytest.raises(ValueError, match=r"unknown model.name 'resnet21'.*valid models: .*resnet20.*wrn40_2"):
        load_config(None, ["model.name=resnet21"])
    with pytest.raises(ValueError, match="prefix must be 'timm:' or 'torchvision:'"):
        load_config(None, ["model.name=keras:resnet"])


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ValueError, match="milestones must be increasing"):
        load_config(None, ["optim.milestones=[3,1]"])
    with pytest.raises(ValueError, match="override 'optim.lr' must look like"):
        load_config(None, ["optim.lr"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    cyc = _write(tmp_path, "a.yaml", "base: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(cyc)
    with pytest.raises(TypeError, match="Config"):
        validate_config({"model": {}})


def test_configs_directory_is_complete():
    names = {p.stem for p in CONFIGS}
    for ds in ("cifar10", "cifar100"):
        for arch in ("wrn40_2", "resnet18", "allconv", "densenet_bc", "resnext29"):
            for method in ("standard", "apr_p", "apr_s", "apr_sp"):
                assert f"{ds}_{arch}_{method}" in names
    assert {"cifar10_wrn40_2_augmix_jsd", "imagenet_resnet50"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses(path):
    validate_config(load_config(path, validate=False))
    smoke = load_config(path, ["train.max_steps=5", "data.limit=256"], validate=False)
    assert smoke.train.max_steps == 5 and smoke.data.limit == 256


def test_train_and_eval_share_one_loader(tmp_path, monkeypatch):
    """Issue 12 item 6: one loader (aprkit.config) with the same YAML, base:, --set and ${VAR:-default} rules."""
    import aprkit.config as shared
    import aprkit.train.config as train_config

    assert train_config.apply_overrides is shared.apply_overrides and train_config.expand_env is shared.expand_env
    monkeypatch.setenv("APRKIT_TEST_DATA", "/data")
    path = _write(tmp_path, "env.yaml", "data: {dataset: 'cifar10:${APRKIT_TEST_DATA}/c10', test_dataset: 'folder:${APRKIT_NOPE:-x}'}\n")
    cfg = load_config(path, validate=False)
    assert cfg.data.dataset == "cifar10:/data/c10" and cfg.data.test_dataset == "folder:x"
    bad = _write(tmp_path, "bad.yaml", "optim:\n  lr: [0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml is not valid YAML at line 3"):
        load_config(bad)
    with pytest.raises(TypeError, match="config key 'optim.batch_size' must be an int, got 'abc'"):
        load_config(None, ["optim.batch_size=abc"])


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("key,value,message", [
    ("optim.milestones", [0, 2], r"optim.milestones must be epochs >= 1, got \[0, 2\]"),
    ("optim.milestones", [-5], r"optim.milestones must be epochs >= 1, got \[-5\]"),
    ("optim.lr", INF, "optim.lr must be a finite number > 0, got inf"),
    ("optim.lr", NAN, "optim.lr must be a finite number > 0, got nan"),
    ("optim.lr", 0.0, "optim.lr must be a finite number > 0, got 0.0"),
    ("optim.gamma", INF, "optim.gamma must be a finite number > 0, got inf"),
    ("optim.weight_decay", INF, "optim.weight_decay must be a finite number >= 0, got inf"),
    ("optim.warmup_epochs", INF, "optim.warmup_epochs must be a finite number >= 0, got inf"),
    ("aug.jsd_weight", NAN, "aug.jsd_weight must be a finite number >= 0, got nan"),
    ("data.test_resize", 0, "data.test_resize must be null or a size >= data.image_size"),
    ("data.max_memory_mb", -1, "data.max_memory_mb must be >= 0, got -1"),
    ("train.seed", -1, r"train.seed must be in 0..2\*\*63 - 1, got -1"),
    ("train.seed", 2**63, rf"train.seed must be in 0..2\*\*63 - 1, got {2**63}"),
    ("train.checkpoint_every_steps", -2, r"train.checkpoint_every_steps must be null, 0 \(none\) or >= 1, got -2"),
])
def test_out_of_range_values_name_what_is_expected(key, value, message):
    section, name = key.split(".")
    with pytest.raises(ValueError, match=message):
        validate_config(config_from_dict({section: {name: value}}))


def test_non_finite_values_from_yaml_and_overrides_are_refused(tmp_path):
    with pytest.raises(ValueError, match="optim.lr must be a finite number > 0, got inf"):
        load_config(None, ["optim.lr=.inf"])
    with pytest.raises(ValueError, match="optim.gamma must be a finite number > 0, got nan"):
        load_config(_write(tmp_path, "nan.yaml", "optim: {gamma: .nan}\n"))


def test_edge_values_that_stay_valid():
    cfg = load_config(None, ["optim.milestones=[1]", "data.test_resize=32", "data.max_memory_mb=0",
                             f"train.seed={2**63 - 1}", "train.checkpoint_every_steps=0", "optim.milestones=[]"])
    assert cfg.train.seed == 2**63 - 1 and cfg.train.checkpoint_every_steps == 0 and cfg.optim.milestones == []


def test_tester_round_empty_sections_environment_numbers_and_suggestions(tmp_path, monkeypatch):
    """An empty section in a child (every line commented out) keeps the base's values instead of resetting the
    section to the defaults; ${VAR} in a number or bool key is read as YAML; --set SECTION=null is refused; inf
    and NaN in an int key are named; suggestions ignore case; the train help lists the registry's methods."""
    base = _write(tmp_path, "base.yaml", "data: {dataset: 'synthetic:64', limit: 32}\noptim: {lr: 0.05}\n")
    child = _write(tmp_path, "child.yaml", f"base: {base.name}\ndata:\n#  limit: 256\noptim:\n")
    cfg = load_config(child)
    assert cfg.data.dataset == "synthetic:64" and cfg.data.limit == 32 and cfg.optim.lr == 0.05
    monkeypatch.setenv("EPOCHS", "3")
    monkeypatch.delenv("PROGRESS", raising=False)
    env = _write(tmp_path, "env.yaml", "optim:\n  epochs: ${EPOCHS:-2}\n  lr: '${LR:-0.2}'\n"
                                       "train:\n  progress: ${PROGRESS:-false}\n")
    cfg = load_config(env)
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.train.progress) == (3, 0.2, False)
    assert load_config(None, ["train.max_steps=${UNSET_STEPS:-null}"]).train.max_steps is None
    # a null word is none where it is written unquoted or comes from ${X:-null}; a quoted one in a text setting is
    # the text (YAML's own reading), where no text is a value (an int) the quoted word still reads as none
    monkeypatch.delenv("UNSET_CKPT", raising=False)
    nulls = _write(tmp_path, "nulls.yaml", "model:\n  checkpoint: 'null'\ntrain:\n  max_steps: '~'\n")
    cfg = load_config(nulls)
    assert (cfg.model.checkpoint, cfg.train.max_steps) == ("null", None)
    assert load_config(nulls, ["model.checkpoint=${UNSET_CKPT:-null}"]).model.checkpoint is None
    assert load_config(nulls, ["model.checkpoint=null"]).model.checkpoint is None
    assert load_config(nulls, ["model.checkpoint='null'"]).model.checkpoint == "null"
    env_null = _write(tmp_path, "env_null.yaml", "model:\n  checkpoint: ${UNSET_CKPT:-null}\n")
    assert load_config(env_null).model.checkpoint is None
    with pytest.raises(ValueError, match="would empty the section 'optim'"):
        load_config(base, ["optim=null"])
    for bad in (".inf", ".nan"):
        with pytest.raises(TypeError, match="config key 'optim.epochs' must be an int"):
            load_config(None, [f"optim.epochs={bad}"])
    with pytest.raises(ValueError, match="did you mean 'apr_sp'"):
        load_config(None, ["aug.method=APR_SP"])

    import argparse

    from aprkit.cli.train import add_parser
    from aprkit.train.config import METHODS

    sub = argparse.ArgumentParser().add_subparsers()
    text = add_parser(sub).format_help()
    assert all(m in " ".join(text.split()) for m in METHODS)


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    """torch.save turns a full disk into 'unexpected pos ...' (a RuntimeError); the atomic writer raises the
    OSError behind it, naming the file, and leaves no temporary file."""
    import errno
    import os

    import torch

    from aprkit._io import atomic_torch_save

    real = os.fdopen

    class Full:
        def __init__(self, fh) -> None:
            self.fh, self.n = fh, 0

        def write(self, b) -> int:
            self.n += len(b)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(b)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(OSError, match="No space left on device") as info:
        atomic_torch_save({"w": torch.zeros(10_000)}, tmp_path / "last.pt")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_dataset_spec_options_are_checked_with_the_config():
    """A misspelt ?resize= option fails when the config is read, not when the data loads."""
    assert load_config(None, ["data.dataset=folder:/x?resize=40&crop=32"]).data.dataset.endswith("crop=32")
    with pytest.raises(ValueError, match=r"data.dataset: unknown option 'rezise' .*did you mean 'resize'"):
        load_config(None, ["data.dataset=folder:/x?rezise=3"])


def test_test_images_are_not_resized_twice_nor_padded_black():
    """A test spec that resizes and crops (?resize=256&crop=224, README's ImageNet val) with the recipe's
    data.test_resize zoomed the crops by 256/224 a second time (31 levels per pixel off); a test_resize below
    image_size padded the centre crop with black (13 % of the pixels). Both silently; both refused now."""
    with pytest.raises(ValueError, match=r"already resizes and crops the test images \(\?resize=256&crop=224\)"):
        load_config("imagenet_resnet50", ["data.test_dataset=folder:/x/val?resize=256&crop=224"])
    ok = load_config("imagenet_resnet50", ["data.test_dataset=folder:/x/val?resize=256&crop=224",
                                            "data.test_resize=null"])
    assert ok.data.test_resize is None
    with pytest.raises(ValueError, match=r"data.test_resize must be null or a size >= data.image_size \(224\)"):
        load_config("imagenet_resnet50", ["data.test_resize=200"])


def test_text_settings_on_the_command_line_stay_as_typed():
    """--set read every value as YAML and a text setting took str() of the result: train.out=2024_01_05 wrote to
    20240105, name=0x1F was '31', eval's model_id=0012 was '10', title=yes 'True', model_id='run #2' 'run' (CLI
    tester). Text settings take the text as typed; quoted or null values and every other setting read YAML."""
    from aprkit.eval.engine.config import load_eval_config

    cfg = load_config(None, ["train.out=2024_01_05", "name=0x1F", "optim.epochs=0012", "train.amp=yes",
                             "model.checkpoint=null"], validate=False)
    assert (cfg.train.out, cfg.name, cfg.optim.epochs, cfg.train.amp, cfg.model.checkpoint) == (
        "2024_01_05", "0x1F", 10, True, None)
    eval_cfg = load_eval_config(None, ["model=resnet20", "data=synthetic:8", "model_id=0012", "title=yes",
                                       "out=run #2", "suite=[calibration, ood]", "cache_dir='0012'"])
    assert (eval_cfg["model_id"], eval_cfg["title"], eval_cfg["out_dir"], eval_cfg["suite"], eval_cfg["cache_dir"]) == (
        "0012", "yes", "run #2", ["calibration", "ood"], "0012")


def test_out_flag_and_set_train_out_naming_other_folders_are_refused(tmp_path, capsys):
    """train let --out win over --set train.out, eval lets --set win over its flags: naming two folders is refused."""
    from aprkit.cli import main

    assert main(["train", "--out", str(tmp_path / "B"), "--set", f"train.out={tmp_path / 'A'}",
                 "--print-config"]) == 2
    assert "name different folders; give one" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "A"), "--set", f"train.out={tmp_path / 'A'}",
                 "--print-config"]) == 0


def test_a_key_of_another_section_is_suggested_with_its_section():
    """train.epochs suggested 'report', epochs and lr nothing: the key lives in optim (CLI tester)."""
    for given, hint in [("train.epochs=5", "'optim.epochs'"), ("lr=0.1", "'optim.lr'"),
                        ("data.batch_size=8", "'optim.batch_size'"), ("optim.num_workers=2", "'data.num_workers'")]:
        with pytest.raises(ValueError, match=f"did you mean {hint}"):
            load_config(None, [given], validate=False)
    with pytest.raises(ValueError, match="did you mean 'epochs'"):  # a typo inside the section stays the section's
        load_config(None, ["optim.epoch=5"], validate=False)


def test_out_flag_and_set_train_out_naming_one_folder_two_ways_run(tmp_path):
    from aprkit.cli import main

    assert main(["train", "--out", str(tmp_path / "A"), "--set", f"train.out={tmp_path / 'A'}/",
                 "--print-config"]) == 0


def test_fit_checks_a_config_made_in_code_as_a_file_is_checked(tmp_path):
    """fit(Config(...)) checked ranges only: schedule="Cosine" trained the step schedule and aug.method="APR_SP"
    failed at the first step, after overwrite=True had deleted the previous run (training reviewer). And fit's
    overrides read text settings as YAML numbers (train.out=0755 became the folder 493)."""
    from aprkit.train.config import AugConfig, OptimConfig
    from aprkit.train.loop import _as_config

    with pytest.raises(ValueError, match="must be one of 'step', 'cosine', got 'Cosine'"):
        _as_config(Config(optim=OptimConfig(schedule="Cosine")), [])
    with pytest.raises(ValueError, match="aug.method' must be one of"):
        _as_config(Config(aug=AugConfig(method="APR_SP")), [])
    assert _as_config(Config(), ["train.out=0755"]).train.out == "0755"
    assert _as_config(Config().to_dict(), ["train.out=0755"]).train.out == "0755"
    # and what a Config made in code held before is kept (diff reviewer): NumPy scalars of a sweep, text reading
    # as YAML null, no overrides (None)
    import numpy as np

    from aprkit.train.config import ModelConfig

    kept = _as_config(Config(optim=OptimConfig(epochs=np.int64(3), lr=np.float32(0.1), milestones=np.array([2])),
                             model=ModelConfig(checkpoint="null")), None)
    assert kept.optim.epochs == 3 and type(kept.optim.epochs) is int and kept.model.checkpoint == "null"
    assert kept.optim.milestones == [2]  # (plain values: config.yaml is written with them before training)
    assert _as_config(Config(model=ModelConfig(checkpoint="null")), ["optim.lr=0.2"]).model.checkpoint == "null"
    assert _as_config(Config(optim=OptimConfig(epochs=np.int64(3), milestones=[2])), ["optim.lr=0.2"]).optim.epochs == 3


def test_milestones_past_the_run_warn():
    """A recipe shortened with optim.epochs alone kept milestones [60, 120, 160, 190]: the whole run trained at
    lr 0.1 without a word (training reviewer)."""
    import warnings

    from aprkit.train import config as train_config

    train_config._WARNED.clear()
    with pytest.warns(UserWarning, match=r"optim.milestones \[60, 120, 160, 190\] lie at or past the run's end"):
        load_config(None, ["optim.epochs=30"])
    with warnings.catch_warnings():  # once per process: aprkit train validates, then fit again
        warnings.simplefilter("error")
        load_config(None, ["optim.epochs=30"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, ["optim.epochs=30", "optim.milestones=[10,20]"])
        load_config(None, ["optim.epochs=30", "optim.schedule=cosine"])
