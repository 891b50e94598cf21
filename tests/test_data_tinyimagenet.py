"""Tiny-ImageNet as unzipped: the validation images lie in one folder, labelled by val_annotations.txt (folder:ROOT/val
read them as one class), in Tiny-ImageNet-C's order so that the -C set pairs image for image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aprkit.data import get_dataset

WNIDS = ["n02", "n01", "n03"]  # wnids.txt is not sorted; labels follow the sorted ids


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, quality=95)


def _tiny(root: Path) -> dict[str, str]:
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for k, w in enumerate(WNIDS):
        for i in range(2):
            _jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", 40 * k + i)
    labels = {"val_0.JPEG": "n03", "val_1.JPEG": "n01", "val_2.JPEG": "n03", "val_3.JPEG": "n02", "val_10.JPEG": "n01"}
    for i, name in enumerate(labels):
        _jpeg(root / "val" / "images" / name, 10 * i)
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{n}\t{w}\t0\t0\t7\t7\n" for n, w in labels.items()))
    return labels


def test_validation_images_are_labelled_by_the_annotations_in_tiny_imagenet_c_order(tmp_path) -> None:
    from aprkit.data.corrupted import check_matches_clean

    labels = _tiny(tmp_path / "tiny")
    val = get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}")  # split test: the labelled validation images
    assert val.classes == ["n01", "n02", "n03"] and len(val) == 5
    order = [(Path(p).name, y) for p, y in val.samples]
    assert order == [("val_1.JPEG", 0), ("val_10.JPEG", 0), ("val_3.JPEG", 1), ("val_0.JPEG", 2), ("val_2.JPEG", 2)]
    assert all(val.classes[y] == labels[n] for n, y in order)
    train = get_dataset(f"tiny-imagenet:{tmp_path / 'tiny'}", "train")
    assert len(train) == 6 and train.classes == val.classes and sorted(set(train.targets)) == [0, 1, 2]
    # Tiny-ImageNet-C's layout: <corruption>/<severity>/<wnid>/<the validation file>
    for name, wnid in labels.items():
        _jpeg(tmp_path / "c" / "fog" / "1" / wnid / name, 1)
    cell = get_dataset(f"tinyimagenet-c:{tmp_path / 'c'}", corruption="fog", severity=1, classes=val.classes)
    check_matches_clean(cell, val)
    assert [Path(p).name for p, _ in cell.samples] == [n for n, _ in order]


def test_a_damaged_tiny_imagenet_folder_is_refused_with_the_layout(tmp_path) -> None:
    _tiny(tmp_path / "tiny")
    (tmp_path / "tiny" / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images that .*val_annotations.txt lists are missing.*val_2"):
        get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}")
    with pytest.raises(FileNotFoundError, match="neither wnids.txt nor train/"):
        get_dataset(f"tinyimagenet:{tmp_path}")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}", "validation")


def test_a_cut_or_repeated_annotations_file_is_refused(tmp_path) -> None:
    """A cut val_annotations.txt scored a subset of the validation images without a word; a repeated line counted an
    image twice (or under two labels) (data fuzz tester)."""
    _tiny(tmp_path / "tiny")
    listing = tmp_path / "tiny" / "val" / "val_annotations.txt"
    lines = listing.read_text().splitlines(keepends=True)
    listing.write_text("".join(lines[:3]))
    with pytest.raises(ValueError, match=r"2 images in .*val.images are not listed in .*val_annotations.txt "
                                         r"\(val_10.JPEG, val_3.JPEG\).*a cut file"):
        get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}")
    listing.write_text("".join(lines + lines[:1]))
    with pytest.raises(ValueError, match=r"lists 1 image more than once \(val_0.JPEG\)"):
        get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}")
    listing.write_text("".join(lines))
    (tmp_path / "tiny" / "val" / "images" / "Thumbs.db").write_bytes(b"x")  # not an image: no cut listing
    (tmp_path / "tiny" / "val" / "images" / "notes.txt").write_text("mine")
    assert len(get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}")) == len(lines)


def test_aprkit_corrupt_writes_tiny_imagenet_c_from_the_unzipped_folder(tmp_path) -> None:
    """aprkit corrupt took class-folder trees only: tiny-imagenet-200/val (the hint's suggestion) wrote every
    validation image into one class 'images'. tinyimagenet:ROOT writes Tiny-ImageNet-C's <name>/<sev>/<wnid>/<file>
    at 64 px, which tinyimagenet-c: reads back paired with tinyimagenet:; the val folder is refused, naming it."""
    from aprkit.cli import main
    from aprkit.data.corrupted import check_matches_clean

    labels = _tiny(tmp_path / "tiny")
    out = tmp_path / "c"
    assert main(["corrupt", f"tinyimagenet:{tmp_path / 'tiny'}", str(out), "--corruptions", "contrast",
                 "--severities", "1", "--size", "8", "--no-progress"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.JPEG")) == sorted(
        f"contrast/1/{w}/{n}" for n, w in labels.items())
    val = get_dataset(f"tinyimagenet:{tmp_path / 'tiny'}")
    check_matches_clean(get_dataset(f"tinyimagenet-c:{out}", corruption="contrast", severity=1), val)
    assert main(["corrupt", str(tmp_path / "tiny" / "val"), str(tmp_path / "d"), "--corruptions", "contrast",
                 "--severities", "1", "--no-progress"]) == 2
    assert not (tmp_path / "d").exists()


def test_the_tiny_imagenet_input_is_read_as_a_data_spec() -> None:
    """aprkit corrupt's tinyimagenet:ROOT input is the data spec (parse_spec: its alias too), a path is a path."""
    from aprkit.corruptions.dataset import tiny_imagenet_root

    assert tiny_imagenet_root("tinyimagenet:/x") == tiny_imagenet_root("tiny-imagenet:/x") == Path("/x")
    assert tiny_imagenet_root("val/") is None and tiny_imagenet_root("c:/data") is None
    assert tiny_imagenet_root("folder:/x") is None
