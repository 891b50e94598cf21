"""What `fit` reads (black-box findings): float images on the loader path, items of the wrong kind, data of one class,
images larger than the crop, two runs into one folder, and overrides given as one string."""

from __future__ import annotations

import contextlib
import warnings
import os

import pytest
import torch
from train_common import Images, same_weights, train_config

from aprkit.models import register_model
from aprkit.train import fit


class Mapped(torch.utils.data.Dataset):
    """``base``'s items through ``fn`` (no tensors attribute: the loader path reads it item by item)."""

    def __init__(self, base, fn, labels=None):
        self.base, self.fn, self.labels = base, fn, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.fn(x), (y if self.labels is None else self.labels[i])


def _cfg(**data):
    return train_config(data={"input_path": "loader", **data}, optim={"epochs": 1, "milestones": []})


def test_float_images_pad_with_the_scaled_fill_on_the_loader_path(tmp_path):
    """The loader path padded float [0, 1] images with pad_fill=128 as 128.0: the run trained on garbage. Float images
    now train exactly as their uint8 originals (the same crops, the fill scaled to [0, 1])."""
    base = Images(32, with_tensors=False)
    cfg = _cfg(pad_fill=128)
    u8 = fit(cfg, datasets=(Mapped(base, lambda x: x), None), out=tmp_path / "u8")
    fl = fit(cfg, datasets=(Mapped(base, lambda x: x.float() / 255), None), out=tmp_path / "fl")
    assert same_weights(u8["model"], fl["model"])


