"""Resuming a run on other data than it was trained on (a tester's findings): relabelled classes are refused, files
changed under the same spec are a recorded change, a changed test subset too; the process state a run gives back
never replaces the interrupt that stopped it; the report says that a limit draws a random subset."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from train_common import train_config

from aprkit.train import fit


def _tree(root, classes=("a", "b", "c", "d"), n=4, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return str(root)


def _cfg(root: str, **data):
    return train_config(data={"dataset": f"folder:{root}/train", "test_dataset": f"folder:{root}/test", **data},
                        optim={"epochs": 2, "milestones": [1]})


def test_a_resume_on_relabelled_classes_is_refused(tmp_path):
    """A class folder renamed between the runs (truck -> lorry) moved ship from label 8 to 9 partway through the run,
    silently."""
    spec = _tree(tmp_path / "d")
    fit(_cfg(spec), ["train.max_steps=2"], out=tmp_path / "run")
    for split in ("train", "test"):
        (tmp_path / "d" / split / "d").rename(tmp_path / "d" / split / "0")  # sorts first: every label moves
    with pytest.raises(ValueError, match=r"cannot resume: the training data's classes differ .*0: 'a' -> '0'"):
        fit(_cfg(spec), out=tmp_path / "run", resume=True)


def test_files_changed_under_the_same_spec_are_a_recorded_change(tmp_path, capsys):
    """An image added (or images replaced) under the same dataset path resumed without a word."""
    spec = _tree(tmp_path / "d")
    fit(_cfg(spec), ["train.max_steps=2"], out=tmp_path / "run")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "d" / "train" / "a" / "extra.png")
    fit(_cfg(spec), out=tmp_path / "run", resume=True)
    assert "the config differs from the checkpoint's in the train data's files" in capsys.readouterr().err
    changes = torch.load(tmp_path / "run" / "model.pt", weights_only=False)["extra"]["config_changes"]
    assert [c["keys"] for c in changes] == [["the train data's files"]]


def test_the_same_data_resumes_quietly_and_a_changed_test_subset_is_recorded(tmp_path, capsys):
    spec = _tree(tmp_path / "d")
    fit(_cfg(spec, test_limit=8), ["train.max_steps=2"], out=tmp_path / "run")
    fit(_cfg(spec, test_limit=8), ["train.max_steps=3"], out=tmp_path / "run", resume=True)
    assert "differs" not in capsys.readouterr().err
    fit(_cfg(spec, test_limit=4), out=tmp_path / "run", resume=True)  # the history's test rows: other images
    assert "differs from the checkpoint's in data.test_limit" in capsys.readouterr().err


def test_a_run_on_some_of_the_classes_it_names_is_warned_of():
    from aprkit.train.data_checks import check_several_classes

    class Two(torch.utils.data.Dataset):
        classes = ["airplane", "automobile", "bird", "cat"]
        labels = torch.tensor([0, 3, 0, 3])

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return torch.zeros(3, 8, 8, dtype=torch.uint8), int(self.labels[i])

    with pytest.warns(RuntimeWarning, match=r"names 4 classes but holds images of 2 of them only \(none of "
                                            r"automobile, bird\)"):
        check_several_classes(Two(), 4)


def test_an_interrupt_is_what_the_caller_sees_whatever_the_restore_does(monkeypatch):
    """SIGTERM while torchvision was being imported: the restore of the determinism flags imported torch._inductor
    on top of the half-done import, and its ImportError replaced the interrupt (exit 1 or 2 instead of 143)."""
    from aprkit.train.process_state import kept_process_state

    real = torch.use_deterministic_algorithms
    called = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: called.append(a))
    with pytest.raises(KeyboardInterrupt), kept_process_state(torch.device("cpu")):
        raise KeyboardInterrupt  # the flags are as they were: nothing to restore, no call
    assert called == []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda *a, **k: (_ for _ in ()).throw(ImportError("cannot import name '_inductor'")))
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)  # as if the run had set them
    state = np.random.get_state()[1].copy()
    with pytest.raises(KeyboardInterrupt), kept_process_state(torch.device("cpu")):
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: False)
        np.random.seed(123)
        raise KeyboardInterrupt
    assert np.array_equal(np.random.get_state()[1], state)  # the other steps of the restore still ran
    monkeypatch.setattr(torch, "use_deterministic_algorithms", real)


def test_the_report_says_a_limit_draws_a_random_subset(tmp_path):
    spec = _tree(tmp_path / "d", n=6)
    fit(train_config(data={"dataset": f"folder:{spec}/train", "test_dataset": f"folder:{spec}/test", "limit": 12,
                           "test_limit": 8}, optim={"epochs": 1}, train={"report": True}), out=tmp_path / "run")
    md = (tmp_path / "run" / "train_report.md").read_text()
    assert "a random subset of 12 of its 24 images (seeded by train.seed)" in md
    assert "a random subset of 8 of its 24 images" in md


def test_an_unset_variable_without_a_default_is_named(monkeypatch):
    from aprkit.config import expand_env

    monkeypatch.delenv("APRKIT_NOPE", raising=False)
    with pytest.warns(RuntimeWarning, match=r"\$\{APRKIT_NOPE\} in 'cifar10:\$\{APRKIT_NOPE\}/x' is not set or empty"):
        assert expand_env("cifar10:${APRKIT_NOPE}/x") == "cifar10:${APRKIT_NOPE}/x"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expand_env("${APRKIT_NOPE:-/d}/x") == "/d/x"
