"""Training resume: a run stopped (``train.max_steps``, a crash) and resumed ends with the weights and the metrics
history of the uninterrupted run, bit for bit."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from train_common import HAS_AUGMENT, Images, same_weights, strip_times, train_config

from aprkit.models import register_model
from aprkit.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

RESUME_CASES = [("standard", "gpu")] + ([("apr_sp", "gpu"), ("apr_sp", "loader")] if HAS_AUGMENT else [])


@pytest.mark.parametrize("method,path", RESUME_CASES)
def test_resume_after_interruption_is_bit_for_bit(tmp_path, method, path):
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config(aug={"method": method}, data={"input_path": path})
    full = fit(cfg, out=tmp_path / "full", datasets=(ds, test))  # 3 epochs x 5 steps
    part = tmp_path / "part"
    first = fit(cfg, ["train.max_steps=7"], out=part, datasets=(ds, test))  # stops inside epoch 2
    assert first["global_step"] == 7 and first["history"][-1]["partial"]
    resumed = fit(cfg, out=part, resume=True, datasets=(ds, test))
    assert resumed["global_step"] == full["global_step"] == 15
    assert same_weights(full["model"], resumed["model"])
    assert strip_times(resumed["history"]) == strip_times(full["history"])
    assert (part / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs, the partial row dropped


def test_resume_at_max_steps_keeps_the_partial_row(tmp_path, capsys):
    """A run resumed with the max_steps it already reached trains nothing more: its partial row stays in the
    history and in metrics.csv (it was dropped, leaving the stopped epoch's numbers nowhere)."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config()
    first = fit(cfg, ["train.max_steps=7"], out=tmp_path, datasets=(ds, test))
    again = fit(cfg, ["train.max_steps=7"], out=tmp_path, resume=True, datasets=(ds, test))
    # it said "finished after epoch 0" (with progress on; nothing with it off) and exited 0: now what to do
    assert "stopped at train.max_steps=7 (step 7, in epoch 2 of 3, after its batch 2)" in capsys.readouterr().err
    assert again["global_step"] == 7 and strip_times(again["history"]) == strip_times(first["history"])
    assert again["history"][-1]["partial"]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 2 and rows[-1]["step"] == "7"


def test_resume_refuses_another_batch_size_and_an_epoch_budget_already_passed(tmp_path):
    """The schedule and the position in the epoch are counted in steps: a resume with another batch size put the
    learning-rate drops mid-epoch; a resume with fewer epochs than the checkpoint reached reported metrics of
    other weights than model.pt's."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config()
    fit(cfg, ["train.max_steps=7"], out=tmp_path, datasets=(ds, test))  # 5 steps per epoch: stopped in epoch 2
    with pytest.raises(ValueError, match=r"ran 5 steps per epoch, this config 10 \(optim.batch_size"):
        fit(cfg, ["optim.batch_size=4"], out=tmp_path, resume=True, datasets=(ds, test))
    with pytest.raises(ValueError, match=r"optim.epochs=1: .* already at epoch 1, batch 2 .* optim.epochs >= 2"):
        fit(cfg, ["optim.epochs=1"], out=tmp_path, resume=True, datasets=(ds, test))
    with pytest.raises(ValueError, match=r"built with model.kwargs=\{\}, this config has \{'width': 2\}"):
        fit(cfg, ["model.kwargs={width: 2}"], out=tmp_path, resume=True, datasets=(ds, test))
    assert fit(cfg, out=tmp_path, resume=True, datasets=(ds, test))["global_step"] == 15


@register_model("_tiny_dropout_cnn")
def _tiny_dropout_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveMaxPool2d(4),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, num_classes))


def test_resume_is_bit_for_bit_with_dropout_on_the_loader_path(tmp_path):
    """Dropout draws from torch's global RNG; the loop reseeds it per (seed, rank, step), so a DataLoader's base-seed
    draw or a mid-run evaluation (made at other points by a resumed run) no longer moves the masks."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config(model={"name": "_tiny_dropout_cnn"}, data={"input_path": "loader"})
    full = fit(cfg, out=tmp_path / "full", datasets=(ds, test))
    fit(cfg, ["train.max_steps=7"], out=tmp_path / "part", datasets=(ds, test))
    resumed = fit(cfg, out=tmp_path / "part", resume=True, datasets=(ds, test))
    assert same_weights(full["model"], resumed["model"])
    # the lr column is the rate each epoch trained at (milestone 2: the third epoch at 0.05 x gamma)
    lrs = [r["lr"] for r in full["history"]]
    assert lrs[0] == lrs[1] == 0.05 and lrs[2] == pytest.approx(0.05 * full["config"]["optim"]["gamma"])


def test_resume_mid_warm_up_logs_the_epochs_first_rate(tmp_path):
    """The lr column is the rate of each epoch's first step; it was read from the optimizer when the loop started,
    so an epoch resumed mid-way logged the rate at the resume step (0.04 instead of 0.03 here)."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config(optim={"warmup_epochs": 2.0})  # 10 warm-up steps: step s trains at 0.05 * (s + 1) / 10
    full = fit(cfg, out=tmp_path / "full", datasets=(ds, test))
    assert [r["lr"] for r in full["history"]] == pytest.approx([0.005, 0.03, 0.05 * 0.2])
    fit(cfg, ["train.max_steps=7"], out=tmp_path / "part", datasets=(ds, test))  # stops at step 7 of epoch 2
    resumed = fit(cfg, out=tmp_path / "part", resume=True, datasets=(ds, test))
    assert same_weights(full["model"], resumed["model"])
    assert strip_times(resumed["history"]) == strip_times(full["history"])
    assert (tmp_path / "part" / "metrics.csv").read_text().count("\n") == 4


@pytest.mark.parametrize("stop", ["train.max_steps=5", "optim.epochs=1"])
def test_an_evaluation_at_a_stop_is_reported_and_dropped_once_the_run_goes_on(tmp_path, stop):
    """eval_every=2 evaluates epoch 2 (and the last epoch, marked stop_eval). A run stopped after epoch 1 evaluates
    there too; that row was saved like a scheduled one, so the resumed history had an extra evaluation."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config(train={"eval_every": 2})
    full = fit(cfg, out=tmp_path / "full", datasets=(ds, test))
    assert [("test_acc" in r, r.get("stop_eval", False)) for r in full["history"]] == [
        (False, False), (True, False), (True, True)]
    first = fit(cfg, [stop], out=tmp_path / "part", datasets=(ds, test))
    assert first["global_step"] == 5 and first["final"]["stop_eval"] and "test_acc" in first["final"]
    resumed = fit(cfg, out=tmp_path / "part", resume=True, datasets=(ds, test))
    assert same_weights(full["model"], resumed["model"])
    assert strip_times(resumed["history"]) == strip_times(full["history"])
    rows = list(csv.DictReader((tmp_path / "part" / "metrics.csv").open()))
    assert [(r["epoch"], r["test_acc"] != "", r["stop_eval"]) for r in rows] == [
        ("1", False, ""), ("2", True, ""), ("3", True, "True")]


def test_resume_without_last_pt_refuses_to_retrain_over_a_finished_run(tmp_path):
    ds = Images(16)
    cfg = train_config(optim={"epochs": 1})
    fit(cfg, out=tmp_path, datasets=(ds, None))
    (tmp_path / "last.pt").unlink()
    kept = (tmp_path / "model.pt").read_bytes()
    from aprkit.train.state import RunExistsError

    with pytest.raises(RunExistsError, match="no last.pt to continue from.*--overwrite"):
        fit(cfg, out=tmp_path, resume=True, datasets=(ds, None))
    assert (tmp_path / "model.pt").read_bytes() == kept
    fit(cfg, out=tmp_path / "fresh", resume=True, datasets=(ds, None))  # an empty folder: a new run, as before


def test_resuming_a_checkpoint_of_another_recipe_version_warns(tmp_path, capsys):
    """A checkpoint saved by an aprkit whose methods trained differently (RECIPE_VERSION) resumes with a warning
    that the run will not match an uninterrupted one; the version is saved in last.pt."""
    from aprkit.train.config import config_from_dict
    from aprkit.train.trajectory import recipe_version

    ds = Images(16)
    fit(train_config(optim={"epochs": 2}, train={"max_steps": 1}), out=tmp_path, datasets=(ds, None))
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    own = recipe_version(config_from_dict(train_config()))
    assert state["recipe_version"] == own
    state["recipe_version"] = own - 1
    torch.save(state, tmp_path / "last.pt")
    capsys.readouterr()
    fit(train_config(optim={"epochs": 2}, train={"resume": True}), out=tmp_path, datasets=(ds, None))
    assert f"recipe version {own - 1}" in capsys.readouterr().err
    from aprkit.models.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "model.pt")["extra"]["recipe_version"] == own  # the finished run's, too


