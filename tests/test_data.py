"""Dataset readers on generated trees/arrays in the published layouts (and on ../shared when present)."""

from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from aprkit.data import (
    NO_LABEL,
    ArrayDataset,
    ImageFolderDataset,
    NoiseDataset,
    first_n,
    get_dataset,
    iter_batches,
    subset,
)
from aprkit.data.loading import batch_source

N = 20  # images per severity in the generated -C set


def _write_cifar_c(root: Path, corruptions=("fog", "gaussian_noise"), n: int = N) -> np.ndarray:
    """The published CIFAR-10-C layout: <c>.npy uint8 (5n, 32, 32, 3) severity-major + labels.npy (5n,)."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(n) % 10, 5).astype(np.uint8)  # the published file stores uint8 labels
    np.save(root / "labels.npy", labels)
    rng = np.random.default_rng(0)
    for ci, c in enumerate(corruptions):
        arr = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
        arr[:, 0, 0, 0] = np.repeat(np.arange(1, 6), n) + 10 * ci  # encode severity in a pixel
        arr[:, 0, 0, 1] = np.tile(np.arange(n), 5)  # and the image index
        np.save(root / f"{c}.npy", arr)
    return labels


def test_cifar_c_layout_severity_selection_and_memmap(tmp_path: Path) -> None:
    labels = _write_cifar_c(tmp_path)
    raw = np.load(tmp_path / "fog.npy")
    for s in range(1, 6):
        ds = get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=s)
        assert isinstance(ds, ArrayDataset) and len(ds) == N
        assert isinstance(ds.array, np.memmap)  # memory-mapped, never loaded whole
        x, y = ds[3]
        assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
        assert int(x[0, 0, 0]) == s and int(x[1, 0, 0]) == 3 and y == int(labels[(s - 1) * N + 3])
        assert torch.equal(x, torch.from_numpy(raw[(s - 1) * N + 3]).permute(2, 0, 1))
    ds = get_dataset(f"cifar100-c:{tmp_path}", corruption="Gaussian Noise", severity=2)
    assert int(ds[0][0][0, 0, 0]) == 12
    all5 = get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=None)
    assert len(all5) == 5 * N and int(all5[N][0][0, 0, 0]) == 2


def test_load_npy_shares_a_files_map_and_reopens_a_rewritten_file(tmp_path: Path) -> None:
    """One map per file version: two spellings of a path (and a link to it) share it; the file rewritten (another size,
    or the same size at another mtime) or replaced by a new file is read again."""
    import os

    from aprkit.data.arrays import load_npy

    path = tmp_path / "a.npy"
    np.save(path, np.arange(6, dtype=np.uint8))
    first = load_npy(path)
    (tmp_path / "sub").mkdir()
    os.symlink(path, tmp_path / "link.npy")
    assert load_npy(str(tmp_path / "sub" / ".." / "a.npy")) is first and load_npy(tmp_path / "link.npy") is first
    np.save(path, np.arange(6, dtype=np.uint8) + 1)  # same size, rewritten in place
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a distinct mtime even on a coarse clock
    assert load_npy(path).tolist() == [1, 2, 3, 4, 5, 6]
    np.save(tmp_path / "b.npy", np.arange(3, dtype=np.uint8))
    os.replace(tmp_path / "b.npy", path)  # a new file under the old name
    assert load_npy(path).tolist() == [0, 1, 2]


def test_cifar_c_batches_match_items(tmp_path: Path) -> None:
    _write_cifar_c(tmp_path)
    ds = get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=4)
    xs, ys = zip(*iter_batches(ds, batch_size=7))
    assert [len(x) for x in xs] == [7, 7, 6]
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.uint8 and x.shape == (N, 3, 32, 32) and y.dtype == torch.int64
    items = torch.stack([ds[i][0] for i in range(N)])
    assert torch.equal(x, items) and y.tolist() == [ds[i][1] for i in range(N)]
    # arbitrary (unsorted, non-contiguous) indices keep their order
    idx = [5, 1, 17, 2]
    bx, by = ds.get_batch(idx)
    assert torch.equal(bx, items[idx]) and by.tolist() == [ds[i][1] for i in idx]
    # a shard through indices (as with DistributedSampler), and worker processes
    shard = list(range(1, N, 2))
    sx = torch.cat([b for b, _ in iter_batches(ds, 4, indices=shard, num_workers=2)])
    assert torch.equal(sx, items[shard])


def test_cifar_c_missing_and_bad_files(tmp_path: Path) -> None:
    _write_cifar_c(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"snow\.npy is missing.*<corruption>\.npy"):
        get_dataset(f"cifar10-c:{tmp_path}", corruption="snow", severity=1)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels\.npy is missing"):
        get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=1)
    np.save(tmp_path / "labels.npy", np.zeros(7, dtype=np.uint8))
    with pytest.raises(ValueError, match="labels.npy must have shape"):
        get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=1)
    np.save(tmp_path / "frost.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="multiple of 5"):
        get_dataset(f"cifar10-c:{tmp_path}", corruption="frost", severity=1)
    with pytest.raises(ValueError, match="severity"):
        get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=6)
    with pytest.raises(ValueError, match="did you mean 'fog'"):
        get_dataset(f"cifar10-c:{tmp_path}", corruption="fogg", severity=1)
    with pytest.raises(ValueError, match="corruption="):
        get_dataset(f"cifar10-c:{tmp_path}")


def _png(path: Path, value: int, size=(32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((*size, 3), value, dtype=np.uint8)
    arr[0, 0] = (value, 255 - value, 7)
    Image.fromarray(arr).save(path)


def test_image_folder(tmp_path: Path) -> None:
    for ci, cls in enumerate(["b_dog", "a_cat", "c_frog"]):
        for j in range(3):
            _png(tmp_path / cls / f"img{j}.png", 10 * ci + j)
    (tmp_path / "a_cat" / "notes.txt").write_text("not an image")
    ds = get_dataset(f"folder:{tmp_path}")
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 9
    assert ds.classes == ["a_cat", "b_dog", "c_frog"]
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == 0
    assert x[:, 0, 0].tolist() == [10, 245, 7] and int(x[0, 5, 5]) == 10  # a_cat = class index 1 when written
    xb, yb = next(iter_batches(ds, 16))
    assert xb.shape == (9, 3, 32, 32) and yb.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    cached = get_dataset(f"folder:{tmp_path}", cache=True)  # decoded once, then the fast batch path
    assert batch_source(ds) is None and batch_source(cached) is not None
    for _ in range(2):
        cx, cy = cached.get_batch([8, 0, 4])
        assert torch.equal(cx, xb[[8, 0, 4]]) and cy.tolist() == [2, 0, 1]
    assert bool(cached._filled.sum() == 3) and torch.equal(cached[4][0], xb[4])
    assert torch.equal(torch.cat([b for b, _ in iter_batches(cached, 4)]), xb)


def test_image_folder_sizes_and_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", 1, size=(40, 50))
    _png(tmp_path / "b" / "0.jpg", 2, size=(32, 32))
    ds = get_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="differ in size.*resize"):
        next(iter_batches(ds, 2))
    ds = get_dataset(f"folder:{tmp_path}", resize=32, crop=32)
    x, _ = next(iter_batches(ds, 2))
    assert x.shape == (2, 3, 32, 32)
    spec = get_dataset(f"folder:{tmp_path}?resize=40&crop=32")  # the same keywords in the spec (the CLI's way)
    assert (spec.resize, spec.crop) == (40, 32) and next(iter_batches(spec, 2))[0].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"unknown option 'rezise' .*did you mean 'resize'.*folder: takes resize, crop"):
        get_dataset(f"folder:{tmp_path}?rezise=40")
    with pytest.raises(ValueError, match=r"option 'crop' .* positive number of pixels, got '0'"):
        get_dataset(f"folder:{tmp_path}?crop=0")
    with pytest.raises(ValueError, match="option 'resize' is given twice"):
        get_dataset(f"folder:{tmp_path}?resize=50&resize=40")
    with pytest.raises(ValueError, match="crop given both in the spec and as a keyword"):
        get_dataset(f"folder:{tmp_path}?crop=32", crop=24)
    with pytest.raises(ValueError, match=r"cifar10-c: takes none \(folder: takes resize, crop\)"):
        get_dataset("cifar10-c:/x?resize=3", corruption="fog", severity=1)
    from aprkit.eval.engine.datasets import _normalise_spec

    keyed = _normalise_spec(f"folder:{tmp_path}?resize=40&crop=32")  # options in one order, in every cache key
    assert keyed == _normalise_spec(f"folder:{tmp_path}?crop=32&resize=40") and keyed.endswith("?crop=32&resize=40")
    assert keyed.startswith(_normalise_spec(f"folder:{tmp_path}") + "?")
    with pytest.raises(ValueError, match=r"b/0\.jpg has shape \(3, 32, 32\), but .*a/0\.png, read first, has \(3, 40, 50\); "
                       "images of one size are needed to hold them in memory"):  # the image that set the size named
        get_dataset(f"folder:{tmp_path}", cache=True).get_batch([0, 1])
    with pytest.raises(ValueError, match="freeze"):
        get_dataset(f"folder:{tmp_path}", cache=True, transform=lambda im: im)
    with pytest.raises(FileNotFoundError, match="ImageFolder layout"):
        get_dataset(f"folder:{tmp_path / 'nothing'}")
    (tmp_path / "empty" / "c").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        get_dataset(f"folder:{tmp_path / 'empty'}")


def test_cifar_png_tree_with_and_without_order_csv(tmp_path: Path) -> None:
    classes = ["airplane", "automobile", "bird"]
    rows = []
    for i, (cls, name) in enumerate([("bird", "z.png"), ("airplane", "y.png"), ("automobile", "x.png"), ("airplane", "a.png")]):
        _png(tmp_path / "test" / cls / name, 50 + i)
        rows.append({"index": i, "label": classes.index(cls), "class": cls, "path": f"test/{cls}/{name}"})
    ds = get_dataset(f"cifar10:{tmp_path}")  # no csv: class-folder order
    assert [y for _, y in ds] == [0, 0, 1, 2] and int(ds[0][0][0, 3, 3]) == 53
    with open(tmp_path / "test_order.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["index", "label", "class", "path"])
        w.writeheader()
        w.writerows(reversed(rows))
    ds = get_dataset(f"cifar10:{tmp_path}")
    assert [y for _, y in ds] == [2, 0, 1, 0] and [int(x[0, 3, 3]) for x, _ in ds] == [50, 51, 52, 53]
    assert ds.classes[:3] == classes and len(ds.classes) == 10  # CIFAR-10's names, as for class folders
    mem = get_dataset(f"cifar10:{tmp_path}", in_memory=True)
    assert isinstance(mem, ArrayDataset) and torch.equal(mem.get_batch(slice(0, 4))[0], next(iter_batches(ds, 4))[0])
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*download=True"):
        get_dataset(f"cifar10:{tmp_path}", split="train")
    with pytest.raises(ValueError, match="names CIFAR-10 classes .*read this tree with cifar10:"):  # was read as 10
        get_dataset(f"cifar100:{tmp_path}")  # CIFAR-100 classes


def test_cifar_png_tree_labels_are_the_official_ones(tmp_path: Path) -> None:
    """Class folders carry CIFAR-10's names at their official labels: a subset keeps them, other names are refused
    (the tutorial's plane/car folders sorted into other labels), and so is a CSV whose classes disagree."""
    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "a" / "test" / cls / "x.png", 60 + i)
    assert [y for _, y in get_dataset(f"cifar10:{tmp_path / 'a'}")] == [3, 5]
    for cls in ("plane", "car"):
        _png(tmp_path / "b" / "test" / cls / "x.png", 70)
    with pytest.raises(ValueError, match="not CIFAR-10 classes"):
        get_dataset(f"cifar10:{tmp_path / 'b'}")
    _png(tmp_path / "c" / "test" / "cat" / "x.png", 80)
    with open(tmp_path / "c" / "test_order.csv", "w", newline="") as f:
        f.write("index,label,class,path\n0,0,cat,test/cat/x.png\n")
    with pytest.raises(ValueError, match="not CIFAR-10's"):
        get_dataset(f"cifar10:{tmp_path / 'c'}")
    with pytest.raises(ValueError, match="are not CIFAR-100 classes"):
        get_dataset(f"cifar100:{tmp_path / 'a'}")
    # CIFAR-100 folders too carry the official names (numbered ones sorted as 0, 1, 10, 11, ... into other labels)
    for i in (0, 1, 2, 10):
        _png(tmp_path / "n" / "test" / str(i) / "x.png", 100 + i)
    with pytest.raises(ValueError, match=r"class folders \['0', '1', '10', '2'\] .* are not CIFAR-100 classes .*"
                                         r"give an order file test_order.csv"):
        get_dataset(f"cifar100:{tmp_path / 'n'}")
    for cls in ("apple", "worm", "bee"):
        _png(tmp_path / "f" / "test" / cls / "x.png", 110)
    fine = get_dataset(f"cifar100:{tmp_path / 'f'}")
    assert [y for _, y in fine] == [0, 6, 99] and len(fine.classes) == 100 and fine.classes[99] == "worm"
    with open(tmp_path / "n" / "test_order.csv", "w", newline="") as f:  # numbered folders with their labels: fine
        f.write("index,label,path\n0,0,test/0/x.png\n1,1,test/1/x.png\n2,2,test/2/x.png\n3,10,test/10/x.png\n")
    ds = get_dataset(f"cifar100:{tmp_path / 'n'}")
    assert [y for _, y in ds] == [0, 1, 2, 10] and ds.classes[10] == "bowl"
    _png(tmp_path / "d" / "test" / "cat" / "x.png", 90, size=(64, 64))  # another dataset's size: not CIFAR
    with pytest.raises(ValueError, match=r"x\.png is 64x64; cifar10 images are 32x32: read this tree with folder:"):
        get_dataset(f"cifar10:{tmp_path / 'd'}")
    assert get_dataset(f"cifar10:{tmp_path / 'd'}", resize=32)[0][0].shape == (3, 32, 32)  # brought to 32x32


