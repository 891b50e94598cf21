"""Tiny-ImageNet (``tiny-imagenet-200``, 200 classes of 64 px images) in its published layout.

The training images lie in class folders, ``ROOT/train/<wnid>/images/<wnid>_<i>.JPEG``, which the ImageFolder reading
takes as they are. The 10,000 validation images do not: they lie in one folder, ``ROOT/val/images/val_<i>.JPEG``,
labelled by ``ROOT/val/val_annotations.txt`` (file name, wnid, box), so ``folder:ROOT/val`` would read them as one
class. :func:`tiny_imagenet` reads both splits with the labels in sorted-wnid order (``ROOT/wnids.txt``'s ids,
sorted), the order of Tiny-ImageNet-C's class folders, and the validation images in Tiny-ImageNet-C's order (by
class, then file name): ``aprkit eval --data tinyimagenet:ROOT --corrupted tinyimagenet-c:C_ROOT`` pairs image for
image. The unlabelled ``ROOT/test`` images are not read (``split="test"`` is the validation set, the test set of
every Tiny-ImageNet-C result).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .folder import IMG_EXTENSIONS, ImageListDataset, scan_image_folder

__all__ = ["tiny_imagenet", "TINY_IMAGENET_LAYOUT"]

TINY_IMAGENET_LAYOUT = ("ROOT/wnids.txt, ROOT/train/<wnid>/images/*.JPEG, ROOT/val/images/*.JPEG and "
                        "ROOT/val/val_annotations.txt (the tiny-imagenet-200 folder as unzipped)")


def _wnids(root: Path) -> list[str]:
    """The 200 class ids, sorted: ``wnids.txt``'s, else the ``train`` class folders'."""
    listed = root / "wnids.txt"
    if listed.is_file():
        ids = [w.strip() for w in listed.read_text(encoding="utf-8").split() if w.strip()]
    elif (root / "train").is_dir():
        ids = [p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith(".")]
    else:
        raise FileNotFoundError(f"{root} holds neither wnids.txt nor train/; expected the Tiny-ImageNet layout "
                                f"{TINY_IMAGENET_LAYOUT}")
    if len(set(ids)) != len(ids) or not ids:
        raise ValueError(f"{listed} lists {len(ids)} class ids, {len(ids) - len(set(ids))} of them twice; expected "
                         "each class once")
    return sorted(ids)


def _val_samples(root: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """``(path, label)`` of the validation images from ``val_annotations.txt``, by class, then file name."""
    listing = root / "val" / "val_annotations.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} is missing; expected the Tiny-ImageNet layout {TINY_IMAGENET_LAYOUT}")
    samples, unknown, missing, seen, twice = [], set(), [], set(), []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{listing} line {n} is {line!r}; expected '<file>\\t<wnid>\\t<box>'")
        name, wnid = parts[0].strip(), parts[1].strip()
        if name in seen:
            twice.append(name)
        seen.add(name)
        if wnid not in index:
            unknown.add(wnid)
            continue
        path = root / "val" / "images" / name
        if not path.is_file():
            missing.append(name)
        samples.append((path, index[wnid]))
    if unknown:
        raise ValueError(f"{listing} labels images with {len(unknown)} class ids that are not among the {len(index)} "
                         f"classes ({', '.join(sorted(unknown)[:3])}); expected the ids of wnids.txt")
    if missing:
        raise FileNotFoundError(f"{len(missing)} images that {listing} lists are missing from {root / 'val' / 'images'}"
                                f" ({', '.join(missing[:3])}); expected every listed image")
    if twice:  # an image counted twice, or under two labels
        raise ValueError(f"{listing} lists {len(twice)} image{'s' if len(twice) > 1 else ''} more than once "
                         f"({', '.join(twice[:3])}); expected each validation image once")
    if not samples:
        raise FileNotFoundError(f"{listing} lists no images; expected the Tiny-ImageNet layout {TINY_IMAGENET_LAYOUT}")
    images = root / "val" / "images"
    unlisted: list[str] = []
    if images.is_dir():
        with os.scandir(images) as entries:
            unlisted = sorted(e.name for e in entries  # images only: a notes file or Thumbs.db is no cut listing
                              if e.name.lower().endswith(IMG_EXTENSIONS) and e.is_file() and not e.name.startswith(".")
                              and e.name not in seen)
    if unlisted:  # a cut annotations file: a clean evaluation would score a subset without a word
        raise ValueError(f"{len(unlisted)} images in {images} are not listed in {listing} ({', '.join(unlisted[:3])}); "
                         "expected an annotation for every validation image (a cut file?)")
    return sorted(samples, key=lambda s: (s[1], s[0].name))


def tiny_imagenet(root: str | Path, split: str = "test", **kw: Any) -> ImageListDataset:
    """Tiny-ImageNet's ``"train"`` split or its labelled validation set (``"test"``, also ``"val"``) from the
    unzipped ``tiny-imagenet-200`` folder ``root``; ``kw`` go to :class:`~aprkit.data.folder.ImageListDataset`
    (``resize``, ``crop``, ``transform``, ``cache``). Labels follow the sorted wnids (``dataset.classes``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Tiny-ImageNet folder {root} does not exist; expected {TINY_IMAGENET_LAYOUT}")
    classes = _wnids(root)
    if split == "train":
        samples, _ = scan_image_folder(root / "train", classes, stacklevel=3)
        return ImageListDataset(samples, classes=classes, **kw)
    if split not in ("test", "val"):
        raise ValueError(f"Tiny-ImageNet split must be 'train' or 'test' (its labelled validation images), got "
                         f"{split!r}")
    return ImageListDataset(_val_samples(root, {c: i for i, c in enumerate(classes)}), classes=classes, **kw)