def test_test_loss_does_not_depend_on_the_eval_batch_size(tmp_path):
    """The logged test loss is an exact sum of per-image losses: batching the test images otherwise (where the
    logits are the same) gives the same number to the last digit."""
    ds, test = Images(40), Images(48, seed=5)
    cfg = train_config(optim={"epochs": 1})
    runs = [fit(cfg, [f"data.eval_batch_size={b}"], datasets=(ds, test)) for b in (48, 24, 16)]
    losses = [r["history"][-1]["test_loss"] for r in runs]
    assert losses[0] == losses[1] == losses[2]


def test_a_resume_with_changed_optimiser_settings_applies_all_of_them_and_records_it(tmp_path):
    """The saved optimiser state carried the old lr / decay / momentum while gamma and milestones came from the
    config: now every changed setting applies, and model.pt records what changed at which step."""
    ds = Images(40)
    fit(train_config(), ["train.max_steps=5"], out=tmp_path, datasets=(ds, None))
    fit(train_config(), ["optim.lr=0.5", "optim.weight_decay=0.01", "optim.momentum=0.5", "optim.gamma=0.5",
                         "train.max_steps=11"], out=tmp_path, resume=True, datasets=(ds, None))
    g = torch.load(tmp_path / "last.pt", weights_only=False)["optimizer"]["param_groups"][0]
    assert {k: g[k] for k in ("lr", "initial_lr", "weight_decay", "momentum")} == {
        "lr": 0.25, "initial_lr": 0.5, "weight_decay": 0.01, "momentum": 0.5}  # epoch 3: past milestone 2
    result = fit(train_config(), ["optim.lr=0.5", "optim.weight_decay=0.01", "optim.momentum=0.5", "optim.gamma=0.5"],
                 out=tmp_path, resume=True, datasets=(ds, None))
    changes = torch.load(tmp_path / "model.pt", weights_only=False)["extra"]["config_changes"]
    assert result["config_changes"] == changes  # also where the CLI prints its summary (demo/train tester)
    assert [c["global_step"] for c in changes] == [5]
    assert set(changes[0]["keys"]) == {"optim.lr", "optim.weight_decay", "optim.momentum", "optim.gamma"}
    assert changes[0]["before"]["optim"]["lr"] == 0.05