def test_cifar_torchvision_binary_layout(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1, 5, 9]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in "abcdefghij"]}, f)
    ds = get_dataset(f"cifar10:{tmp_path}")
    assert isinstance(ds, ArrayDataset) and len(ds) == 6 and ds.classes[3] == "d"
    x, y = ds[2]
    assert y == 4 and torch.equal(x, torch.from_numpy(data[2].reshape(3, 32, 32)))
    with pytest.raises(FileNotFoundError, match="data_batch_1 is missing"):
        get_dataset(f"cifar10:{tmp_path}", split="train")


def test_cifar_batches_of_another_type_or_layout_are_refused(tmp_path: Path) -> None:
    """Data of another dtype or layout was cast and reshaped into wrong images without a word (floats in [0, 1] all
    black, int16 wrapped, torchvision's NHWC .data scrambled), fractional labels truncated, a meta file of 2 names
    accepted (data fuzz tester); 8-bit values in a wider integer type (a pickled list) are read."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)

    def write(data, labels=(0, 1, 2, 9), names="abcdefghij"):
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({b"data": data, b"labels": list(labels)}, f)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [c.encode() for c in names]}, f)

    for bad, match in ((x.astype(np.float32) / 255, r"holds data of float32 \(4, 3, 32, 32\)"),
                       (x.reshape(4, -1).astype(np.int16) - 100, "holds data of int16"),
                       (x.transpose(0, 2, 3, 1), r"an NHWC array .* transpose it to \(N, 3, 32, 32\)")):
        write(bad)
        with pytest.raises(ValueError, match=match):
            get_dataset(f"cifar10:{tmp_path}")
    write(x.reshape(4, -1), labels=(0, 1.7, 2.2, 9.9))
    with pytest.raises(ValueError, match="holds float64 labels; a cifar10 batch holds integer labels"):
        get_dataset(f"cifar10:{tmp_path}")
    write(x.reshape(4, -1), names="ab")
    with pytest.raises(ValueError, match="batches.meta names 2 classes; cifar10 has 10"):
        get_dataset(f"cifar10:{tmp_path}")
    write(x.reshape(4, -1).astype(np.int64).tolist())
    assert torch.equal(get_dataset(f"cifar10:{tmp_path}")[1][0], torch.from_numpy(x[1]))


def test_imagenet_c_folder_layout(tmp_path: Path) -> None:
    for s in (1, 3):
        for ci, wnid in enumerate(["n02", "n01"]):
            _png(tmp_path / "blur" / "defocus_blur" / str(s) / wnid / f"{s}{ci}.png", 10 * s + ci, size=(16, 16))
    ds = get_dataset(f"imagenet-c:{tmp_path}", corruption="defocus_blur", severity=3)
    assert ds.classes == ["n01", "n02"] and len(ds) == 2
    assert [(int(x[0, 4, 4]), y) for x, y in ds] == [(31, 0), (30, 1)]
    tiny = get_dataset(f"tinyimagenet-c:{tmp_path}", corruption="defocus_blur", severity=1)
    assert len(tiny) == 2
    with pytest.raises(FileNotFoundError, match=r"defocus_blur/2 is missing.*<severity 1\.\.5>"):
        get_dataset(f"imagenet-c:{tmp_path}", corruption="defocus_blur", severity=2)
    with pytest.raises(FileNotFoundError, match="fog is missing"):
        get_dataset(f"imagenet-c:{tmp_path}", corruption="fog", severity=1)
    # a severity folder that lacks a class its siblings hold keeps the others' labels, and says so
    _png(tmp_path / "blur" / "defocus_blur" / "1" / "n00" / "x.png", 99, size=(16, 16))
    with pytest.warns(RuntimeWarning, match=r"lacks 1 class folder\(s\) that the other severities .* \(n00\)"):
        ds = get_dataset(f"imagenet-c:{tmp_path}", corruption="defocus_blur", severity=3)
    assert ds.classes == ["n00", "n01", "n02"] and [y for _, y in ds] == [1, 2]
    wnids = tmp_path / "w"  # WordNet ids, but neither 1000 nor 200 of them: the labels are local positions
    _png(wnids / "fog" / "3" / "n01440764" / "a.png", 1, size=(16, 16))
    with pytest.warns(RuntimeWarning, match="1 WordNet-id class folders, not ImageNet's 1000 .* needs classes="):
        get_dataset(f"imagenet-c:{wnids}", corruption="fog", severity=3)


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "rademacher", "blobs"])
def test_noise_sets(kind: str) -> None:
    ds = get_dataset(f"noise:{kind}", n=300, size=(24, 20), seed=3)  # two blocks of 256
    assert isinstance(ds, NoiseDataset) and len(ds) == 300
    x, y = torch.cat([b for b, _ in iter_batches(ds, 64)]), ds.get_batch(slice(0, 5))[1]
    assert x.shape == (300, 3, 24, 20) and x.dtype == torch.uint8 and (y == NO_LABEL).all()
    # the same image whatever batch it comes in; same seed, same set; other seed, other set
    assert torch.equal(ds[257][0], x[257]) and torch.equal(ds.get_batch([299, 0, 256])[0], x[[299, 0, 256]])
    assert torch.equal(get_dataset(f"noise:{kind}", n=300, size=(24, 20), seed=3).get_batch(slice(0, 300))[0], x)
    assert not torch.equal(get_dataset(f"noise:{kind}", n=300, size=(24, 20), seed=4).get_batch(slice(0, 300))[0], x)
    # the values: test_noise_sets_follow_outlier_exposure


def test_registry_errors_and_synthetic() -> None:
    with pytest.raises(ValueError, match="valid kinds: cifar10, cifar100, folder"):
        get_dataset("svhn:/data")
    with pytest.raises(ValueError, match="did you mean 'noise:gaussian'|valid: noise:gaussian"):
        get_dataset("noise:gauss")
    with pytest.raises(TypeError):
        get_dataset(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="root folder"):
        get_dataset("cifar10")
    ds = get_dataset("synthetic:12", split="test", size=32)
    assert len(ds) == 12 and ds[0][0].dtype == torch.uint8
    assert batch_source(ds) is not None  # SyntheticShapes exposes .tensors: fast path


def test_subset_first_n_and_fast_paths(tmp_path: Path) -> None:
    _write_cifar_c(tmp_path)
    ds = get_dataset(f"cifar10-c:{tmp_path}", corruption="fog", severity=2)
    sub = first_n(ds, 5)
    assert len(sub) == 5 and batch_source(sub) is not None
    assert torch.equal(next(iter_batches(sub, 10))[0], ds.get_batch(slice(0, 5))[0])
    r1, r2 = subset(ds, 6, seed=1), subset(ds, 6, seed=1)
    assert r1.indices.tolist() == r2.indices.tolist() and len(set(r1.indices.tolist())) == 6
    assert torch.equal(next(iter_batches(r1, 6))[0], ds.get_batch(r1.indices)[0])
    assert len(first_n(ds, 10**6)) == N
    td = TensorDataset(torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8), torch.arange(9))
    xb, yb = next(iter_batches(Subset(td, [4, 2, 8]), 3))
    assert torch.equal(xb, td.tensors[0][[4, 2, 8]]) and yb.tolist() == [4, 2, 8]

    class Plain(torch.utils.data.Dataset):  # no fast path: goes through the DataLoader collate
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((3, 4, 4), i, dtype=torch.uint8), i

    xs = torch.cat([b for b, _ in iter_batches(Plain(), 2, indices=[4, 0, 3])])
    assert xs[:, 0, 0, 0].tolist() == [4, 0, 3]
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(Plain(), 0))


def test_shared_cifar10_png_tree(cifar10_dir: Path) -> None:
    ds = get_dataset(f"cifar10:{cifar10_dir}")
    assert len(ds) == 10000 and ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    with open(cifar10_dir / "test_order.csv") as f:
        rows = [r for _, r in zip(range(8), csv.DictReader(f))]
    x, y = next(iter_batches(first_n(ds, 8), 8))
    assert y.tolist() == [int(r["label"]) for r in rows] == [3, 8, 8, 0, 6, 6, 1, 6]  # the official test order
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8


@pytest.mark.slow
def test_shared_cifar10_full_read(cifar10_dir: Path) -> None:
    ds = get_dataset(f"cifar10:{cifar10_dir}", in_memory=True)
    assert len(ds) == 10000 and np.bincount(ds.labels).tolist() == [1000] * 10
    train = get_dataset(f"cifar10:{cifar10_dir}", split="train")  # the full training set since 2026-11-29
    assert len(train) == 50000 and np.bincount(train.targets).tolist() == [5000] * 10


def test_dataset_tensors_same_from_items_and_from_the_batch_source() -> None:
    from aprkit.data import dataset_tensors, to_array_dataset
    from aprkit.data.loading import SubsetDataset
    from aprkit.data.synthetic import SyntheticShapes

    base = SyntheticShapes(23, seed=2)

    class Items(torch.utils.data.Dataset):  # no get_batch / tensors: decoded item by item in batches
        def __len__(self) -> int:
            return len(base)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return base[i]

    assert batch_source(base) is not None and batch_source(Items()) is None
    fast, slow = dataset_tensors(SubsetDataset(base, [5, 0, 7])), dataset_tensors(SubsetDataset(Items(), [5, 0, 7]), batch_size=2)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))
    assert fast[0].dtype == torch.uint8 and fast[1].dtype == torch.int64 and fast[1].tolist() == [int(base[i][1]) for i in (5, 0, 7)]
    assert torch.equal(dataset_tensors(to_array_dataset(Items()))[0], base.tensors[0])
    with pytest.raises(ValueError, match="empty"):
        dataset_tensors(SubsetDataset(base, []))


def test_iter_batches_one_contract_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The array fast path and the item-by-item DataLoader path give the same batches for every option."""
    import aprkit.data.loading as L

    x = torch.randint(0, 256, (11, 3, 4, 4), dtype=torch.uint8)
    fast = TensorDataset(x, torch.arange(11, dtype=torch.int32))

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 11

        def __getitem__(self, i):
            return x[i], i

    assert batch_source(fast) is not None and batch_source(Items()) is None
    for ds in (fast, Items()):
        got = list(iter_batches(ds, 4, indices=[9, 2, 5, 7, 0], limit=4, with_indices=True))
        assert [b[2].tolist() for b in got] == [[9, 2, 5, 7]]
        assert torch.equal(got[0][0], x[[9, 2, 5, 7]]) and got[0][1].dtype == torch.int64
        assert [len(b[0]) for b in iter_batches(ds, 4, drop_last=True)] == [4, 4]
        ahead = list(iter_batches(ds, 3, read_ahead=2, with_indices=True))
        assert torch.equal(torch.cat([b[2] for b in ahead]), torch.arange(11))
        with monkeypatch.context() as m:  # rank 1 of 3: a strided share, padded like DistributedSampler
            m.setattr(L, "group_info", lambda: (1, 3))
            idx = torch.cat([b[2] for b in iter_batches(ds, 2, shard=True, with_indices=True)])
            assert idx.tolist() == [1, 4, 7, 10]
            assert len(list(iter_batches(ds, 2))) == 6  # shard=False: every sample
    x0, labels = x.clone(), torch.arange(11)
    for xb, yb in iter_batches(TensorDataset(x, labels), 4):  # a batch never aliases the dataset
        xb.zero_()
        yb.fill_(-1)
    assert torch.equal(x, x0) and torch.equal(labels, torch.arange(11))
    with pytest.raises(ValueError, match="limit must be a positive number of images"):
        next(iter_batches(fast, 2, limit=0))
    with pytest.raises(ValueError, match="the dataset is empty"):
        next(iter_batches(TensorDataset(x[:0], torch.zeros(0)), 2))


