"""CIFAR-10 / CIFAR-100 readers: torchvision's pickled batches or a class-folder PNG tree.

Two layouts are recognised under ``root``:

- torchvision's binary layout ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` or
  ``root/cifar-100-python/{train,test}`` (``download=True`` fetches the published archive, see
  :mod:`aprkit.data.sources`);
  read into an in-memory :class:`~aprkit.data.arrays.ArrayDataset` (the fast batch path);
- a PNG tree ``root/{train,test}/<class>/*.png`` (e.g. ``../shared/data/cifar10``), in the official order
  given by ``root/<split>_order.csv`` (columns ``index,label,class,path``) when present, else class-folder
  order. PNGs are decoded once and cached on first read (``cache=True``, the default without a
  ``transform``), so later passes take the fast batch path; ``in_memory=True`` decodes everything up
  front into an ArrayDataset.
"""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .arrays import ArrayDataset
from .download import DownloadError
from .folder import ImageFolderDataset, ImageListDataset, find_classes, image_files
from .sources import CIFAR_BINARY, SOURCES, ensure_source

__all__ = ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "cifar_dataset"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: CIFAR-100's fine labels, the published ``fine_label_names`` in label order (alphabetical)
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
_OFFICIAL = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
_TITLE = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}



def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise ValueError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}; truncated or corrupted?): "
                         f"delete {path.parent} and download it again (--download), or restore the file") from None
    # a batch pickled again under Python 3 has str keys (and str class names): read as the original's bytes keys
    return {k.encode() if isinstance(k, str) else k: v for k, v in d.items()} if isinstance(d, dict) else d