def test_fit_leaves_the_callers_config_and_threads_and_limits_given_datasets(tmp_path):
    from aprkit.train.config import config_from_dict, validate_config

    threads = torch.get_num_threads()
    cfg = validate_config(config_from_dict(train_config(optim={"epochs": 1}, train={"threads": threads + 1})))
    fit(cfg, out=tmp_path / "a", resume=True, datasets=(Images(16), None))
    assert (cfg.train.out, cfg.train.resume, torch.get_num_threads()) == (None, False, threads)
    r = fit(train_config(optim={"epochs": 1}, data={"limit": 16, "test_limit": 8}),
            datasets=(Images(40), Images(16, seed=5)))
    assert (r["global_step"], r["final"]["test_n"]) == (2, 8)  # 16 images in batches of 8; 8 test images


def test_out_with_a_tilde_is_written_where_it_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    fit(train_config(optim={"epochs": 1}), out="~/run", datasets=(Images(16), None))
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "~").exists()


def test_test_images_of_another_size_than_the_training_crops_are_refused_before_training():
    with pytest.raises(ValueError, match="test image 0 is 16x16 but data.image_size is 12"):
        fit(train_config(optim={"epochs": 1}, data={"image_size": 12}), datasets=(Images(16), Images(8)))


def test_the_recipe_version_moves_only_for_configs_the_change_touched():
    from aprkit.train.config import config_from_dict
    from aprkit.train.trajectory import recipe_version

    still = {"crop_padding": 0, "hflip": False}  # no device crop or flip draws: 7 does not touch them
    for method in ("apr_p", "apr_p_only"):  # 5: a bin without phase stays 0
        assert recipe_version(config_from_dict(train_config(aug={"method": method}, data=still))) == 5
        # 7: the device path draws each image's crop offsets and flip from its own row
        assert recipe_version(config_from_dict(train_config(aug={"method": method}))) == 7
    for method in ("apr_s", "apr_sp"):  # 9: APR-S on the device tests its warps' sample points in float64
        for data in (still, {}, {"input_path": "gpu", "random_resized_crop": True}):
            assert recipe_version(config_from_dict(train_config(aug={"method": method}, data=data))) == 9
        still_loader = {**still, "input_path": "loader"}  # APR-S in the loader (PIL's ops): 6, the loader's seeds
        assert recipe_version(config_from_dict(train_config(aug={"method": method}, data=still_loader))) == 6
    for method in ("standard", "apr_p"):  # 6: the loader's per-image draws got their own seeds
        for data in ({"input_path": "loader"}, {"input_path": "gpu", "random_resized_crop": True}):
            assert recipe_version(config_from_dict(train_config(aug={"method": method}, data=data))) == 6
    for data in ({}, {"input_path": "loader"}):  # 8: AugMix's views are its reference code's, in float
        assert recipe_version(config_from_dict(train_config(aug={"method": "augmix_jsd"}, data=data))) == 8
    assert recipe_version(config_from_dict(train_config(aug={"method": "standard"}, data=still))) == 3
    assert recipe_version(config_from_dict(train_config(aug={"method": "standard"}))) == 7
    assert recipe_version(config_from_dict(train_config(aug={"method": "standard"}, data=still,
                                                        feature_apr={"layers": ["layer1"]}))) == 5