def test_iter_batches_size_mismatch_named_from_worker_processes(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", 1, size=(40, 50))
    _png(tmp_path / "b" / "0.jpg", 2, size=(32, 32))
    with pytest.raises(ValueError, match=r"images differ in size \(.*0\.png is 40x50; .*0\.jpg is 32x32\).*resize"):
        next(iter_batches(get_dataset(f"imagefolder:{tmp_path}"), 2, num_workers=1))


def test_cifar_binary_layout_refuses_png_tree_options(tmp_path):
    """resize / crop / transform reach the PNG-tree reader only; on the binary arrays they were silently ignored."""
    from aprkit.data import get_dataset

    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(ValueError, match="crop, resize apply to the PNG-tree layout only"):
        get_dataset(f"cifar10:{tmp_path}", resize=64, crop=56)


def test_class_folders_outside_classes_are_named(tmp_path):
    import numpy as np
    from PIL import Image

    from aprkit.data import ImageFolderDataset

    for c in ("n01", "n02", "n03"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / c / "a.png")
    with pytest.warns(RuntimeWarning, match="1 class folder.*not in classes=.*n03"):
        ds = ImageFolderDataset(tmp_path, classes=["n01", "n02"])
    assert len(ds) == 2


def test_check_matches_clean_refuses_other_classes(tmp_path: Path) -> None:
    """An ImageNet-C severity folder lacking a class reads its later classes with shifted labels: refused (the
    image-count check alone missed it under a limit)."""
    from aprkit.data.corrupted import check_matches_clean

    for wnid in ("n01", "n02", "n03"):
        _png(tmp_path / "clean" / wnid / "x.png", 40)
        if wnid != "n01":
            _png(tmp_path / "fog" / "2" / wnid / "x.png", 41)
            _png(tmp_path / "fog" / "2" / wnid / "y.png", 42)
    clean = get_dataset(f"folder:{tmp_path / 'clean'}")
    corrupted = get_dataset(f"folder:{tmp_path / 'fog' / '2'}")
    with pytest.raises(ValueError, match="missing n01"):
        check_matches_clean(corrupted, clean, limit=2)
    check_matches_clean(clean, clean)


def test_indices_must_be_integer_positions_and_any_slice_works() -> None:
    """A boolean mask is refused (it was read as positions 0/1), and slices with other steps give their images (a
    reversed slice gave an empty batch)."""
    from aprkit.data.loading import SubsetDataset

    ds = ArrayDataset(np.arange(5 * 3 * 2 * 2, dtype=np.uint8).reshape(5, 3, 2, 2), np.arange(10, 15), layout="nchw")
    mask = torch.tensor([False, True, False, True, False])
    for bad in (mask, mask.numpy(), np.array([0.5, 1.5])):
        with pytest.raises(TypeError, match="integer positions"):
            next(iter_batches(ds, 2, indices=bad))
        with pytest.raises(TypeError, match="integer positions"):
            SubsetDataset(ds, bad)
    assert ds.get_batch(slice(None, None, -1))[1].tolist() == [14, 13, 12, 11, 10]
    assert ds.get_batch(slice(3, None, -1))[1].tolist() == [13, 12, 11, 10]
    assert ds.get_batch(slice(0, 5, 2))[1].tolist() == [10, 12, 14]
    assert ds.get_batch(slice(4, 2))[1].tolist() == []
    assert [y.tolist() for _, y in iter_batches(ds, 2, indices=mask.nonzero().squeeze(1))] == [[11, 13]]


def test_limit_on_a_class_sorted_folder_warns(tmp_path: Path) -> None:
    """limit means "the first N images": on an image folder (class by class) it takes the first classes only."""
    from aprkit.eval.engine.suite_data import warn_if_limit_takes_few_classes

    for cls in ("a", "b", "c"):
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", 10 + i)
    with pytest.warns(RuntimeWarning, match="cover 1 of its 3 classes"):
        warn_if_limit_takes_few_classes(f"folder:{tmp_path}", 3, ["calibration"])
    with pytest.warns(RuntimeWarning, match="cover 1 of its 3 classes"):
        warn_if_limit_takes_few_classes(f"folder:{tmp_path}", 3, ["transplant", "calibration"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_limit_takes_few_classes(f"folder:{tmp_path}", 9, ["calibration"])  # all of it
        warn_if_limit_takes_few_classes(f"folder:{tmp_path}", None, ["calibration"])
        warn_if_limit_takes_few_classes(f"folder:{tmp_path}", 3, ["transplant"])  # spreads its images
        warn_if_limit_takes_few_classes(f"folder:{tmp_path}", 3, ["cue-conflict"])  # reads no limit
        shuffled_ = ArrayDataset(np.zeros((6, 3, 2, 2), np.uint8), np.array([0, 1, 2, 0, 1, 2]), layout="nchw")
        per_suite = {"transplant": f"folder:{tmp_path}", "default": shuffled_}  # the folder only for transplant
        warn_if_limit_takes_few_classes(per_suite, 3, ["calibration", "transplant"])
        shuffled = ArrayDataset(np.zeros((6, 3, 2, 2), np.uint8), np.array([0, 1, 2, 0, 1, 2]), layout="nchw")
        warn_if_limit_takes_few_classes(shuffled, 3, ["calibration"])


def test_noise_sets_follow_outlier_exposure() -> None:
    """Outlier Exposure's synthetic outliers as its networks saw them: values v in [-1, 1] fed as CIFAR mean/std
    normalised input, so the pixels are OE_MEAN + OE_STD * v (NOISE_VERSION 2 mapped v to (v + 1) / 2, twice the
    contrast, blobs on black). Gaussian v ~ N(0, 0.5^2) clipped; blobs blurred across the channel axis too
    (correlated channels; the per-channel blur left them independent)."""
    from aprkit.data.noise import OE_MEAN, OE_STD, noise_images

    mean, std = (torch.tensor(t, dtype=torch.float64).view(1, 3, 1, 1) for t in (OE_MEAN, OE_STD))
    g = torch.Generator().manual_seed(0)
    v = {k: (noise_images(k, 200, generator=g).double() / 255 - mean) / std for k in
         ("gaussian", "uniform", "rademacher", "blobs")}
    half_level = 0.5 / 255 / std.min().item()  # uint8 rounding, in v units
    for k, x in v.items():
        assert x.min() >= -1 - half_level and x.max() <= 1 + half_level, k
    assert abs(v["gaussian"].std().item() - 0.47) < 0.01 and (v["gaussian"].abs() > 1 - half_level).float().mean() < 0.06
    assert abs(v["uniform"].mean().item()) < 0.01 and abs(v["uniform"].std().item() - 3 ** -0.5) < 0.01
    assert (v["rademacher"].abs() - 1).abs().max() <= half_level and abs(v["rademacher"].mean().item()) < 0.02
    blobs = v["blobs"]
    assert abs((blobs > -1 + half_level).float().mean().item() - 0.208) < 0.01  # background: v = -1, pixel = mean - std
    c = blobs.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    assert np.corrcoef(c[:, 0], c[:, 1])[0, 1] > 0.5
    grey = noise_images("rademacher", 4, channels=1, generator=g)
    assert set(grey.unique().tolist()) == {round(255 * (sum(OE_MEAN) - sum(OE_STD)) / 3),
                                           round(255 * (sum(OE_MEAN) + sum(OE_STD)) / 3)}


def test_order_csv_and_subset_checks(tmp_path: Path) -> None:
    """A cut or duplicated order, a path outside its class folder and a gap in CIFAR-100 labels are refused; aprkit's
    SubsetDataset exposes its labels (the -C pairing check had skipped it); the cached PNG batch refuses a mask."""
    from aprkit.data import subset
    from aprkit.data.loading import attribute_labels

    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "test" / cls / "x.png", 60 + i)
    bad = {"dup": "index,label,class,path\n0,3,cat,test/cat/x.png\n0,5,dog,test/dog/x.png\n",
           "folder": "index,label,class,path\n0,3,cat,test/dog/x.png\n1,5,dog,test/cat/x.png\n",
           # no class column: CIFAR-10's official folder names are still checked against the labels
           "no class": "index,label,path\n0,0,test/cat/x.png\n1,1,test/dog/x.png\n",
           "columns": "index,lbl,path\n0,3,test/cat/x.png\n"}
    matches = ["0 .. 1 once each", "lies in the folder of class 'dog'",
               r"test/cat/x\.png\) lies in the folder of class 'cat' but is labelled 'airplane'",
               r"columns index,label,path \(and optionally class\); found \['index', 'lbl', 'path'\]"]
    for text, match in zip(bad.values(), matches, strict=True):
        (tmp_path / "test_order.csv").write_text(text)
        with pytest.raises(ValueError, match=match):
            get_dataset(f"cifar10:{tmp_path}")
    # a spreadsheet's byte-order mark and spaces after the commas are read as the plain header
    (tmp_path / "test_order.csv").write_text("\ufeffindex, label, class, path\n0, 3, cat, test/cat/x.png\n"
                                             "1, 5, dog, test/dog/x.png\n", encoding="utf-8")
    assert [y for _, y in get_dataset(f"cifar10:{tmp_path}")] == [3, 5]
    (tmp_path / "test_order.csv").write_text("index,label,class,path\n0,0,cat,test/cat/x.png\n1,2,dog,test/dog/x.png\n")
    with pytest.raises(ValueError, match="names CIFAR-10 classes"):
        get_dataset(f"cifar100:{tmp_path}")
    (tmp_path / "test_order.csv").write_text("index,label,class,path\n0,0,apple,test/cat/x.png\n1,2,bear,test/dog/x.png\n")
    with pytest.raises(ValueError, match=r"\[\(2, 'bear'\)\] that are not CIFAR-100's \['apple', 'aquarium_fish'"):
        get_dataset(f"cifar100:{tmp_path}")
    (tmp_path / "test_order.csv").unlink()
    ds = get_dataset(f"cifar10:{tmp_path}")
    assert attribute_labels(subset(ds, [1])).tolist() == [5]
    with pytest.raises(TypeError, match="integer positions"):
        ds.get_batch(torch.tensor([False, True]))
    assert ds.get_batch([-1])[1].tolist() == [5]  # negative positions count from the end, as elsewhere
    flat = tmp_path / "flat"
    _png(flat / "test" / "a.png", 1)
    (flat / "test_order.csv").write_text("index,label,class,path\n0,3,cat,test/a.png\n")
    assert [y for _, y in get_dataset(f"cifar10:{flat}")] == [3]  # a flat layout with a class column loads


def test_synthetic_sizes_and_classes_and_archives_kept_on_disk_errors(tmp_path: Path, monkeypatch) -> None:
    import errno

    import aprkit.data.sources as sources
    from aprkit.data.synthetic import SyntheticShapes

    with pytest.raises(ValueError, match="positive int"):
        SyntheticShapes(0)
    assert len(SyntheticShapes(8, num_classes=3).classes) == 3
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK")

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources, "extract_archive", full_disk)
    with pytest.raises(OSError, match="No space left"):
        sources._extract_or_discard(archive, None, False, tmp_path / "out", "x", False)
    assert archive.is_file()  # a full disk is no reason to download it again


def test_a_corrupt_gzip_archive_is_discarded(tmp_path: Path, monkeypatch) -> None:
    import gzip

    import aprkit.data.sources as sources

    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x")

    def bad_crc(*a, **k):
        raise gzip.BadGzipFile("CRC check failed")

    monkeypatch.setattr(sources, "extract_archive", bad_crc)
    with pytest.raises(ValueError, match="could not be extracted"):
        sources._extract_or_discard(archive, None, False, tmp_path / "out", "x", False)
    assert not archive.exists()


def test_order_csv_cells_paths_and_cuts_are_named(tmp_path: Path) -> None:
    """A label '3.0' failed as a bare int() error, a listed PNG that does not exist only when read, and a cut order
    file evaluated a subset silently; an image listed twice was evaluated twice."""
    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "test" / cls / "x.png", 60 + i)
    cases = {"index,label,class,path\n0,3.0,cat,test/cat/x.png\n1,5,dog,test/dog/x.png\n":
             (ValueError, r"test_order\.csv, row 2: the label column must hold a whole number >= 0, got '3\.0'"),
             "index,label,class,path\n0,3,cat,test/cat/x.png\n1,5,dog,test/dog/y.png\n":
             (FileNotFoundError, r"lists 1 image\(s\) that do not exist, e\.g\. .*test/dog/y\.png"),
             "index,label,class,path\n0,3,cat,test/cat/x.png\n":
             (ValueError, r"lists 1 images but .*test holds 1 more PNGs that it does not list: a cut order file"),
             "index,label,class,path\n0,3,cat,test/cat/x.png\n1,5,dog,test/dog/x.png\n2,3,cat,test/./cat/x.png\n":
             (ValueError, r"lists .*test/cat/x\.png twice \(indices 0 and 2\); expected each image once")}
    for text, (kind, match) in cases.items():
        (tmp_path / "test_order.csv").write_text(text)
        with pytest.raises(kind, match=match):
            get_dataset(f"cifar10:{tmp_path}")