def _batch_arrays(d: Any, path: Path, name: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels ``(N,)`` of one unpickled batch, checked: a batch of another dataset or a
    damaged one is named, not reshaped into a wrong error (or wrong labels)."""
    redo = f"delete {path.parent} and download it again (--download), or restore the file"
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        keys = sorted(k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in d) \
            if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{path} is not a {name} batch: expected the entries 'data' and {label_key.decode()!r}, "
                         f"found {keys}; {redo}")
    data, labels = np.asarray(d[b"data"]), np.asarray(d[label_key])
    # the published batches hold uint8 (N, 3072) in CHW order and integer labels: anything else would be cast and
    # reshaped into wrong images (floats in [0, 1] black, int16 wrapped) or labels (1.7 read as 1) without a word
    if data.dtype.kind in "iu" and data.dtype != np.uint8 and data.size and 0 <= data.min() and data.max() <= 255:
        data = data.astype(np.uint8)  # 8-bit values held in a wider integer type (a list of ints pickled)
    if data.dtype != np.uint8:
        raise ValueError(f"{path} holds data of {data.dtype} {data.shape}; a {name} batch holds uint8 (N, 3072) "
                         f"rows in channel-major order; {redo}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path} holds {labels.dtype} labels; a {name} batch holds integer labels; {redo}")
    labels = labels.astype(np.int64)
    if data.size % (3 * 32 * 32) or data.size // (3 * 32 * 32) != labels.size:
        raise ValueError(f"{path} holds {data.size} pixel values and {labels.size} labels; a {name} batch holds "
                         f"3x32x32 values per label; {redo}")
    if data.ndim not in (2, 4) or data.shape[1:] not in ((3072,), (3, 32, 32)):
        hint = " (an NHWC array such as torchvision's CIFAR10(...).data: transpose it to (N, 3, 32, 32))" \
            if data.shape[1:] == (32, 32, 3) else ""
        raise ValueError(f"{path} holds data of shape {data.shape}; a {name} batch holds uint8 (N, 3072) rows in "
                         f"channel-major order{hint}; {redo}")
    k = 10 if name == "cifar10" else 100
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"{path} holds labels in [{labels.min()}, {labels.max()}], outside the {k} classes of "
                         f"{name}; {redo}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_binary(folder: Path, name: str, split: str) -> ArrayDataset:
    _, files, label_key, meta_file, names_key = CIFAR_BINARY[name]
    images, labels = [], []
    for fname in files[split]:
        path = folder / fname
        if not path.is_file():
            layout = f"{folder}/{{{','.join(files['train'] + files['test'])}}}"
            raise FileNotFoundError(f"{path} is missing; expected torchvision's {name} layout {layout}")
        x, y = _batch_arrays(_unpickle(path), path, name, label_key)
        images.append(x)
        labels.append(y)
    classes = None
    if (folder / meta_file).is_file():
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _unpickle(folder / meta_file)[names_key]]
        k = 10 if name == "cifar10" else 100
        if len(classes) != k:  # it names the dataset's classes: another count is a damaged or foreign file
            raise ValueError(f"{folder / meta_file} names {len(classes)} classes; {name} has {k}; delete {folder} "
                             "and download it again (--download), or restore the file")
    return ArrayDataset(np.concatenate(images), np.concatenate(labels), layout="nchw", classes=classes)


def _csv_classes(order: Path, rows: list[dict[str, str]], name: str) -> list[str]:
    """The official class names by label (``classes[label]``), once the order CSV's labels (and class names, where it
    has that column) are the official ones and each image lies outside the folders of the other classes."""
    names: dict[int, str] = {}
    for r in rows:
        label = int(r["label"])
        cls = r.get("class") or str(label)
        if names.setdefault(label, cls) != cls:
            raise ValueError(f"{order}: label {label} is named both {names[label]!r} and {cls!r}")
    official = _OFFICIAL[name]  # also for a subset of the classes (as for class folders)
    wrong = [(i, c) for i, c in sorted(names.items())
             if not 0 <= i < len(official) or ("class" in rows[0] and official[i] != c)]
    cifar10 = sorted({c for _, c in wrong} & set(CIFAR10_CLASSES)) if name == "cifar100" else []
    if cifar10:
        raise ValueError(f"{order} names CIFAR-10 classes ({', '.join(cifar10)}), not CIFAR-100's: read this tree "
                         "with cifar10:")
    if wrong:
        shown = list(official) if len(official) <= 10 else f"{list(official[:5])} ..."
        raise ValueError(f"{order} gives labels and classes {wrong[:3]} that are not {_TITLE[name]}'s {shown} "
                         "(label i is the i-th official name)")
    for r in rows:  # a path in the folder of another class (flat or numbered folders are fine)
        parent, cls = Path(r["path"]).parent.name, official[int(r["label"])]
        if parent in official and parent != cls:
            raise ValueError(f"{order}: image {r['index']} ({r['path']}) lies in the folder of class {parent!r} but is "
                             f"labelled {cls!r}")
    return list(official)


def _check_size(ds: ImageListDataset, name: str, kw: dict[str, Any]) -> ImageListDataset:
    """A tree of another size is not CIFAR (a 64 px tree was read as ``cifar10:`` and fed to a 32 px model): its
    first image must be 32x32, unless ``resize`` / ``crop`` / ``transform`` bring it to a size (the cache refuses
    mixed sizes later)."""
    if ds.samples and all(kw.get(k) is None for k in ("resize", "crop", "transform")):
        size = tuple(ds[0][0].shape[-2:])
        if size != (32, 32):
            raise ValueError(f"{ds.samples[0][0]} is {size[1]}x{size[0]}; {name} images are 32x32: read this tree "
                             "with folder: (another dataset), or pass resize= / crop= (or a transform) to bring it "
                             "to 32x32")
    return ds


def _read_png_tree(root: Path, split: str, name: str, **kw) -> ImageListDataset:
    """The PNG tree's ``split``. Its labels must be the dataset's: class folders (or the CSV's class column) must
    carry the official names, each at its official label (PyTorch's tutorial ``plane``/``car`` folders sorted into
    other labels, and a model trained on the official ones silently scored 31 % instead of 93 %; CIFAR-100 folders
    ``0`` .. ``99`` sort as 0, 1, 10, ...); a tree of some of the classes keeps their official labels."""
    kw.setdefault("cache", kw.get("transform") is None)
    order = root / f"{split}_order.csv"
    if order.is_file():
        with open(order, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f, skipinitialspace=True)
            if reader.fieldnames is not None:
                reader.fieldnames = [c.strip() for c in reader.fieldnames]
            rows = list(reader)
        if not rows or not {"index", "label", "path"} <= set(rows[0]):
            raise ValueError(f"{order} must have columns index,label,path (and optionally class); found "
                             f"{list(rows[0]) if rows else 'no rows'}")
        for i, r in enumerate(rows):  # whole numbers, named by file and row (int() said only "invalid literal")
            for key in ("index", "label"):
                cell = (r.get(key) or "").strip()
                if not cell.isdigit():
                    raise ValueError(f"{order}, row {i + 2}: the {key} column must hold a whole number >= 0, got "
                                     f"{r.get(key)!r}")
        rows.sort(key=lambda r: int(r["index"]))
        if [int(r["index"]) for r in rows] != list(range(len(rows))):  # a duplicated or gapped order
            raise ValueError(f"{order}: the index column must hold 0 .. {len(rows) - 1} once each (the official "
                             "order of every image)")
        samples = [(root / r["path"], int(r["label"])) for r in rows]
        missing = [str(p) for p, _ in samples if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{order} lists {len(missing)} image(s) that do not exist, e.g. {missing[0]}; "
                                    f"expected every path relative to {root} ({root}/{split}/<class>/<name>.png)")
        listed: dict[str, int] = {}
        for n, (p, _) in enumerate(samples):  # one image listed twice would be evaluated twice
            first = listed.setdefault(os.path.normpath(p), n)
            if first != n:
                raise ValueError(f"{order} lists {p} twice (indices {first} and {n}); expected each image once")
        pngs = set(image_files(root / split, (".png",)))  # linked class folders entered too
        unlisted = sum(1 for p in pngs if os.path.normpath(p) not in listed)
        if unlisted:  # a cut order file would evaluate a subset silently (a subset is limit= or subset())
            raise ValueError(f"{order} lists {len(rows)} images but {root / split} holds {unlisted} more PNGs that it "
                             "does not list: a cut order file? Use the full official order (limit= or "
                             "aprkit.data.subset for a subset)")
        classes = _csv_classes(order, rows, name)
        return _check_size(ImageListDataset(samples, classes=classes, **kw), name, kw)
    found = find_classes(root / split)
    official = _OFFICIAL[name]
    odd = [c for c in found if c not in official]
    if odd:  # numbered folders sort 0, 1, 10, 11, ...: their string order is not the label order
        raise ValueError(f"class folders {odd[:5]}{' ...' if len(odd) > 5 else ''} under {root / split} are not "
                         f"{_TITLE[name]} classes ({list(official[:5])} ...): rename them to the official names, give "
                         f"an order file {order.name} with each image's label, or read a custom tree with folder:")
    # the official labels, also for a subset of the classes
    return _check_size(ImageFolderDataset(root / split, classes=official, **kw), name, kw)


def _download(name: str, binary: Path, progress: bool) -> None:
    """The published archive of ``name`` downloaded (resumable, checksummed: :func:`aprkit.data.sources.ensure_source`)
    and extracted into ``binary``; parallel calls take turns, and each returns once the folder is whole."""
    try:
        ensure_source(SOURCES[name], binary, download=True, progress=progress)
    except DownloadError as e:
        raise DownloadError(f"{e}. Or extract {SOURCES[name].files[0].name} by hand into {binary.parent} (giving "
                            f"{binary}), or point at a PNG tree {binary.parent}/{{train,test}}/<class>") from e


def cifar_dataset(root: str | Path, name: str = "cifar10", split: str = "test", *, download: bool = False,
                  progress: bool = True, in_memory: bool = False, **kw) -> Dataset:
    """CIFAR-10/100 ``split`` (``"train"``/``"test"``) from ``root`` in either layout (see module docstring).

    ``download=True`` fetches the binary layout when ``root`` holds neither the PNG tree's ``split`` folder nor the
    binary files of ``split`` (``progress``: a bar).

    Extra keywords (``transform``, ``resize``, ``crop``) go to the PNG-tree reader.
    """
    if name not in CIFAR_BINARY:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' for {name}, got {split!r}")
    if "classes" in kw:  # the class list is the dataset's own (its labels are fixed)
        raise ValueError(f"{name} has its own classes (labels 0..{9 if name == 'cifar10' else 99} in the published "
                         "order); classes= is for folder: specs, e.g. folder:ROOT/test with classes=[...]")
    root = Path(root).expanduser()
    folder_name = CIFAR_BINARY[name][0]
    binary = root if root.name == folder_name else root / folder_name
    _, files, _, meta_file, _ = CIFAR_BINARY[name]
    if download and not (root / split).is_dir() and not all((binary / f).is_file() for f in [*files[split], meta_file]):
        _download(name, binary, progress)  # (a folder with this split's batches, e.g. test only, is read as it is)
    if binary.is_dir():
        if kw:  # the binary arrays are read as they are: resize / crop / transform would be silently ignored
            raise ValueError(f"{', '.join(sorted(kw))} apply to the PNG-tree layout only; {binary} holds the binary "
                             f"{name} arrays (32x32), read as they are: resize the images in the model or a transform")
        return _read_binary(binary, name, split)
    if (root / split).is_dir():
        if in_memory and kw.get("transform") is not None:
            raise ValueError("in_memory=True decodes every image once and would freeze the (possibly random) "
                             "transform; use one or the other")
        ds = _read_png_tree(root, split, name, **kw)
        if in_memory:
            from .loading import to_array_dataset

            return to_array_dataset(ds)
        return ds
    hint = (f"; {root} looks like a split folder itself: point at its parent, {root.parent}"
            if root.name in ("train", "test") and (root.parent / split).is_dir() else "")
    raise FileNotFoundError(
        f"no {name} {split} data under {root}{hint}: expected torchvision's layout {root}/{folder_name}/ "
        f"(get_dataset(..., download=True) or `aprkit eval ... --download` fetches it; aprkit train then reads it "
        f"there) or a PNG tree {root}/{split}/<class>/*.png; elsewhere: point at it with '{name}:DIR' (aprkit train: "
        f"--set data.dataset={name}:DIR) or move the default root with $APRKIT_DATA"
    )