def test_config_yaml_of_a_resumed_run_that_only_went_further_reruns_it(tmp_path):
    """A resume that only moved how far the run goes (train.max_steps, optim.epochs) rewrites config.yaml: rerun from
    scratch, it gives the resumed run's weights (it said the first, shorter budget); a resume that changed the
    trajectory keeps the config that started it (the change is in model.pt's config_changes)."""
    import yaml

    from aprkit.train import load_config

    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config()
    part = tmp_path / "part"
    fit(cfg, ["train.max_steps=7"], out=part, datasets=(ds, test))
    assert yaml.safe_load((part / "config.yaml").read_text())["train"]["max_steps"] == 7
    resumed = fit(cfg, out=part, resume=True, datasets=(ds, test))
    assert yaml.safe_load((part / "config.yaml").read_text())["train"]["resume"] is False  # a rerun, not a resume
    again = fit(load_config(part / "config.yaml"), out=tmp_path / "again", resume=False, datasets=(ds, test))
    assert same_weights(resumed["model"], again["model"])
    short = tmp_path / "short"  # a resume that trains nothing more keeps the config that reached its step
    fit(cfg, ["train.max_steps=7"], out=short, datasets=(ds, test))
    fit(cfg, ["train.max_steps=5"], out=short, resume=True, datasets=(ds, test))
    assert yaml.safe_load((short / "config.yaml").read_text())["train"]["max_steps"] == 7
    other = tmp_path / "other"
    fit(cfg, ["train.max_steps=7"], out=other, datasets=(ds, test))
    fit(cfg, ["optim.lr=0.01"], out=other, resume=True, datasets=(ds, test))
    assert yaml.safe_load((other / "config.yaml").read_text())["train"]["max_steps"] == 7