def test_folders_skip_hidden_files_and_refuse_a_lone_split_folder(tmp_path: Path) -> None:
    """macOS '._x.png' files failed to decode and '.ipynb_checkpoints' copies duplicated images; a root holding only
    test/ was read as a one-class data set labelled 'test'."""
    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "t" / cls / "x.png", 60 + i)
    (tmp_path / "t" / "cat" / "._x.png").write_bytes(b"\x00\x05\x16\x07")  # an AppleDouble file, not a PNG
    _png(tmp_path / "t" / "cat" / ".ipynb_checkpoints" / "x-checkpoint.png", 60)
    ds = get_dataset(f"folder:{tmp_path / 't'}")
    assert len(ds) == 2 and [y for _, y in ds] == [0, 1]
    (tmp_path / "lone" / "test").mkdir(parents=True)
    (tmp_path / "t").rename(tmp_path / "lone" / "test" / "inner")
    with pytest.raises(ValueError, match=r"holds the split folders \['test'\], not class folders"):
        get_dataset(f"folder:{tmp_path / 'lone'}")


def test_in_memory_refuses_a_transform_and_labels_must_be_integers(tmp_path: Path) -> None:
    from aprkit.eval.engine.datasets import TensorImageDataset

    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "test" / cls / "x.png", 60 + i)
    with pytest.raises(ValueError, match="in_memory=True .* would freeze the"):
        get_dataset(f"cifar10:{tmp_path}", in_memory=True, transform=lambda x: x)
    x = np.zeros((3, 4, 4, 3), np.uint8)
    assert ArrayDataset(x, np.array([0.0, 1.0, 2.0])).labels.tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="integer class indices, got torch.float64 values such as 1.5"):
        ArrayDataset(x, np.array([0.0, 1.5, 2.0]))
    with pytest.raises(TypeError, match="integer class indices"):
        TensorImageDataset(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([0.5, 1.0, 2.0]))


