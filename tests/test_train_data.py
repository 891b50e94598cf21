"""Training input pipelines: a dataset's own randomness is seeded per (seed, epoch, index); labels are checked
against model.num_classes before training."""

from __future__ import annotations

import pytest
import torch
from train_common import Images, same_weights, train_config

from aprkit.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


class _Noisy(torch.utils.data.Dataset):
    """A user dataset with its own random transform in ``__getitem__`` (torch's global RNG)."""

    def __init__(self, base: torch.utils.data.Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return (x.int() + torch.randint(-20, 21, x.shape)).clamp(0, 255).to(torch.uint8), y


@pytest.mark.parametrize("path,in_memory", [("gpu", False), ("gpu", None), ("loader", None)])
def test_a_datasets_own_random_draws_do_not_depend_on_the_worker_count(path, in_memory):
    """``self.base[i]`` ran outside the seeded block (and unseeded without a transform): its draws came from each
    worker's RNG, so the trained weights depended on data.num_workers."""
    ds = _Noisy(Images(32, with_tensors=False))
    runs = [fit(train_config(data={"num_workers": nw, "input_path": path, "in_memory": in_memory},
                             optim={"epochs": 1}, train={"eval_every": 0}), datasets=(ds, None))
            for nw in (0, 2)]
    assert same_weights(runs[0]["model"], runs[1]["model"])


def test_a_dataset_that_draws_itself_is_streamed_not_frozen_by_the_automatic_in_memory_mode():
    """The automatic in-memory mode read a small dataset once: its own random draws of the first epoch repeated every
    epoch, while a larger one (streamed) drew anew; it streams such a dataset now, and an explicit in_memory: true
    warns."""
    from aprkit.train.config import config_from_dict, validate_config
    from aprkit.train.data import EpochBatches

    def first_item(eb, epoch):
        eb.set_epoch(epoch)
        for b, (x, _) in zip(eb._batches(), eb.iterate(), strict=False):
            if 0 in b:
                return x[b.index(0)]
        raise AssertionError("item 0 not read")

    for data, noisy, streamed in ((None, True, True), (None, False, False), (True, False, False)):
        ds = _Noisy(Images(16, with_tensors=False)) if noisy else Images(16, with_tensors=False)
        cfg = validate_config(config_from_dict(train_config(data={"in_memory": data})))
        eb = EpochBatches(ds, cfg, 8, torch.device("cpu"), train=True)
        assert eb.in_memory is not streamed
        assert torch.equal(first_item(eb, 0), first_item(eb, 1)) is not noisy
    cfg = validate_config(config_from_dict(train_config(data={"in_memory": True})))
    with pytest.warns(UserWarning, match="every epoch repeats the first epoch's draws"):
        EpochBatches(_Noisy(Images(16, with_tensors=False)), cfg, 8, torch.device("cpu"), train=True)

    class Flip(torch.utils.data.Dataset):  # a coin flip: compared between two epochs it landed alike 1 time in 4
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return (x.flip(-1) if bool(torch.rand(()) < 0.5) else x), y

    for seed in range(12):  # seed 11 was missed
        cfg = validate_config(config_from_dict(train_config(train={"seed": seed})))
        assert not EpochBatches(Flip(Images(16, with_tensors=False)), cfg, 8, torch.device("cpu"), train=True).in_memory


def test_seeded_items_read_the_dataset_under_the_items_seed():
    from aprkit.data import get_dataset
    from aprkit.train.data import SeededTransform

    noisy = SeededTransform(_Noisy(Images(4)), None, seed=3)
    noisy.set_epoch(1)
    a = [noisy[i][0] for i in range(4)]
    torch.rand(5)  # the global RNG moved on: the items do not
    assert all(torch.equal(x, noisy[i][0]) for i, x in enumerate(a))
    noisy.set_epoch(2)
    assert not torch.equal(a[0], noisy[0][0])
    builtin = get_dataset("synthetic:8", "train")  # the built-in datasets draw nothing: items unchanged
    items = SeededTransform(builtin, None, seed=0)
    assert all(torch.equal(items[i][0], builtin[i][0]) and items[i][1] == builtin[i][1] for i in range(8))


class _Targets(torch.utils.data.Dataset):
    """Images with a ``targets`` attribute (as torchvision's datasets have): labels known without decoding."""

    def __init__(self, n: int, num_labels: int):
        self.base, self.targets = Images(n, with_tensors=False), [i % num_labels for i in range(n)]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if i == 0:
            raise AssertionError("the label check decodes no image")
        return self.base[i][0], self.targets[i]


def test_labels_beyond_num_classes_fail_before_training_with_a_clear_error():
    """model.num_classes smaller than the labels failed at the first step with cross_entropy's IndexError."""
    cfg = train_config(model={"num_classes": 2}, optim={"epochs": 1})
    with pytest.raises(ValueError, match=r"the training data \(datasets=\) has label 3 but model.num_classes=2 "
                                         r"\(labels must be in 0..1\); set model.num_classes to at least 4"):
        fit(cfg, datasets=(_Targets(16, 4), None))
    ok = train_config(model={"num_classes": 4}, optim={"epochs": 1}, train={"eval_every": 0})
    with pytest.raises(ValueError, match=r"the test data \(datasets=\) has label 5 but model.num_classes=4"):
        fit(ok, datasets=(Images(16), _Targets(8, 6)))
    declared = Images(16)
    declared.classes = [f"c{k}" for k in range(6)]
    with pytest.raises(ValueError, match=r"model.num_classes=4 but the training data \(datasets=\) has 6 classes"):
        fit(ok, datasets=(declared, None))


@pytest.mark.parametrize("path,in_memory", [("gpu", True), ("gpu", False), ("loader", None)])
def test_labels_of_a_dataset_without_label_attributes_are_checked_as_they_are_read(path, in_memory):
    cfg = train_config(model={"num_classes": 2}, data={"input_path": path, "in_memory": in_memory},
                       optim={"epochs": 1}, train={"eval_every": 0})
    with pytest.raises(ValueError, match=r"the training data has label 3 but model.num_classes=2 .*at least 4"):
        fit(cfg, datasets=(Images(16, with_tensors=False), None))


def test_the_builtin_datasets_label_check_names_the_spec():
    from aprkit.train.config import config_from_dict, validate_config
    from aprkit.train.data import load_datasets

    cfg = validate_config(config_from_dict({"model": {"num_classes": 2}, "data": {"dataset": "synthetic:16"}}))
    with pytest.raises(ValueError, match=r"model.num_classes=2 but the training data synthetic:16 has \d+ classes"):
        load_datasets(cfg)


def test_a_dataset_without_splits_needs_its_own_test_dataset(tmp_path) -> None:
    """A folder: dataset ignores the split: without data.test_dataset the test set would be the training images
    (it was, silently); a folder that holds split folders is not a 2-class dataset."""
    from PIL import Image

    from aprkit.data import get_dataset
    from aprkit.train.config import config_from_dict
    from aprkit.train.data import load_datasets

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "x.png")
    cfg = config_from_dict({"model": {"name": "small_cnn", "num_classes": 2},
                            "data": {"dataset": f"folder:{tmp_path / 'train'}"}})
    with pytest.raises(ValueError, match="test_dataset"):
        load_datasets(cfg)
    cfg = config_from_dict({"model": {"name": "small_cnn", "num_classes": 2},
                            "data": {"dataset": f"folder:{tmp_path / 'train'}",
                                     "test_dataset": f"folder:{tmp_path / 'test'}"}})
    train, test = load_datasets(cfg)
    assert len(train) == len(test) == 2
    with pytest.raises(ValueError, match="split folders"):
        get_dataset(f"folder:{tmp_path}")