def test_a_killed_runs_half_written_checkpoint_is_removed_on_resume(tmp_path):
    """SIGKILL during the atomic write of last.pt leaves last.pt.<random>.tmp; the next run into the folder removes
    it (the run's only writer), and leaves other files alone."""
    ds, test = Images(40), Images(16, seed=5)
    fit(train_config(), ["train.max_steps=3"], out=tmp_path, datasets=(ds, test))
    stale = tmp_path / "last.pt.k3x9a_zq.tmp"
    stale.write_bytes(b"half a checkpoint")
    (tmp_path / "notes.txt.abcdefgh.tmp").write_text("not ours")
    fit(train_config(), ["train.max_steps=5"], out=tmp_path, resume=True, datasets=(ds, test))
    assert not stale.exists() and (tmp_path / "notes.txt.abcdefgh.tmp").exists()


def test_a_resumed_epochs_time_counts_the_part_before_the_stop(tmp_path):
    """time_s of an epoch resumed in its middle covered only the steps after the resume (the studies' training
    times were undercounted): the checkpoint carries the epoch's time so far."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config()
    fit(cfg, ["train.max_steps=7"], out=tmp_path, datasets=(ds, test))  # stops at step 2 of epoch 2
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["batch_in_epoch"] == 2 and state["epoch_time_s"] > 0
    state["epoch_time_s"] = 1000.0  # as if the first two steps of epoch 2 had taken that long
    torch.save(state, tmp_path / "last.pt")
    resumed = fit(cfg, out=tmp_path, resume=True, datasets=(ds, test))
    rows = {r["epoch"]: r for r in resumed["history"]}
    assert rows[2]["time_s"] >= 1000.0 and rows[3]["time_s"] < 1000.0


def test_a_stops_evaluation_is_not_counted_as_training_time(tmp_path, monkeypatch):
    """The time saved at a mid-epoch stop was taken after the stop's evaluation: the resumed epoch counted it."""
    import time as time_module

    from aprkit.train import loop

    real = loop.evaluate_accuracy

    def slow(*args, **kwargs):
        time_module.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_accuracy", slow)
    ds, test = Images(40), Images(16, seed=5)
    fit(train_config(), ["train.max_steps=7"], out=tmp_path, datasets=(ds, test))
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["epoch_time_s"] < 0.9


def test_resuming_a_finished_run_with_other_settings_says_nothing_changes(tmp_path, capsys):
    """A finished run resumed with another lr trains nothing: a note says the change takes no effect (the warning
    said it went on with the new values, recorded in config_changes, which stayed empty)."""
    ds, test = Images(40), Images(16, seed=5)
    cfg = train_config()
    done = tmp_path / "done"
    fit(cfg, out=done, datasets=(ds, test))
    before = (done / "model.pt").read_bytes()
    capsys.readouterr()
    fit(cfg, ["optim.lr=0.3"], out=done, resume=True, datasets=(ds, test))
    err = capsys.readouterr().err
    assert "the run is finished" in err and "goes on with the new values" not in err
    assert (done / "model.pt").read_bytes() == before


def test_a_resume_state_with_a_changed_byte_is_refused(tmp_path):
    import torch

    from aprkit.train.state import CHECKPOINT_FORMAT, atomic_save, load_train_checkpoint

    path = atomic_save({"format": CHECKPOINT_FORMAT, "model": {"w": torch.arange(4096.0)}}, tmp_path / "last.pt")
    assert load_train_checkpoint(path)["format"] == CHECKPOINT_FORMAT
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="last.pt is damaged: its record .* fails its CRC-32 check"):
        load_train_checkpoint(path)