def test_tensor_dataset_batches_are_copies() -> None:
    """A slice of TensorImageDataset returned views: writing into a batch changed the images and labels."""
    from aprkit.eval.engine.datasets import TensorImageDataset

    images, labels = torch.arange(10 * 3 * 4, dtype=torch.uint8).reshape(10, 3, 2, 2), torch.arange(10)
    ds = TensorImageDataset(images.clone(), labels.clone())
    for x, y in iter_batches(ds, 4):
        x.zero_()
        y.fill_(99)
    assert torch.equal(ds.images, images) and torch.equal(ds.labels, labels)


def test_synthetic_spec_and_n_keyword_cannot_disagree() -> None:
    with pytest.raises(ValueError, match=r"'synthetic:20' and n=50 name two image counts"):
        get_dataset("synthetic:20", n=50)
    assert len(get_dataset("synthetic:20", n=20)) == 20


def test_hidden_files_do_not_count_as_unlisted_pngs(tmp_path: Path) -> None:
    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "test" / cls / "x.png", 60 + i)
    (tmp_path / "test_order.csv").write_text("index,label,class,path\n0,3,cat,test/cat/x.png\n1,5,dog,test/dog/x.png\n")
    (tmp_path / "test" / "cat" / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    _png(tmp_path / "test" / "dog" / ".ipynb_checkpoints" / "x-checkpoint.png", 61)
    assert [y for _, y in get_dataset(f"cifar10:{tmp_path}")] == [3, 5]


def test_non_finite_or_text_labels_are_refused() -> None:
    x = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(TypeError, match="values such as inf"):
        ArrayDataset(x, np.array([0.0, np.inf]))
    with pytest.raises(TypeError, match="integer class indices, got"):
        ArrayDataset(x, np.array(["cat", "dog"]))


def test_a_cut_order_file_is_refused_also_with_linked_class_folders(tmp_path: Path) -> None:
    """Class folders that are symbolic links (a common way to share a data set) counted no PNGs, so a cut order file
    evaluated a subset silently."""
    for i, cls in enumerate(["cat", "dog"]):
        _png(tmp_path / "real" / cls / "x.png", 60 + i)
        (tmp_path / "tree" / "test").mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / "test" / cls).symlink_to(tmp_path / "real" / cls, target_is_directory=True)
    (tmp_path / "tree" / "test_order.csv").write_text("index,label,class,path\n0,3,cat,test/cat/x.png\n")
    with pytest.raises(ValueError, match=r"holds 1 more PNGs that it does not list"):
        get_dataset(f"cifar10:{tmp_path / 'tree'}")
    (tmp_path / "tree" / "test_order.csv").write_text(
        "index,label,class,path\n0,3,cat,test/cat/x.png\n1,5,dog,test/dog/x.png\n")
    assert [y for _, y in get_dataset(f"cifar10:{tmp_path / 'tree'}")] == [3, 5]