def test_loader_path_crops_before_apr_s_with_random_resized_crop():
    """As the reference's ImageNet code and the device path: RandomResizedCrop, then APR-S, then the flip."""
    pytest.importorskip("torchvision")
    from aprkit.train.config import config_from_dict
    from aprkit.train.data import cpu_train_transform

    cfg = config_from_dict(train_config(aug={"method": "apr_sp"}, data={"input_path": "loader",
                                                                       "random_resized_crop": True}))
    names = [type(t).__name__ for t in cpu_train_transform(cfg).transforms]
    assert names == ["RandomResizedCrop", "APRSingle", "RandomHorizontalFlip"]
    cfg = config_from_dict(train_config(aug={"method": "apr_sp"}, data={"input_path": "loader"}))
    names = [type(t).__name__ for t in cpu_train_transform(cfg).transforms]
    assert names == ["APRSingle", "_PadCrop", "RandomHorizontalFlip"]  # CIFAR: recombine, then pad and crop


def test_repeated_config_options_are_all_read():
    """``--config a.yaml --config b.yaml`` merges both (argparse's default kept only the last); likewise
    ``aprkit corrupt --corruptions`` and ``--severities``."""
    import argparse

    from aprkit.cli import corrupt as corrupt_cli
    from aprkit.cli import eval as eval_cli
    from aprkit.cli import train as train_cli

    for mod in (train_cli, eval_cli):
        parser = mod.add_parser(argparse.ArgumentParser().add_subparsers())
        args = parser.parse_known_args(["--config", "a.yaml", "--config", "b.yaml", "c.yaml"])[0]
        assert args.config == ["a.yaml", "b.yaml", "c.yaml"]
    parser = corrupt_cli.add_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_known_args(["in.npy", "out", "--corruptions", "fog", "--corruptions", "snow",
                                    "--severities", "2", "--severities", "4"])[0]
    assert (args.corruptions, corrupt_cli._severities(args.severities)) == (["fog", "snow"], [2, 4])
    assert corrupt_cli._severities(parser.parse_known_args(["in.npy", "out"])[0].severities) == [1, 2, 3, 4, 5]


