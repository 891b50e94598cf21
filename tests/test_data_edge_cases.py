"""Data readers at their edges (tester): a link from one class folder into a folder below another class reads that
image once, under its own class; CIFAR's classes are its own; a CIFAR root that is a split folder names its parent;
generated images are copies; a model made for another input size warns."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from aprkit.data import get_dataset


def _png(path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


def test_a_link_into_a_folder_below_another_class_is_not_read_as_this_class(tmp_path) -> None:
    _png(tmp_path / "f" / "a" / "1.png")
    _png(tmp_path / "f" / "c" / "sub" / "3.png")
    os.symlink(tmp_path / "f" / "c" / "sub", tmp_path / "f" / "a" / "linked")
    _png(tmp_path / "elsewhere" / "5.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "f" / "a" / "outside")  # a folder outside the tree: read
    samples = sorted((os.path.basename(p), label) for p, label in get_dataset(f"folder:{tmp_path / 'f'}").samples)
    assert samples == [("1.png", 0), ("3.png", 1), ("5.png", 0)]


def test_cifar_refuses_classes_and_names_the_parent_of_a_split_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="cifar10 has its own classes"):
        get_dataset(f"cifar10:{tmp_path}", classes=["dog"])
    for i, c in enumerate(("airplane", "automobile")):
        _png(tmp_path / "c10" / "test" / c / f"{i}.png")
    with pytest.raises(FileNotFoundError, match=r"looks like a split folder itself: point at its parent"):
        get_dataset(f"cifar10:{tmp_path / 'c10' / 'test'}", "test")


def test_generated_images_are_copies() -> None:
    ds = get_dataset("synthetic:8")
    before = ds[3][0].clone()
    ds[3][0].zero_()
    assert torch.equal(ds[3][0], before)


def test_a_model_made_for_another_input_size_warns() -> None:
    from aprkit.eval import evaluate
    from aprkit.models import create_model

    net = create_model("resnet20")
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    with pytest.warns(RuntimeWarning, match=r"made for 32x32 inputs \(its input_size\) and the data's images are 40x40"):
        evaluate(net, "calibration", (images, torch.arange(4) % 2), random_init=True, progress=False,
                 options={"calibration_corrupted": False})


def test_a_model_that_resizes_its_inputs_itself_does_not_warn() -> None:
    import warnings

    from aprkit.eval import evaluate
    from aprkit.models.foreign import Preprocess

    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 10))
    net = Preprocess(inner, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), resize=36, crop=32, num_classes=10)
    assert net.input_size == (3, 32, 32)
    images = torch.randint(0, 256, (4, 3, 48, 40), dtype=torch.uint8)  # any size: it resizes them itself
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the model was made for")
        evaluate(net, "calibration", (images, torch.arange(4) % 2), random_init=True, progress=False,
                 options={"calibration_corrupted": False})