def test_a_class_folder_linked_to_another_class_is_refused(tmp_path: Path) -> None:
    """``cat -> dog`` read dog's images under both labels."""
    from aprkit.data.folder import scan_image_folder

    _png(tmp_path / "dog" / "x.png", 60)
    (tmp_path / "cat").symlink_to(tmp_path / "dog", target_is_directory=True)
    with pytest.raises(ValueError, match="class folders 'cat' and 'dog' of .* are one folder"):
        scan_image_folder(tmp_path)


def test_an_array_in_the_other_layout_is_refused_naming_it():
    """An (N, C, H, W) array read as NHWC had 32 'channels' of width 3 and failed only in the model."""
    from aprkit.eval.engine.datasets import TensorImageDataset

    nchw = np.zeros((4, 3, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="pass layout='nchw'"):
        ArrayDataset(nchw, np.zeros(4, int))
    with pytest.raises(ValueError, match="pass layout='nhwc'"):
        ArrayDataset(nchw.transpose(0, 2, 3, 1), np.zeros(4, int), layout="nchw")
    assert ArrayDataset(nchw, np.zeros(4, int), layout="nchw").image_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="permute"):
        TensorImageDataset(torch.from_numpy(nchw.transpose(0, 2, 3, 1)))


def test_pinned_batches_without_an_accelerator_warn_on_every_path():
    """pin_memory=True without CUDA: the array fast path raised 'no NVIDIA driver' where the DataLoader path warned."""
    if torch.accelerator.is_available():
        pytest.skip("needs a machine without an accelerator")
    ds = ArrayDataset(np.zeros((6, 8, 8, 3), np.uint8), np.arange(6))
    for workers in (0, 1):
        with pytest.warns(UserWarning, match="pin_memory"):
            batches = list(iter_batches(ds, batch_size=4, pin_memory=True, num_workers=workers))
        assert [len(b[0]) for b in batches] == [4, 2]


