"""``aprkit corrupt`` and the -C dataset writers on tiny generated inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from aprkit.cli import main
from aprkit.corruptions import corrupt
from aprkit.corruptions.dataset import batch_seed, write_cifar_c
from conftest import natural_images

NAMES = ["gaussian_noise", "contrast", "glass_blur"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def array_input(tmp_path):
    x = natural_images(6, 32).permute(0, 2, 3, 1).numpy().copy()
    labels = np.arange(6) % 3
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    return tmp_path, x, labels


@pytest.fixture
def folder_input(tmp_path):
    src = tmp_path / "src"
    imgs = natural_images(4, 40, seed=5).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(imgs):
        d = src / ("cat" if i % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"im{i}.png")
    return src


def test_cifar_layout_from_array(array_input) -> None:
    tmp, x, labels = array_input
    out = tmp / "out"
    argv = ["corrupt", str(tmp / "x.npy"), str(out), "--labels", str(tmp / "y.npy"), "--corruptions", *NAMES,
            "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    for name in NAMES:
        arr = np.load(out / f"{name}.npy")
        assert arr.shape == (30, 32, 32, 3) and arr.dtype == np.uint8
        # severity-major: rows 2N..3N-1 are severity 3, batch 0 seeded by batch_seed
        g = torch.Generator().manual_seed(batch_seed(0, name, 3, 0))
        ref = corrupt(torch.from_numpy(x[:4]).permute(0, 3, 1, 2), name, 3, "cifar", g).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(arr[12:16], ref)
    lab = np.load(out / "labels.npy")
    assert lab.dtype == np.uint8 and np.array_equal(lab, np.tile(labels, 5))
    assert not list(out.glob("*.tmp"))


def test_cifar_layout_resumes_and_is_reproducible(array_input) -> None:
    tmp, x, labels = array_input
    a = write_cifar_c(x, tmp / "a", ["shot_noise"], labels, seed=3, progress=False)
    stamp = os.stat(a[0]).st_mtime_ns
    assert write_cifar_c(x, tmp / "a", ["shot_noise", "fog"], labels, seed=3, progress=False) == [tmp / "a" / "fog.npy"]
    assert os.stat(a[0]).st_mtime_ns == stamp  # finished array skipped
    write_cifar_c(x, tmp / "b", ["shot_noise"], labels, seed=3, progress=False)
    assert np.array_equal(np.load(tmp / "a" / "shot_noise.npy"), np.load(tmp / "b" / "shot_noise.npy"))
    write_cifar_c(x, tmp / "c", ["shot_noise"], labels, seed=4, progress=False)
    assert not np.array_equal(np.load(tmp / "a" / "shot_noise.npy"), np.load(tmp / "c" / "shot_noise.npy"))


def test_imagenet_layout_from_folder(folder_input, tmp_path) -> None:
    out = tmp_path / "inc"
    argv = ["corrupt", str(folder_input), str(out), "--corruptions", "contrast", "pixelate", "--severities", "1", "5",
            "--size", "32", "--no-progress"]
    assert main(argv) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) == 2 * 2 * 4 and "contrast/5/cat/im1.JPEG" in files
    with Image.open(out / "contrast" / "5" / "cat" / "im1.JPEG") as im:
        assert im.format == "JPEG" and im.size == (32, 32)
    # resume: delete one file, rerun -> only that file is rewritten
    victim = out / "pixelate" / "1" / "dog" / "im0.JPEG"
    keep = out / "pixelate" / "1" / "dog" / "im2.JPEG"
    before = keep.read_bytes()
    victim.unlink()
    assert main(argv) == 0
    assert victim.exists() and keep.read_bytes() == before


def test_cifar_layout_from_folder(folder_input, tmp_path) -> None:
    out = tmp_path / "fc"
    assert main(["corrupt", str(folder_input), str(out), "--layout", "cifar", "--size", "32", "--corruptions",
                 "contrast", "--no-progress"]) == 0
    assert np.load(out / "contrast.npy").shape == (20, 32, 32, 3)
    assert np.array_equal(np.load(out / "labels.npy"), np.tile([0, 0, 1, 1], 5))  # cat/im1, cat/im3, dog/...


def test_cli_errors(array_input, capsys) -> None:
    tmp, _, _ = array_input
    assert main(["corrupt", str(tmp / "missing.npy"), str(tmp / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--corruptions", "fgsm", "--no-progress"]) == 2
    assert "valid names" in capsys.readouterr().err
    assert main(["corrupt", str(tmp / "x.npy"), str(tmp / "o"), "--layout", "imagenet"]) == 2
    assert "image folder" in capsys.readouterr().err