def test_a_test_folder_with_fewer_classes_is_labelled_by_the_training_classes(tmp_path) -> None:
    """Train on a, b, c and test on a, c: c keeps label 2 (its own sorted folders gave it 1, silently); a test class
    the training lacks is refused."""
    from PIL import Image

    from aprkit.train.config import config_from_dict
    from aprkit.train.data import load_datasets

    for split, classes in (("train", "abc"), ("test", "ac"), ("other", "ad")):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "x.png")

    def cfg(test: str):
        return config_from_dict({"model": {"name": "small_cnn", "num_classes": 3},
                                 "data": {"dataset": f"folder:{tmp_path / 'train'}",
                                          "test_dataset": f"folder:{tmp_path / test}"}})

    train, test = load_datasets(cfg("test"))
    assert list(test.classes) == ["a", "b", "c"]
    assert sorted(int(test[i][1]) for i in range(len(test))) == [0, 2]
    with pytest.raises(ValueError, match="class\\(es\\) the training data lacks: d"):
        load_datasets(cfg("other"))


def test_given_datasets_with_other_class_names_are_refused(tmp_path) -> None:
    """fit(datasets=...) cannot reopen a test set by the training classes: other names are refused, not scored."""
    from PIL import Image

    from aprkit.data import ImageFolderDataset
    from aprkit.train import fit
    from aprkit.train.config import config_from_dict

    for split, classes in (("train", "abc"), ("test", "ac")):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "x.png")
    cfg = config_from_dict({"model": {"name": "small_cnn", "num_classes": 3}})
    train = ImageFolderDataset(tmp_path / "train")
    with pytest.raises(ValueError, match="labels its classes \\(a, c\\) unlike the training data \\(a, b, c\\)"):
        fit(cfg, datasets=(train, ImageFolderDataset(tmp_path / "test")))