def test_a_cpu_resume_with_changed_cuda_only_settings_is_not_a_config_change(tmp_path, capsys):
    """train.amp, its dtype, channels_last and deterministic take effect on CUDA only: a CPU run resumed with them
    changed warned that it would not match an uninterrupted run, and recorded a change, though its weights were
    the same."""
    ds = Images(40)
    fit(train_config(), ["train.max_steps=3"], out=tmp_path, datasets=(ds, None))
    capsys.readouterr()
    fit(train_config(), ["train.amp=false", "train.channels_last=false", "train.deterministic=true",
                         "train.amp_dtype=bfloat16"], out=tmp_path, resume=True, datasets=(ds, None))
    assert "config differs" not in capsys.readouterr().err
    assert torch.load(tmp_path / "model.pt", weights_only=False)["extra"]["config_changes"] == []
    fit(train_config(), ["train.amp=false", "optim.epochs=3"], out=tmp_path, resume=True, datasets=(ds, None))
    assert "config differs" not in capsys.readouterr().err  # a longer run: still no change to warn about


def test_feature_apr_from_the_config_trains_resumes_bit_for_bit_and_leaves_a_plain_model(tmp_path, capsys):
    """aprkit train had no way to attach FeatureAPR (studies patched build_model, with a generator a resume did not
    restore): feature_apr.layers attaches it; its draws come from the global RNG the loop seeds per step."""
    from aprkit.models import load_model

    ds, test = Images(40), Images(16, seed=5)
    f = {"layers": ["1"], "p": 1.0}
    plain = fit(train_config(), datasets=(ds, test))
    whole = fit(train_config(feature_apr=f), out=tmp_path / "whole", datasets=(ds, test))
    assert strip_times(whole["history"]) != strip_times(plain["history"])  # it recombined the features
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in whole["model"].modules())
    fit(train_config(feature_apr=f), ["train.max_steps=7"], out=tmp_path / "part", datasets=(ds, test))
    resumed = fit(train_config(feature_apr=f), out=tmp_path / "part", resume=True, datasets=(ds, test))
    assert strip_times(resumed["history"]) == strip_times(whole["history"])
    for name, t in whole["model"].state_dict().items():
        assert torch.equal(t, resumed["model"].state_dict()[name]), name
    saved = load_model(tmp_path / "whole" / "model.pt")
    assert not any(m._forward_hooks for m in saved.modules())
    # a checkpoint written before the section existed resumes without a config change
    state = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    state["config"].pop("feature_apr")
    torch.save(state, tmp_path / "part" / "last.pt")
    capsys.readouterr()
    fit(train_config(), ["optim.epochs=4"], out=tmp_path / "part", resume=True, datasets=(ds, test))
    assert "config differs" not in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no layer named 'nope'"):
        fit(train_config(feature_apr={"layers": ["nope"]}), out=tmp_path / "bad", datasets=(ds, test))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match=r"feature_apr.p must be a probability"):
        fit(train_config(feature_apr={"layers": ["1"], "p": 2}), datasets=(ds, test))


def test_feature_apr_settings_that_change_nothing_are_no_config_change(tmp_path, capsys):
    """feature_apr.p without layers, or the layers in another order, warned 'will not match an uninterrupted one'
    though the weights were bit-identical; a changed p with layers still warns."""
    ds = Images(40)
    fit(train_config(), ["train.max_steps=3"], out=tmp_path / "a", datasets=(ds, None))
    capsys.readouterr()
    fit(train_config(), ["train.max_steps=5", "feature_apr.p=0.9"], out=tmp_path / "a", resume=True,
        datasets=(ds, None))
    assert "config differs" not in capsys.readouterr().err
    two = {"layers": ["0", "1"]}
    fit(train_config(feature_apr=two), ["train.max_steps=3"], out=tmp_path / "b", datasets=(ds, None))
    capsys.readouterr()
    fit(train_config(feature_apr={"layers": ["1", "0"]}), ["train.max_steps=5"], out=tmp_path / "b", resume=True,
        datasets=(ds, None))
    assert "config differs" not in capsys.readouterr().err
    fit(train_config(feature_apr={**two, "p": 0.9}), out=tmp_path / "b", resume=True, datasets=(ds, None))
    assert "config differs from the checkpoint's in feature_apr.p" in capsys.readouterr().err