def test_float_images_are_refused_not_clipped(tmp_path):
    """A 32-bit float TIFF came out black (Pillow's conversion clips 0-1 floats to 0 or 1)."""
    from aprkit.data.folder import read_image

    Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif: 32-bit floating-point images \(PIL mode 'F'\) are not read"):
        read_image(tmp_path / "f.tif")


def test_folder_reader_messages(tmp_path):
    """Duplicate classes= names are refused (the last index won); images lying directly in the root are named; an
    empty class folder, which still counts as a class, is warned about."""
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(FileNotFoundError, match="1 image\\(s\\) lie directly in it: move them into class subfolders$"):
        ImageFolderDataset(tmp_path / "flat")
    (tmp_path / "ilsvrc").mkdir()  # the official validation tarball: 50,000 files in one folder, labels elsewhere
    Image.new("RGB", (8, 8)).save(tmp_path / "ilsvrc" / "ILSVRC2012_val_00000001.JPEG", "JPEG")
    with pytest.raises(FileNotFoundError, match=r"one folder per wnid, by the devkit's ground truth.*ILSVRC2012_ID"):
        ImageFolderDataset(tmp_path / "ilsvrc")
    for c in ("a", "b"):
        (tmp_path / "tree" / c).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "tree" / "a" / "x.png")
    with pytest.warns(RuntimeWarning, match="hold no images but count as classes: b"):
        assert ImageFolderDataset(tmp_path / "tree").classes == ["a", "b"]
    with pytest.raises(ValueError, match="'a' more than once"):
        ImageFolderDataset(tmp_path / "tree", classes=["a", "b", "a"])