def test_a_test_set_holding_the_first_classes_is_accepted_by_training_and_evaluation() -> None:
    """Training and evaluation apply one rule: data naming a leading part of the classes (a, b of a, b, c) keeps
    every label's class, so both accept it; other names are refused by both."""
    from types import SimpleNamespace

    from torch import nn

    from aprkit.eval.engine.inference import check_class_names
    from aprkit.train.data_checks import check_same_classes

    train = SimpleNamespace(classes=["a", "b", "c"])
    model = nn.Identity()
    model.aprkit_classes = ["a", "b", "c"]
    for ok in (["a", "b"], ["a", "b", "c"]):
        check_same_classes(train, SimpleNamespace(classes=ok), "test")  # type: ignore[arg-type]
        check_class_names(model, SimpleNamespace(classes=ok))
    bad = SimpleNamespace(classes=["a", "c"])
    with pytest.raises(ValueError, match="unlike the training data"):
        check_same_classes(train, bad, "test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unlike the data the model was trained on"):
        check_class_names(model, bad)


def test_an_evaluation_refuses_data_that_names_the_classes_otherwise(tmp_path) -> None:
    """aprkit train records the training classes in model.pt; an evaluation on a test folder of fewer classes (its
    labels shifted) is refused instead of scored."""
    from PIL import Image

    from aprkit.data import ImageFolderDataset
    from aprkit.eval.engine.inference import predict
    from aprkit.models import load_model
    from aprkit.train import fit
    from aprkit.train.config import config_from_dict

    for split, classes in (("train", "abc"), ("test", "ac")):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    cfg = config_from_dict({"model": {"name": "small_cnn", "num_classes": 3},
                            "optim": {"epochs": 1, "batch_size": 3}, "train": {"eval_every": 0, "progress": False}})
    fit(cfg, out=tmp_path / "run", datasets=(ImageFolderDataset(tmp_path / "train"), None))
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.aprkit_classes == ["a", "b", "c"]
    assert predict(model, ImageFolderDataset(tmp_path / "train")).logits.shape == (9, 3)
    with pytest.raises(ValueError, match="labels its classes \\(a, c\\) unlike the data the model was trained on"):
        predict(model, ImageFolderDataset(tmp_path / "test"))
    ok = ImageFolderDataset(tmp_path / "test", classes=model.aprkit_classes)
    assert predict(model, ok).labels.tolist() == [0, 0, 0, 2, 2, 2]
    last = load_model(tmp_path / "run" / "last.pt")  # the resumable state records them too (tester)
    assert last.aprkit_classes == ["a", "b", "c"]
    with pytest.raises(ValueError, match="labels its classes \\(a, c\\) unlike the data the model was trained on"):
        predict(last, ImageFolderDataset(tmp_path / "test"))


def test_aug_single_cast_reaches_apr_s_on_both_paths():
    """``aug.single_cast: wrap`` (the reference's uint8 cast) reaches APR-S in the DataLoader and on the device;
    ``round`` stays the default, so configs saved without the key train as before."""
    pytest.importorskip("torchvision")
    from aprkit.train.config import config_from_dict
    from aprkit.train.data import cpu_train_transform
    from aprkit.train.recipe import DeviceAugment

    assert config_from_dict(train_config(aug={"method": "apr_sp"})).aug.single_cast == "round"
    cfg = config_from_dict(train_config(aug={"method": "apr_sp", "single_cast": "wrap"}, data={"input_path": "loader"}))
    assert cpu_train_transform(cfg).transforms[0].batch.cast == "wrap"
    cfg = config_from_dict(train_config(aug={"method": "apr_sp", "single_cast": "wrap"}))
    aug = DeviceAugment(cfg, torch.device("cpu"), torch.Generator())
    assert aug.plan.single is not None and aug.plan.single[4] == "wrap"
    with pytest.raises(ValueError, match="single_cast"):
        config_from_dict(train_config(aug={"single_cast": "clip"}))