def test_a_resume_under_another_thread_count_warns(tmp_path, capsys):
    """CPU results repeat bit for bit only with one thread count: train.threads null (every shipped config) resumed
    under another OMP_NUM_THREADS diverged silently (tester); last.pt records the count."""
    ds = Images(16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fit(train_config(optim={"epochs": 2}, train={"max_steps": 1}), out=tmp_path, datasets=(ds, None))
        assert torch.load(tmp_path / "last.pt", weights_only=False)["sampler"]["threads"] == 1
        capsys.readouterr()
        torch.set_num_threads(2)
        fit(train_config(optim={"epochs": 2}, train={"resume": True}), out=tmp_path, datasets=(ds, None))
    finally:
        torch.set_num_threads(threads)
    assert "trained with 1 CPU thread(s), this run has 2" in capsys.readouterr().err


def test_overwrite_keeps_the_old_run_when_the_first_step_would_fail(tmp_path):
    """A FeatureAPR layer that is no feature map fails only in the first forward: --overwrite had already deleted the
    previous run (tester); a probe forward on a copy of the model now fails first."""
    ds = Images(16)
    fit(train_config(optim={"epochs": 1}), out=tmp_path, datasets=(ds, None))
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(ValueError, match="feature map"):
        fit(train_config(optim={"epochs": 1}, feature_apr={"layers": ["5"]}), out=tmp_path, datasets=(ds, None),
            overwrite=True)
    assert (tmp_path / "model.pt").read_bytes() == before and (tmp_path / "last.pt").is_file()
    again = fit(train_config(optim={"epochs": 1}), out=tmp_path, datasets=(ds, None), overwrite=True)
    assert again["history"][0]["epoch"] == 1  # a probe leaves the run's numbers alone: checked bit for bit below
    fresh = fit(train_config(optim={"epochs": 1}), out=tmp_path / "fresh", datasets=(ds, None))
    assert strip_times(again["history"]) == strip_times(fresh["history"])


def test_the_overwrite_probe_sees_the_crop_the_device_path_makes(tmp_path):
    """The probe fed the dataset's 36 px image to a GFNet built for 32 px, which the device path crops first: an
    --overwrite of a run that trains refused (review)."""
    ds = Images(16, size=36)
    cfg = train_config(optim={"epochs": 1}, model={"name": "gfnet_cifar", "kwargs": {"depth": 1, "embed_dim": 16}},
                       data={"image_size": 32, "crop_padding": 0})
    with pytest.warns(RuntimeWarning, match="larger than data.image_size"):  # warned, as without the probe
        fit(cfg, out=tmp_path, datasets=(ds, None))
        assert fit(cfg, out=tmp_path, datasets=(ds, None), overwrite=True)["history"][0]["epoch"] == 1


def test_a_changed_method_is_a_config_change_not_another_recipe_version(tmp_path, capsys):
    """Resuming a standard run as APR-P warns that the config changed (aug.method), not that the checkpoint was
    "trained by recipe version 3" while this aprkit trains 5: the saved version is checked against the saved
    settings (tester)."""
    if not HAS_AUGMENT:
        pytest.skip("needs aprkit.augment")
    ds = Images(16)
    fit(train_config(optim={"epochs": 2}, train={"max_steps": 1}), out=tmp_path, datasets=(ds, None))
    capsys.readouterr()
    fit(train_config(optim={"epochs": 2}, aug={"method": "apr_p"}, train={"resume": True}), out=tmp_path,
        datasets=(ds, None))
    err = capsys.readouterr().err
    assert "aug.method" in err and "recipe version" not in err


def test_a_resume_that_finds_no_checkpoint_says_so_without_progress(tmp_path, capsys):
    """``--resume`` into a folder without last.pt starts a new run, and says so on stderr even with
    train.progress off (a resume that silently starts over looked like a finished resume) (tester)."""
    fit(train_config(optim={"epochs": 1}, train={"resume": True, "progress": False}), out=tmp_path / "new",
        datasets=(Images(16), None))
    assert f"no checkpoint at {tmp_path / 'new' / 'last.pt'}; starting a new run" in capsys.readouterr().err


def test_cli_resume_with_a_runs_own_config_from_elsewhere_is_refused(tmp_path, monkeypatch, capsys):
    """``aprkit train --config RUN/config.yaml --resume`` from another folder, the saved train.out being relative,
    named a new folder and started over; now it is refused, naming the --out that resumes the run (tester)."""
    from aprkit.cli import main

    monkeypatch.chdir(tmp_path)
    small = ["model.name=_tiny_test_cnn", "data.dataset=synthetic:64", "optim.batch_size=16", "optim.epochs=2",
             "data.num_workers=0", "train.max_steps=1", "data.test_limit=16"]
    assert main(["train", "--out", "run", "--set", *small]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["train", "--config", "../run/config.yaml", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"give --out {tmp_path / 'run'} to resume that run" in err
    assert not (tmp_path / "elsewhere" / "run").exists()
    assert main(["train", "--config", "../run/config.yaml", "--resume", "--out", "../run",
                 "--set", "train.max_steps=2"]) == 0


def test_a_mid_epoch_resume_with_another_lr_logs_the_rate_the_epoch_started_at(tmp_path):
    """An epoch's row logs the rate of its first step; a run resumed inside it with another optim.lr logged the new
    rate, though the epoch's first steps ran at the old one (tester). The next epoch's row has the new rate."""
    ds = Images(40)
    fit(train_config(), ["train.max_steps=7"], out=tmp_path, datasets=(ds, None))  # stops inside epoch 2 (5 steps)
    done = fit(train_config(), ["optim.lr=0.5"], out=tmp_path, resume=True, datasets=(ds, None))
    lrs = [r["lr"] for r in done["history"]]
    assert lrs[:2] == [0.05, 0.05] and lrs[2] == pytest.approx(0.5 * 0.2)  # epoch 3: past milestone 2


def test_more_epochs_under_a_cosine_schedule_are_a_config_change(tmp_path, capsys):
    """Tester: the cosine schedule spans the run's epochs, so a resume with more epochs changes every later step's lr;
    it was taken as a plain extension (no warning, config.yaml rewritten to the new length, which reruns to other
    weights). The step schedule's extension still reruns to the same weights: no warning there."""
    import yaml

    ds = Images(40)
    fit(train_config(), ["optim.schedule=cosine", "optim.epochs=2"], out=tmp_path / "cos", datasets=(ds, None))
    capsys.readouterr()
    fit(train_config(), ["optim.schedule=cosine", "optim.epochs=3"], out=tmp_path / "cos", resume=True,
              datasets=(ds, None))
    assert "config differs" in capsys.readouterr().err
    changes = torch.load(tmp_path / "cos" / "model.pt", weights_only=False)["extra"]["config_changes"]
    assert [c["keys"] for c in changes] == [["optim.epochs"]]
    assert yaml.safe_load((tmp_path / "cos" / "config.yaml").read_text())["optim"]["epochs"] == 2  # what trained it
    fit(train_config(), ["optim.epochs=2"], out=tmp_path / "step", datasets=(ds, None))
    capsys.readouterr()
    fit(train_config(), ["optim.epochs=3"], out=tmp_path / "step", resume=True, datasets=(ds, None))
    assert "config differs" not in capsys.readouterr().err