@pytest.mark.parametrize(("fn", "match"), [
    (lambda x: x.permute(1, 2, 0).contiguous(), r"item 0 has shape \(16, 16, 3\) \(channels last"),
    (lambda x: x.float(), r"item 0 holds floats from .* to .*; expected \(C, H, W\) image tensors"),
    (lambda x: x.numpy(), r"item 0 is a numpy.ndarray; expected \(C, H, W\) image tensors"),
    (lambda x: x.long(), r"item 0 is a torch.int64 tensor"),
])
def test_items_training_cannot_read_are_refused_before_training(tmp_path, fn, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fit(_cfg(), datasets=(Mapped(Images(16, with_tensors=False), fn), None), out=tmp_path / "r")


def test_pil_items_get_the_transform_to_add(tmp_path):
    from PIL import Image

    ds = Mapped(Images(16, with_tensors=False), lambda x: Image.fromarray(x.permute(1, 2, 0).numpy()))
    with pytest.raises(TypeError, match=r"PIL.Image.Image \(add torchvision.transforms.v2.PILToTensor\(\)"):
        fit(_cfg(), datasets=(ds, None), out=tmp_path / "r")


def test_one_image_of_another_size_in_the_middle_is_named(tmp_path):
    base = Images(16, with_tensors=False)

    class OneSmall(Mapped):  # the checks before training read the first and last items only
        def __getitem__(self, i: int):
            x, y = self.base[i]
            return (x[:, :8, :8] if i == 7 else x), y

    with pytest.raises(ValueError, match=r"item 7 of the data read \(3x8x8;"):
        fit(_cfg(crop_padding=0), datasets=(OneSmall(base, None), None), out=tmp_path / "r")


def test_training_data_of_one_class_is_refused(tmp_path):
    """One class in the training data trained silently to 100 % accuracy."""
    ds = Mapped(Images(16, with_tensors=False), lambda x: x, labels=[2] * 16)
    with pytest.raises(ValueError, match="holds images of one class only"):
        fit(_cfg(), datasets=(ds, None), out=tmp_path / "r")


def test_more_outputs_than_the_data_names_classes_warns(tmp_path):
    ds = Mapped(Images(16, with_tensors=False), lambda x: x)
    ds.classes = ["a", "b", "c", "d"]
    cfg = _cfg()
    cfg["model"]["num_classes"] = 6
    with pytest.warns(RuntimeWarning, match=r"model.num_classes=6 but the training data names 4 classes"):
        fit(cfg, datasets=(ds, None), out=tmp_path / "r", overwrite=True)


def test_images_larger_than_the_crop_warn(tmp_path):
    ds = Mapped(Images(16, size=24, with_tensors=False), lambda x: x)
    with pytest.warns(RuntimeWarning, match=r"training image 0 is 24x24, larger than data.image_size=16"):
        fit(_cfg(), datasets=(ds, None), out=tmp_path / "r")


def test_a_second_run_into_a_folder_being_trained_is_refused(tmp_path):
    """Two processes training into one --out both finished; whichever ended last left its files."""
    from aprkit.train.state import RunBusyError

    with _another_run_holds(tmp_path / "r"), pytest.raises(RunBusyError, match="another aprkit train is writing to"):
        fit(_cfg(), datasets=(Images(16, with_tensors=False), None), out=tmp_path / "r", resume=True)
    fit(_cfg(), datasets=(Images(16, with_tensors=False), None), out=tmp_path / "r", resume=True)  # released


@contextlib.contextmanager
def _another_run_holds(out):
    """A second process holding ``out``'s training lock (as a run writing there) while the block runs."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(out), ready))
    p.start()
    try:
        assert ready.wait(60)
        yield
    finally:
        p.terminate()
        p.join()


def _hold_lock(out: str, ready) -> None:
    import os
    import time

    from aprkit.train.state import run_lock

    os.makedirs(out, exist_ok=True)
    with run_lock(out):
        ready.set()
        time.sleep(60)


def test_overrides_given_as_one_string_are_refused():
    with pytest.raises(TypeError, match=r"overrides must be a list .* pass \['optim.lr=0.1'\]"):
        fit(_cfg(), "optim.lr=0.1")


def test_a_run_writes_its_report_with_the_curves_and_the_numbers_of_metrics_json(tmp_path):
    import json

    cfg = train_config(optim={"epochs": 2, "milestones": [1]}, train={"report": True, "max_steps": 6})
    fit(cfg, datasets=(Images(32, with_tensors=False), Images(16, seed=1)), out=tmp_path / "r")
    md = (tmp_path / "r" / "train_report.md").read_text()
    assert "stopped inside epoch 2 of 2" in md and "training: Images, 32 images; test: Images, 16 images" in md
    assert "| train accuracy % (epoch 2, partial: its steps so far) |" in md  # was "(last epoch)" (tester)
    assert r"2 epochs, batch 8, lr 0.05 (x0.2 after epoch \[1\])," in md  # Markdown-escaped
    fit(cfg | {"train": {**cfg["train"], "max_steps": None}}, datasets=(Images(32, with_tensors=False),
                                                                         Images(16, seed=1)), out=tmp_path / "r",
        resume=True)
    md = (tmp_path / "r" / "train_report.md").read_text()
    rows = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "**Status:** finished (2 epochs)" in md and "(partial)" not in md and "| train loss (last epoch) |" in md
    assert f"| test accuracy % (last evaluation) | {100 * rows[-1]['test_acc']:.2f} |" in md
    for name in ("training_curves.png", "loss_lr.png"):
        assert (tmp_path / "r" / "figures" / name).stat().st_size > 1000
    assert "<img" in (tmp_path / "r" / "train_report.html").read_text()
    fit(train_config(optim={"epochs": 1, "milestones": []}, train={"report": True}), datasets=(Images(32), None),
        out=tmp_path / "one")
    md = (tmp_path / "one" / "train_report.md").read_text()  # was "1 epochs" and "x0.2 at epochs []"
    assert ", 1 epoch, batch" in md and "(constant)" in md and "finished (1 epoch)" in md
    fit(train_config(train={"report": False}), datasets=(Images(32), None), out=tmp_path / "off")
    assert not (tmp_path / "off" / "train_report.md").exists()
    fit(train_config(train={"report": True}, optim={"epochs": 1, "milestones": []}), datasets=(Images(36), None),
        out=tmp_path / "left")  # batches of 8: 4 per epoch, 4 images left out (it said nothing: training reviewer)
    assert ("training: Images, 36 images (4 per epoch left out, other ones each epoch: the last partial batch is "
            "dropped)") in (tmp_path / "left" / "train_report.md").read_text()
    fit(train_config(train={"report": True}, feature_apr={"layers": ["1"]}, optim={"epochs": 1}),
        datasets=(Images(32), None), out=tmp_path / "fa")
    assert "aug.method=standard, FeatureAPR at 1 (p 0.5, swap, dims hw), 1 epoch," in \
        (tmp_path / "fa" / "train_report.md").read_text()


def test_a_report_that_cannot_be_written_does_not_stop_the_run(tmp_path):
    """A report error (here: figures/ is a file) killed the run before that epoch's last.pt."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "figures").write_text("not a folder")
    cfg = train_config(optim={"epochs": 2, "milestones": [1]}, train={"report": True})
    with pytest.warns(RuntimeWarning, match="the training report .* could not be written"):
        res = fit(cfg, datasets=(Images(32), Images(16, seed=1)), out=tmp_path / "r")
    assert len(res["history"]) == 2 and (tmp_path / "r" / "last.pt").is_file()


def test_overwrite_removes_the_old_report_and_a_file_as_out_is_refused_first(tmp_path):
    cfg = train_config(optim={"epochs": 1, "milestones": []}, train={"report": True})
    fit(cfg, datasets=(Images(32), None), out=tmp_path / "r")
    assert (tmp_path / "r" / "train_report.md").is_file()
    fit(train_config(optim={"epochs": 1, "milestones": []}), datasets=(Images(32), None), out=tmp_path / "r",
        overwrite=True)
    assert not (tmp_path / "r" / "train_report.md").exists() and not list((tmp_path / "r" / "figures").glob("*.png"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; expected the folder of the run"):
        fit(cfg, datasets=(Images(32), None), out=tmp_path / "file")


def test_a_run_that_changed_the_folder_while_this_one_got_ready_is_not_replaced(tmp_path, monkeypatch):
    """The folder checks ran before loading data and model, the lock only at the first write: a run that finished
    (or wrote last.pt) in between was replaced."""
    import aprkit.train.loop as loop
    import aprkit.train.resume as resume
    from aprkit.train.state import RunBusyError, RunExistsError

    real = loop.build_model
    cfg = train_config(optim={"epochs": 2, "milestones": [1]})

    def meanwhile(write):
        def build(c):
            write()
            return real(c)
        return build

    monkeypatch.setattr(loop, "build_model", meanwhile(lambda: (tmp_path / "new").mkdir() or
                                                       (tmp_path / "new" / "metrics.json").write_text("[]") or
                                                       (tmp_path / "new" / "model.pt").write_bytes(b"x")))
    with pytest.raises(RunExistsError, match="already holds a training run"):
        fit(cfg, datasets=(Images(32), None), out=tmp_path / "new")
    monkeypatch.setattr(loop, "build_model", real)
    fit(cfg | {"train": {**cfg["train"], "max_steps": 3}}, datasets=(Images(32), None), out=tmp_path / "res")
    last = tmp_path / "res" / "last.pt"
    real_load = resume.load_train_checkpoint

    def load_then_another_run_writes(path):
        state = real_load(path)
        os.utime(path, ns=(1, 1))  # the other run's next checkpoint
        return state

    monkeypatch.setattr(resume, "load_train_checkpoint", load_then_another_run_writes)
    with pytest.raises(RunBusyError, match="wrote .*last.pt while this run was getting ready"):
        fit(cfg, datasets=(Images(32), None), out=tmp_path / "res", resume=True)


def test_the_report_of_a_run_stopped_at_an_epochs_end_has_that_epoch(tmp_path):
    """train.max_steps on an epoch boundary: the last row is no partial one and not the last epoch, so the throttled
    report missed it (the report said epoch 1 where metrics.json had 2)."""
    import json

    cfg = train_config(optim={"epochs": 5, "milestones": [1], "batch_size": 8}, train={"report": True, "max_steps": 8})
    fit(cfg, datasets=(Images(32, with_tensors=False), Images(16, seed=1)), out=tmp_path / "r")  # 4 steps per epoch
    rows = json.loads((tmp_path / "r" / "metrics.json").read_text())
    md = (tmp_path / "r" / "train_report.md").read_text()
    assert rows[-1]["epoch"] == 2 and "stopped after epoch 2 of 5 (train.max_steps)" in md
    assert f"| test accuracy % (last evaluation) | {100 * rows[-1]['test_acc']:.2f} |" in md


def test_overwrite_keeps_an_evaluation_report_in_a_folder_without_a_run(tmp_path):
    (tmp_path / "r" / "figures").mkdir(parents=True)
    (tmp_path / "r" / "report.md").write_text("an evaluation's report")
    (tmp_path / "r" / "figures" / "corruption.png").write_bytes(b"png")
    fit(train_config(optim={"epochs": 1, "milestones": []}, train={"report": True}), datasets=(Images(32), None),
        out=tmp_path / "r", overwrite=True)  # the training report has its own name
    assert (tmp_path / "r" / "report.md").read_text() == "an evaluation's report"
    assert (tmp_path / "r" / "train_report.md").is_file()
    assert (tmp_path / "r" / "figures" / "corruption.png").is_file()


def test_an_interrupted_run_says_so_in_its_report_and_last_pt_comes_before_the_metrics(tmp_path, monkeypatch):
    """Ctrl-C left a report saying 'epoch 1 done, still training'; and metrics.json was written before last.pt, so a
    kill between the two left a folder --resume refused ('holds a run but no last.pt')."""
    import aprkit.train.loop as loop

    real_eval, calls = loop.evaluate_accuracy, []

    def eval_then_interrupt(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(loop, "evaluate_accuracy", eval_then_interrupt)
    cfg = train_config(optim={"epochs": 3, "milestones": [1]}, train={"report": True})
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, datasets=(Images(32), Images(16, seed=1)), out=tmp_path / "r")
    assert "interrupted after epoch 1 of 3" in (tmp_path / "r" / "train_report.md").read_text()
    monkeypatch.setattr(loop, "evaluate_accuracy", real_eval)

    def log_fails(self, row):
        raise OSError("disk full while writing metrics.json")

    monkeypatch.setattr(loop.MetricsLogger, "log", log_fails)
    with pytest.raises(OSError):
        fit(cfg, datasets=(Images(32), Images(16, seed=1)), out=tmp_path / "k")
    monkeypatch.undo()
    assert (tmp_path / "k" / "last.pt").is_file()
    res = fit(cfg, datasets=(Images(32), Images(16, seed=1)), out=tmp_path / "k", resume=True)
    assert len(res["history"]) == 3


def test_a_new_run_into_a_folder_being_trained_is_told_so_first(tmp_path):
    from aprkit.train.state import RunBusyError

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("model: {}\n")  # the first run has written its config
    with _another_run_holds(tmp_path / "r"), pytest.raises(RunBusyError, match="another aprkit train is writing to"):
        fit(_cfg(), datasets=(Images(16, with_tensors=False), None), out=tmp_path / "r")


def test_a_run_that_failed_before_its_first_checkpoint_is_no_run(tmp_path, monkeypatch):
    """A layer FeatureAPR cannot take (the head's 2-D output) fails at the first forward, after config.yaml was written:
    the corrected command was refused ('already holds a training run') though nothing had been trained. (The probe
    forward now refuses that layer before the folder is taken: left out here, it stands for any first-step error.)"""
    import aprkit.train.loop as loop

    cfg = train_config(optim={"epochs": 1})
    with pytest.raises(ValueError, match="layer '5'"):
        fit(cfg | {"feature_apr": {"layers": ["5"]}}, datasets=(Images(32), None), out=tmp_path / "p")
    assert not (tmp_path / "p").exists()
    monkeypatch.setattr(loop, "probe_forward", lambda *a: None)
    with pytest.raises(ValueError, match="layer '5'"):
        fit(cfg | {"feature_apr": {"layers": ["5"]}}, datasets=(Images(32), None), out=tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if not p.name.startswith(".")) == ["config.yaml"]
    fit(cfg | {"feature_apr": {"layers": ["1"]}}, datasets=(Images(32), None), out=tmp_path / "r")
    assert (tmp_path / "r" / "model.pt").is_file()
    with pytest.raises(ValueError, match="already holds a training run"):  # a trained run is still protected
        fit(cfg, datasets=(Images(32), None), out=tmp_path / "r")


class _WithUnusedLayer(torch.nn.Module):
    """A CNN holding a convolution its forward never calls."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv, self.unused = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


register_model("_test_cnn_with_unused")(_WithUnusedLayer)


def test_a_feature_apr_layer_the_forward_never_calls_is_refused(tmp_path):
    """FeatureAPR attached to a module the forward never calls never applied, without a word (the run trained as
    a plain one): ``attach`` warns at the first training forward, ``aprkit train`` refuses before the run."""
    from aprkit.hidden import LayerNotCalledWarning, attach

    net = _WithUnusedLayer().train()
    with attach(net, ["unused", "conv"], p=1.0):
        with pytest.warns(LayerNotCalledWarning, match=r"layer 'unused' attached but not called"):
            net(torch.rand(4, 3, 8, 8))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            net(torch.rand(4, 3, 8, 8))  # once: a layer a later forward skips is no misconfiguration
    with attach(net.eval(), ["unused"], p=1.0), warnings.catch_warnings():
        warnings.simplefilter("error")
        net(torch.rand(4, 3, 8, 8))  # eval mode: FeatureAPR is off anyway
    cfg = train_config(model={"name": "_test_cnn_with_unused", "num_classes": 4}, optim={"epochs": 1})
    with pytest.raises(LayerNotCalledWarning, match="'unused'"):
        fit(cfg | {"feature_apr": {"layers": ["unused"]}}, datasets=(Images(16), None), out=tmp_path / "r")
    assert not (tmp_path / "r" / "last.pt").exists()


def test_data_errors_name_the_config_key_and_an_unlabelled_test_set(tmp_path):
    """A split the dataset lacks named no config key ("split must be 'train' or 'test'"); a noise: test set was
    refused in terms of "training labels"."""
    cfg = train_config(model={"name": "small_cnn", "num_classes": 10}, optim={"epochs": 1},
                       data={"dataset": "synthetic:64", "limit": 64, "image_size": 32})
    with pytest.raises(ValueError, match=r"data\.test_split='val': split must be"):
        fit(cfg | {"data": {**cfg["data"], "test_split": "val"}}, out=tmp_path / "a")
    with pytest.raises(ValueError, match=r"test data .* label -1; labels must be .* unlabelled set"):
        fit(cfg | {"data": {**cfg["data"], "test_dataset": "noise:gaussian"}}, out=tmp_path / "b")
