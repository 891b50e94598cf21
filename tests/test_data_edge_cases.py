"""Data readers at their edges (tester): a link from one class folder into a folder below another class reads that
image once, under its own class; CIFAR's classes are its own; a CIFAR root that is a split folder names its parent;
generated images are copies; a model made for another input size warns."""

from __future__ import annotations

import os

import numpy as np
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
    # a linked file follows the same rule (data fuzz tester: b/x.png -> a/1.png was read under both labels)
    os.symlink(tmp_path / "f" / "a" / "1.png", tmp_path / "f" / "c" / "from_a.png")
    os.symlink(tmp_path / "f" / "c" / "sub" / "3.png", tmp_path / "f" / "a" / "from_c_sub.png")
    os.symlink(tmp_path / "elsewhere" / "5.png", tmp_path / "f" / "c" / "from_outside.png")
    samples = sorted((os.path.basename(p), label) for p, label in get_dataset(f"folder:{tmp_path / 'f'}").samples)
    assert samples == [("1.png", 0), ("3.png", 1), ("5.png", 0), ("from_outside.png", 1)]


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
    import warnings  # once per model and size, not once per suite and cell (a CLI run printed it 2-5 times)

    net2 = create_model("resnet20")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        evaluate(net2, ["calibration", "corruption"], (images, torch.arange(4) % 2), random_init=True, progress=False,
                 options={"corruptions": ["fog", "contrast"], "severities": [1, 2]})
    assert sum("made for 32x32 inputs" in str(w.message) for w in seen) == 1


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


def test_a_dangling_link_in_a_data_folder_does_not_stop_an_evaluation(tmp_path) -> None:
    """The reader skips hidden names and dangling links; the cache identity's stat() followed such a link (an
    editor's ``.#notes`` lock) and ``aprkit eval`` failed with FileNotFoundError."""
    from aprkit._hash import path_state

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / c / "x.png")
    before = path_state(tmp_path)
    os.symlink(tmp_path / "nowhere", tmp_path / "a" / ".#notes.txt")
    assert path_state(tmp_path) != before  # an entry like any other
    assert len(get_dataset(f"folder:{tmp_path}")) == 2


def test_image_links_to_no_file_are_named(tmp_path) -> None:
    """A copy of a data folder whose links point into a folder that moved was read as a subset without a word."""
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / c / "x.png")
    os.symlink(tmp_path / "moved" / "y.png", tmp_path / "b" / "y.png")
    with pytest.warns(RuntimeWarning, match=r"1 image link\(s\) under .* point to no file and are left out: b/y.png"):
        assert len(get_dataset(f"folder:{tmp_path}")) == 2


def test_an_animated_gif_under_a_png_name_reads_as_its_first_frame(tmp_path) -> None:
    """torchvision's decoder sniffs the real format and gave a GIF named .jpg/.png all its frames (F, C, H, W),
    reported as images of different sizes; PIL (ImageFolder's loader) takes the first frame, as now."""
    from aprkit.data.folder import read_image

    frames = [Image.new("RGB", (8, 6), (40 * i, 0, 255 - 40 * i)) for i in range(3)]
    frames[0].save(tmp_path / "anim.png", format="GIF", save_all=True, append_images=frames[1:])
    img = read_image(tmp_path / "anim.png")
    with Image.open(tmp_path / "anim.png") as im:
        want = torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1)
    assert img.shape == (3, 6, 8) and torch.equal(img, want)


def test_num_classes_other_than_the_datas_named_classes_is_refused(tmp_path) -> None:
    """A folder of 2 ImageNet classes with --num-classes 1000 was scored as outputs 0 and 1 (tench, goldfish) with no
    warning; the count the data names must match, unless check_classes=False says its labels are the model's."""
    from aprkit.eval import evaluate

    for c in ("n01443537", "n01530575"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 90, 30)).save(tmp_path / c / f"{i}.png")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1000))
    with pytest.raises(ValueError, match="the data names 2 classes .* scored as the model's first 2 outputs"):
        evaluate(net, "corruption", f"folder:{tmp_path}", progress=False,
                 options={"num_classes": 1000, "corruptions": ["none"]})
    res = evaluate(net, "corruption", f"folder:{tmp_path}", progress=False,
                   options={"num_classes": 1000, "corruptions": ["none"], "check_classes": False})
    assert res.models