def test_small_argument_types():
    ds = NoiseDataset("gaussian", n=np.int64(5))
    assert len(ds) == 5 and len(get_dataset("noise:GAUSSIAN", n=3)) == 3
    with pytest.raises(ValueError, match="limit must be a positive number of images, got 2.5"):
        next(iter_batches(ds, batch_size=2, limit=2.5))


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}, r"expected the entries 'data' and 'labels'"),
    ({b"data": np.zeros((2, 300), np.uint8), b"labels": [0, 1]}, r"600 pixel values and 2 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels in \[0, 10\], outside the 10 classes"),
    ([1, 2], r"found list"),
])
def test_a_damaged_or_foreign_cifar_batch_is_named(tmp_path: Path, batch, message) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(ValueError, match=r"test_batch (is not a cifar10 batch|holds)") as err:
        get_dataset(f"cifar10:{tmp_path}")
    assert re.search(message, str(err.value)), err.value


def test_iter_batches_reports_dataset_indices_and_names_bad_positions(tmp_path):
    """with_indices gave -1 for indices=[-1, 0] (not the dataset index 9), indices=[] yielded nothing silently and an
    out-of-range position on a folder was a bare 'list index out of range'; 'imagefolder:' had another cache key than
    'folder:' for the same images."""
    from PIL import Image

    from aprkit.data import get_dataset, iter_batches
    from aprkit.eval.engine.datasets import dataset_id

    ds = get_dataset("synthetic:10", "train")
    (_, _, idx), = list(iter_batches(ds, 4, indices=[-1, 0], with_indices=True))
    assert idx.tolist() == [9, 0]
    with pytest.raises(ValueError, match="indices is empty"):
        next(iter(iter_batches(ds, 4, indices=[])))
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / c / "x.png")
    with pytest.raises(IndexError, match=r"indices holds 5, outside the dataset's 2 images"):
        next(iter(iter_batches(get_dataset(f"folder:{tmp_path}"), 4, indices=[0, 5])))
    assert dataset_id(f"imagefolder:{tmp_path}") == dataset_id(f"folder:{tmp_path}")


def test_a_kind_alias_is_resolved_and_fetched_as_its_kind(tmp_path):
    """After aliases moved into parse_spec, `aprkit eval --download` read 'tiny-imagenet-c:' by its text and left it
    unresolved (not fetched) while 'tinyimagenet-c:' was."""
    from aprkit.cli.eval import _resolve_sources

    for kind in ("tinyimagenet-c", "tiny-imagenet-c"):
        with pytest.raises(FileNotFoundError, match="tinyimagenet-c not found at"):
            _resolve_sources({"corrupted": kind}, False, str(tmp_path))


def test_path_state_sees_a_folder_also_reached_through_a_link_and_stops_at_loops(tmp_path):
    """Entering each real folder once let a link (b/x -> a) reached first shadow the real a, whose deep files then
    went unhashed; links back up to a folder they lie in are loops and are cut."""
    import os

    from aprkit._hash import path_state

    deep = tmp_path / "a" / "s1" / "s2" / "img.png"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"1")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").symlink_to(tmp_path / "a")
    (tmp_path / "b" / "up").symlink_to(tmp_path)
    before = path_state(tmp_path, depth=4)
    deep.write_bytes(b"2")
    os.utime(deep, ns=(5, 5))
    os.utime(deep.parent, ns=(1, 1))
    assert path_state(tmp_path, depth=4) != before


def test_path_state_is_the_same_for_copies_that_keep_sizes_and_times(tmp_path):
    """The nodes of a torchrun run that each staged the data (cp -p, rsync -a) must agree on every cache key: the
    state reads names, sizes and modification times only (status-change times differ between such copies)."""
    import shutil

    from aprkit._hash import path_state

    src = tmp_path / "src" / "test" / "cat"
    src.mkdir(parents=True)
    (src / "0.png").write_bytes(b"png")
    for node in ("a", "b"):
        shutil.copytree(tmp_path / "src", tmp_path / node / "data", copy_function=shutil.copy2)
        for d in [tmp_path / node / "data", tmp_path / node / "data" / "test", tmp_path / node / "data" / "test" / "cat"]:
            shutil.copystat(tmp_path / "src" / d.relative_to(tmp_path / node / "data"), d)
    assert path_state(tmp_path / "a" / "data", depth=3) == path_state(tmp_path / "b" / "data", depth=3)


def test_cifar_batch_pickled_with_str_keys(tmp_path: Path) -> None:
    """A CIFAR batch pickled again under Python 3 has str keys: it was refused with "expected the entries 'data' and
    'labels', found ['data', 'labels']" (tester), where torchvision reads it."""
    from aprkit.data import get_dataset

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(2).integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": [3, 1, 4, 1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list("abcdefghij")}, f)
    ds = get_dataset(f"cifar10:{tmp_path}")
    assert len(ds) == 4 and ds[2][1] == 4 and torch.equal(ds[2][0], torch.from_numpy(data[2].reshape(3, 32, 32)))


def test_evaluate_refuses_datasets_of_pil_images_and_fractional_tensor_labels(tmp_path: Path) -> None:
    """Tester: a torchvision ImageFolder without a transform (PIL images) failed in every suite with an unrelated
    error ('Image' object has no attribute 'shape'); a TensorDataset's labels 0.7 were truncated to 0 and scored,
    where the (images, labels) pair refuses them."""
    from torchvision.datasets import ImageFolder

    from aprkit.eval import evaluate
    from aprkit.models import create_model

    for cls in ("a", "b"):
        _png(tmp_path / cls / "x.png", 40)
    model = create_model("small_cnn", num_classes=2)
    kw = dict(suite="calibration", corruptions="none", progress=False, report=False)
    with pytest.raises(TypeError, match="PIL.*PILToTensor"):
        evaluate(model, data=ImageFolder(str(tmp_path)), **kw)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(TypeError, match="integer class indices"):
        evaluate(model, data=TensorDataset(x, torch.tensor([0.7, 1.0, 0.0, 1.0])), **kw)


def test_a_split_outside_train_and_test_is_refused_for_every_kind() -> None:
    """folder:, noise: and the other kinds without splits took any split, 'bogus' too (reviewer); they still read the
    same images for 'train' and 'test', as get_dataset's docstring now says."""
    from aprkit.data import get_dataset, has_splits

    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'bogus' \(noise: reads the same images"):
        get_dataset("noise:gaussian", "bogus", n=4)
    assert not has_splits("noise:gaussian")
    a, b = get_dataset("noise:gaussian", "train", n=4), get_dataset("noise:gaussian", "test", n=4)
    assert torch.equal(a[0][0], b[0][0])
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        get_dataset("synthetic:8", "val")