def test_nested_class_folders_are_read_in_imagefolders_order(tmp_path) -> None:
    """Files in nested folders below a class came in pathlib's part-by-part order (a/sub/deep/z before a/top):
    --limit and per-image seeds then took other images than an ImageFolder run; now torchvision's order."""
    tv = pytest.importorskip("torchvision.datasets")
    from aprkit.data.folder import scan_image_folder

    for rel in ("a/top.png", "a/sub/x.png", "a/sub-2/y.png", "a/sub/deep/z.png", "b/k.png", "b/0/m.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
    ours = [str(p.relative_to(tmp_path)) for p, _ in scan_image_folder(tmp_path)[0]]
    theirs = [os.path.relpath(p, tmp_path) for p, _ in tv.ImageFolder(str(tmp_path)).samples]
    assert ours == theirs


def test_a_damaged_png_is_refused_by_name_not_a_crash(tmp_path) -> None:
    """torchvision's PNG decoder ended the process (SIGSEGV, no path) on a flipped byte in IDAT or a header naming more
    pixels than the data holds; the bytes are checked first and such files go to PIL, which names the problem (fuzz
    tester). A GIF under a .png name is decoded by PIL too, as PIL's convert("RGB") (transparent pixels differed)."""
    import subprocess
    import sys
    import zlib

    rng = np.random.default_rng(0)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = bytearray(good.read_bytes())
    at = data.find(b"IDAT")
    flipped = bytearray(data)
    flipped[at + 40] ^= 0x55
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    ihdr = data.find(b"IHDR")  # a header naming 20000 x 20000 pixels (CRC made valid) over 12 KB of data
    big = bytearray(data)
    big[ihdr + 4:ihdr + 12] = (20000).to_bytes(4, "big") * 2
    big[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(big[ihdr:ihdr + 17])).to_bytes(4, "big")
    (tmp_path / "huge.png").write_bytes(bytes(big))
    code = ("import sys\nfrom aprkit.data.folder import read_image\n"
            "try:\n    read_image(sys.argv[1]); print('read')\nexcept ValueError as e: print('refused', e)")
    for name in ("flipped.png", "huge.png"):
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, (name, run.returncode, run.stderr[-300:])
        assert run.stdout.startswith(f"refused cannot decode image {tmp_path / name}"), run.stdout
    from aprkit.data.folder import read_image
    from aprkit.data.image_bytes import png_problem

    assert png_problem(bytes(data)) is None and "CRC" in png_problem(bytes(flipped))
    assert "cannot hold the 20000x20000 pixels" in png_problem(bytes(big))
    assert "no IEND" in png_problem(bytes(data[:-12]))
    text = Image.new("RGB", (4, 4))  # an ancillary chunk's bad CRC: libpng warns and drops it, so the file is read
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("note", "hello")
    text.save(tmp_path / "text.png", pnginfo=info)
    raw = bytearray((tmp_path / "text.png").read_bytes())
    at = raw.find(b"tEXt")
    raw[at + 4 + int.from_bytes(raw[at - 4:at], "big")] ^= 0x01  # the chunk's CRC
    assert png_problem(bytes(raw)) is None
    p = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE,
                                                                                    colors=8)
    p.save(tmp_path / "t.gif", transparency=2)
    (tmp_path / "t_gif.png").write_bytes((tmp_path / "t.gif").read_bytes())
    want = torch.from_numpy(np.asarray(Image.open(tmp_path / "t.gif").convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(read_image(tmp_path / "t_gif.png"), want)
